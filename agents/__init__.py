"""Agents that act and learn in the MuCode environments.

- policies and backends: :class:`Policy`, :func:`make_policy` (llama.cpp, transformers,
  OpenAI-compatible HTTP, SGLang, a managed vLLM server), the embedded model registry (:func:`resolve_model`);
- rollouts and evaluation: :class:`RolloutConfig`, :func:`run_rollouts`, :func:`evaluate`;
- µCODE (Algorithm 1): :class:`Verifier`, :func:`select_experts`, :func:`relabel`,
  :func:`finetune`, :class:`MuCodeTrainer`; multi-turn Best-of-N (Algorithm 2): :func:`best_of_n`.

Names are imported on first use, so ``import agents`` stays light (no torch until needed).

>>> from agents import make_policy, RolloutConfig, evaluate                   # doctest: +SKIP
>>> report = evaluate(make_policy("llama_cpp", "qwen2.5-coder-0.5b"),
...                   RolloutConfig(env_id="MuCode-HumanEval-v0", limit=20))   # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Policy": "agents.policy", "SamplingParams": "agents.policy", "Generation": "agents.policy",
    "Trajectory": "agents.records", "TurnRecord": "agents.records",
    "make_policy": "agents.backends", "resolve_model": "agents.models",
    "RolloutConfig": "agents.rollout", "run_rollouts": "agents.rollout", "collect_rollouts": "agents.rollout",
    "load_trajectories": "agents.rollout", "evaluate": "agents.evaluate", "EvalReport": "agents.evaluate",
    "VerifierConfig": "agents.verifier", "Verifier": "agents.verifier", "train_verifier": "agents.verifier",
    "ExpertConfig": "agents.expert", "select_experts": "agents.expert", "relabel": "agents.relabel",
    "SFTRunConfig": "agents.sft", "finetune": "agents.sft",
    "MuCodeConfig": "agents.trainer", "MuCodeTrainer": "agents.trainer", "share_stages": "agents.trainer",
    "BoNConfig": "agents.bon", "best_of_n": "agents.bon",
    "export_gguf": "agents.gguf_export", "export_for_llama_cpp": "agents.gguf_export",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'agents' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
