"""Head-to-head benchmark of the agents on the same environments, split, seeds and budget.

:func:`run_bench` evaluates each agent (Instruct, RFT, PPO/GRPO, µCODE and the ablations) in the
paper's settings with the shared multi-turn BoN engine (:func:`baselines.instruct.evaluate_setting`)
and writes, all under ``config.run_dir``:

- ``results/<env_id>/<agent>__<setting>.json``: one evaluation cell (per-problem scores, accuracy
  by turn, the model and verifier used); an existing cell is not re-run (resumable);
- ``table1.md`` / ``table1.csv``: laid out like the paper's Table 1 (method, N, accuracy per
  benchmark), each cell with its 95% interval and sample size, and the paired difference to
  Instruct in the same setting with a paired-bootstrap 95% interval;
- ``ablation.md`` / ``.csv`` (RFT, RFT_LV, µCODE_OV, µCODE_LV, µCODE at BoN N; differences to
  µCODE) and ``selectors.md`` / ``.csv`` (µCODE with random, LV, PT, PT+LV; differences to PT+LV);
- ``turns_<env_id>.png``: accuracy after each turn, one line per agent and multi-turn setting;
- ``report.md``: the tables together, ``config.json``: the run record.

Agents other than Instruct are evaluated from checkpoints (``config.checkpoints``: a generator
directory, or the run directory of :class:`agents.mucode.trainer.MuCodeTrainer` / :class:`baselines.rft.RFTTrainer`
(its ``best.json``) or of :class:`baselines.ppo.PPOTrainer` (its ``checkpoint/``)); with
``config.train`` the missing ones are trained first under ``run_dir/train/<agent>``.

>>> from baselines.bench import BenchConfig, run_bench
>>> run_bench(BenchConfig(run_dir="runs/bench", limit=50, checkpoints={"mucode": "runs/mucode"}))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from baselines.bench.config import (AGENTS, AgentSpec, BenchConfig, CellKey, MissingCheckpointError, cell_path,
                                    episodes_path, plan_cells)
from agents.models.convert import resolve_run
from baselines.bench.render import write_tables
from baselines.instruct import EvalSetting
from mucode_env.atomic import write_json_atomic
from mucode_env.metrics import accuracy_interval

__all__ = ["EvaluateFn", "resolve_agent", "run_bench"]



def _train_agent(name: str, config: BenchConfig, out_dir: Path) -> str:
    """Train ``name`` from the base model under ``out_dir``; returns what :func:`agents.models.convert.resolve_run` takes."""
    env_id = config.env_ids[0]
    if name == "ppo":
        from baselines.ppo import PPOConfig, PPOTrainer

        ppo_cfg = PPOConfig(**{"model": config.base_model, "output_dir": str(out_dir), "env_id": env_id,
                               "data_dir": config.data_dir, "seed": config.seed, "max_turns": config.max_turns,
                               "progress": config.progress, **config.ppo_overrides})
        PPOTrainer(ppo_cfg).train()
        return str(out_dir)
    if name == "grpo":
        from baselines.grpo import GRPOBaseline, GRPOBaselineConfig

        grpo_cfg = GRPOBaselineConfig.from_dict({
            "model": config.base_model, "output_dir": str(out_dir), "env_id": env_id, "data_dir": config.data_dir,
            "seed": config.seed, "max_turns": config.max_turns, "progress": config.progress,
            **config.grpo_overrides})
        GRPOBaseline(grpo_cfg).train()
        return str(out_dir)
    common = dict(run_dir=str(out_dir), env_id=env_id, data_dir=config.data_dir, generator=config.base_model,
                  rollout_backend=config.base_backend, finetuned_backend=config.finetuned_backend, seed=config.seed,
                  backend_kwargs=dict(config.backend_kwargs), progress=config.progress, ray=config.ray)
    if name in ("rft", "rft_lv"):
        from agents.mucode.run_dir import share_stages
        from baselines.rft import RFTConfig, RFTTrainer

        mucode_run = config.train_root / "mucode"
        if config.share_rollouts and (mucode_run / "iter1" / "verifier.done").is_file():
            # the same D_1 as µCODE: RFT then differs from µCODE only in its training set
            share_stages(mucode_run, out_dir)
        RFTTrainer(RFTConfig.load(config.train_preset, rft_variant="lv" if name == "rft_lv" else "paper",
                                  **common)).train()
        return str(out_dir)
    if name in ("mucode", "mucode_ov", "mucode_lv"):
        from agents.mucode.expert import ExpertConfig
        from agents.mucode import MuCodeConfig, MuCodeTrainer

        expert = {"mucode": ExpertConfig(), "mucode_ov": ExpertConfig.oracle_only(),
                  "mucode_lv": ExpertConfig.verifier_only()}[name]
        MuCodeTrainer(MuCodeConfig.load(config.train_preset, expert=expert, **common)).train()
        return str(out_dir)
    raise ValueError(f"agent {name!r} is not trained (it is the base model)")


def resolve_agent(name: str, config: BenchConfig,
                  train_fn: Callable[[str, BenchConfig, Path], str] | None = None) -> AgentSpec:
    """The :class:`AgentSpec` of ``name``: Instruct is the base model; others need a checkpoint
    (or ``config.train``)."""
    if name == "instruct":
        return AgentSpec(name, config.base_model, config.base_backend, config.verifier)
    source = config.checkpoints.get(name)
    if source is None:
        if not config.train:
            raise MissingCheckpointError(f"agent {name!r} needs a checkpoint: pass checkpoints={{'{name}': PATH}} "
                             f"(CLI: --checkpoint {name}=PATH) or set train=True (CLI: --train)")
        source = (train_fn or _train_agent)(name, config, config.train_root / name)
    model, verifier = resolve_run(source, config.verifier)
    if config.finetuned_backend == "llama_cpp" and not model.endswith(".gguf"):
        # llama.cpp needs GGUF: export the checkpoint once (cached beside it), with the base's metadata
        from agents.models.gguf_export import export_for_llama_cpp

        model = str(export_for_llama_cpp(model, config.base_model))
    return AgentSpec(name, model, config.finetuned_backend, verifier)


# ----------------------------------------------------------------------------- evaluation

EvaluateFn = Callable[[AgentSpec, EvalSetting, str, BenchConfig], dict[str, Any]]


class _DefaultEvaluator:
    """Evaluates cells with the shared BoN engine, loading each agent's policy/verifier once."""

    def __init__(self) -> None:
        self._policy_key: tuple[str, str] | None = None
        self._policy: Any = None
        self._verifiers: dict[str, Any] = {}
        self._problem_ids: dict[str, list[str] | None] = {}

    def problem_ids(self, env_id: str, config: BenchConfig) -> list[str] | None:
        if env_id not in self._problem_ids:
            ids: list[str] | None = list(config.problem_ids) if config.problem_ids is not None else None
            if config.limit is not None:
                if ids is None:
                    from mucode_env.datasets import load_problems
                    from mucode_env.registration import ENV_IDS, check_env_id

                    spec = ENV_IDS[check_env_id(env_id)]
                    ids = [p.id for p in load_problems(spec["benchmark"], config.split or spec["split"],
                                                       data_dir=config.data_dir)]
                ids = ids[: config.limit]
            self._problem_ids[env_id] = ids
        return self._problem_ids[env_id]

    def close(self) -> None:
        """Release the loaded policy (a vLLM server stops), e.g. before an agent is trained."""
        close = getattr(self._policy, "close", None)
        if callable(close):
            close()
        self._policy, self._policy_key = None, None

    def __call__(self, spec: AgentSpec, setting: EvalSetting, env_id: str, config: BenchConfig) -> dict[str, Any]:
        from baselines.instruct import evaluate_setting

        if self._policy_key != (spec.model, spec.backend):
            from agents.backends import PolicySpec

            self.close()
            recipe = PolicySpec(spec.backend, spec.model, config.backend_kwargs.get(spec.backend, {}))
            # with Ray every episode actor builds its own replica from the recipe
            self._policy = recipe if config.ray is not None else recipe.build()
            self._policy_key = (spec.model, spec.backend)
        verifier = None
        if setting.needs_verifier and spec.verifier:
            if spec.verifier not in self._verifiers:
                from agents.mucode.verifier import Verifier

                self._verifiers[spec.verifier] = Verifier.load(spec.verifier)
            verifier = self._verifiers[spec.verifier]
        env_kwargs: dict[str, Any] = {}
        if config.split is not None:
            env_kwargs["split"] = config.split
        if config.data_dir is not None:
            env_kwargs["data_dir"] = config.data_dir
        # the cell's finished episodes are saved as they finish: a killed run resumes the cell
        store = episodes_path(config, CellKey(spec.name, setting, env_id))
        res = evaluate_setting(self._policy, env_id, setting, verifier=verifier,
                               problem_ids=self.problem_ids(env_id, config), temperature=config.temperature,
                               max_new_tokens=config.max_new_tokens, repeats=config.repeats, seed=config.seed,
                               policy_name=f"{spec.name}:{spec.model}", progress=config.progress, ray=config.ray,
                               max_live=config.max_live_episodes, store_dir=store, **env_kwargs)
        return {"per_problem": dict(res.per_problem), "accuracy_by_turn": list(res.accuracy_by_turn),
                "selector_used": res.config.get("selector", setting.selector), "stats": dict(res.stats),
                "precision": getattr(self._policy, "precision", None)}


def _finish_cell(key: CellKey, spec: AgentSpec, raw: Mapping[str, Any], config: BenchConfig, seconds: float) -> dict:
    per_problem = {str(k): float(v) for k, v in raw["per_problem"].items()}
    values = list(per_problem.values())
    lo, hi = accuracy_interval(values, n_bootstrap=config.n_bootstrap, seed=config.seed)
    selector_used = raw.get("selector_used", key.setting.selector) if key.setting.n > 1 else "greedy"
    return {
        "agent": key.agent, "label": AGENTS[key.agent], "env_id": key.env_id, "setting": asdict(key.setting),
        "selector_used": selector_used, "n_problems": len(values),
        "accuracy": sum(values) / len(values) if values else 0.0, "ci95": [lo, hi],
        "accuracy_by_turn": list(raw.get("accuracy_by_turn", [])), "per_problem": per_problem,
        "model": spec.model, "backend": spec.backend, "verifier": spec.verifier if key.setting.needs_verifier else None,
        "repeats": config.repeats, "seed": config.seed, "seconds": seconds, "stats": dict(raw.get("stats", {})),
        # what the backend computed in where it says (vLLM: bfloat16 or float32); cells made on
        # different machines are only comparable in the same precision
        "precision": raw.get("precision"),
    }


def _single_turn_sources(cells: list[CellKey]) -> dict[CellKey, CellKey]:
    """Single-turn greedy cells -> the same agent's multi-turn greedy cell on the same benchmark.

    Greedy decoding makes an episode's first turn the same whatever T is (the first prompt does not
    depend on it), so the single-turn cell is read from the multi-turn cell's saved first turns
    instead of being generated again: a quarter of the greedy generation saved, and the two rows
    then differ only by what turns 2..T added, not by the run-to-run noise of batched inference."""
    out = {}
    for key in cells:
        if key.setting.max_turns == 1 and key.setting.n == 1:
            source = next((k for k in cells if k.agent == key.agent and k.env_id == key.env_id
                           and k.setting.n == 1 and k.setting.max_turns > 1), None)
            if source is not None:
                out[key] = source
    return out


def _first_turns(store: Path, source: Mapping[str, Any]) -> dict[str, Any] | None:
    """A single-turn greedy result from the saved episodes of a multi-turn greedy cell: each
    problem's score is its first turn's oracle (averaged over repeats). None if it saved none (a
    cell made before episodes were kept): the single-turn cell is then generated."""
    from agents.episode_store import EpisodeStore

    episodes = EpisodeStore.read(store)
    if not episodes:
        return None
    scores: dict[str, list[float]] = {}
    for traj in episodes:
        scores.setdefault(traj.problem_id, []).append(traj.turns[0].reward if traj.turns else 0.0)
    if set(scores) != set(source["per_problem"]):
        raise RuntimeError(f"{store} holds episodes of {len(scores)} problems, its cell {len(source['per_problem'])}: "
                           "delete the multi-turn cell to run it again")
    per_problem = {pid: sum(v) / len(v) for pid, v in scores.items()}
    return {"per_problem": per_problem, "accuracy_by_turn": [sum(per_problem.values()) / len(per_problem)],
            "selector_used": "greedy", "precision": source.get("precision"),
            "stats": {"derived_from": source["setting"]["name"], "episodes": len(episodes)}}


def run_bench(config: BenchConfig, *, evaluate_fn: EvaluateFn | None = None,
              train_fn: Callable[[str, BenchConfig, Path], str] | None = None) -> dict[str, Any]:
    """Evaluate every planned cell (skipping finished ones) and write the tables and plots.

    Args:
        config: the run.
        evaluate_fn: ``(spec, setting, env_id, config) -> {"per_problem": {id: score},
            "accuracy_by_turn": [...], "selector_used": str, "stats": {...}}``; default: the
            shared BoN engine with ``agents.backends`` policies.
        train_fn: ``(agent, config, out_dir) -> checkpoint`` for ``config.train``.

    Returns:
        ``{"cells": [cell dicts], "files": {name: path}}``.
    """
    from tqdm.auto import tqdm

    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "config.json", asdict(config), default=str)
    evaluate = evaluate_fn or _DefaultEvaluator()
    cells = plan_cells(config)
    if not config.train:  # fail before hours of evaluation, not in the middle
        missing = sorted({k.agent for k in cells if k.agent != "instruct" and k.agent not in config.checkpoints
                          and not cell_path(run_dir, k).is_file()})
        if missing:
            raise MissingCheckpointError(
                f"agent(s) {', '.join(missing)} need checkpoints: pass checkpoints={{agent: PATH}} "
                f"(CLI: --checkpoint AGENT=PATH, a generator or a training run directory) or set train=True (--train)")
    specs: dict[str, AgentSpec] = {}
    sources = _single_turn_sources(cells) if evaluate_fn is None else {}
    # a single-turn greedy cell comes after the multi-turn greedy cell it is read from
    todo = sorted(cells, key=lambda k: (cells.index(sources[k]) + 0.5) if k in sources else cells.index(k))
    done: dict[CellKey, dict] = {}
    bar = tqdm(todo, desc="bench", unit="cell", disable=not config.progress)
    for key in bar:
        path = cell_path(run_dir, key)
        bar.set_postfix_str(f"{key.agent} {key.setting.name} {key.env_id}")
        if path.is_file():
            done[key] = json.loads(path.read_text())
            continue
        if key.agent not in specs:
            if hasattr(evaluate, "close"):
                evaluate.close()  # one heavy thing at a time: no generation server while an agent trains
            specs[key.agent] = resolve_agent(key.agent, config, train_fn)
        t0 = time.perf_counter()
        raw = _first_turns(episodes_path(config, sources[key]), done[sources[key]]) if key in sources else None
        if raw is None:
            raw = evaluate(specs[key.agent], key.setting, key.env_id, config)
        cell = _finish_cell(key, specs[key.agent], raw, config, time.perf_counter() - t0)
        write_json_atomic(path, cell, default=str)
        done[key] = cell
    results = [done[k] for k in cells]
    bar.close()
    if hasattr(evaluate, "close"):
        evaluate.close()
    files = write_tables(results, config)
    return {"cells": results, "files": files}


