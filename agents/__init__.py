"""Agents that act and learn in the MuCode environments.

Generic machinery at the top level, one concern per module or subpackage:

- policies and backends: :class:`Policy`, :func:`make_policy` (llama.cpp, transformers,
  OpenAI-compatible HTTP, SGLang, a managed vLLM server); models (:mod:`agents.models`: the embedded registry,
  GGUF conversion);
- the episode engine (:func:`play_episodes`) and what runs on it: rollouts
  (:class:`RolloutConfig`, :func:`run_rollouts`), evaluation (:func:`evaluate`) and multi-turn
  Best-of-N (Algorithm 2, :func:`best_of_n`), here or spread over Ray actors
  (:class:`RayEpisodes`, :class:`RayEpisodesConfig`, with :class:`PolicySpec` recipes);
- training utilities (:mod:`agents.training`: :func:`finetune`, launching stages as jobs);
- µCODE (Algorithm 1) in :mod:`agents.mucode`: :class:`Verifier`, :func:`select_experts`,
  :func:`relabel`, :class:`MuCodeTrainer`.

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
    "make_policy": "agents.backends", "PolicySpec": "agents.backends", "resolve_model": "agents.models",
    "hf_checkpoint": "agents.models.convert",
    "EpisodeSpec": "agents.episodes", "EpisodeStats": "agents.episodes", "play_episodes": "agents.episodes",
    "derive_seed": "agents.episodes", "episode_seed": "agents.episodes",
    "RayEpisodes": "agents.ray_episodes", "RayEpisodesConfig": "agents.ray_episodes",
    "RolloutConfig": "agents.rollout", "run_rollouts": "agents.rollout", "collect_rollouts": "agents.rollout",
    "load_trajectories": "agents.rollout", "evaluate": "agents.evaluate", "EvalReport": "agents.evaluate",
    "BoNConfig": "agents.bon", "best_of_n": "agents.bon",
    "SFTRunConfig": "agents.training.sft", "finetune": "agents.training.sft",
    "VerifierConfig": "agents.mucode.verifier", "Verifier": "agents.mucode.verifier",
    "train_verifier": "agents.mucode.verifier", "ExpertConfig": "agents.mucode.expert",
    "select_experts": "agents.mucode.expert", "relabel": "agents.mucode.relabel",
    "MuCodeConfig": "agents.mucode.config", "MuCodeTrainer": "agents.mucode.trainer",
    "share_stages": "agents.mucode.run_dir",
    "export_gguf": "agents.models.gguf_export", "export_for_llama_cpp": "agents.models.gguf_export",
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
