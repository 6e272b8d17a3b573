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
directory, or the run directory of :class:`agents.trainer.MuCodeTrainer` / :class:`baselines.rft.RFTTrainer`
(its ``best.json``) or of :class:`baselines.ppo.PPOTrainer` (its ``checkpoint/``)); with
``config.train`` the missing ones are trained first under ``run_dir/train/<agent>``.

>>> from baselines.bench import BenchConfig, run_bench
>>> run_bench(BenchConfig(run_dir="runs/bench", limit=50, checkpoints={"mucode": "runs/mucode"}))  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from baselines.instruct import EvalSetting, paper_settings
from mucode_env.atomic import write_text_atomic
from mucode_env.errors import MuCodeError
from mucode_env.metrics import wilson_interval

__all__ = ["MissingCheckpointError", "AGENTS", "ABLATION_AGENTS", "SELECTOR_ORDER", "AgentSpec", "BenchConfig",
           "CellKey", "run_bench",
           "write_tables", "paired_bootstrap", "accuracy_interval", "plan_cells"]

logger = logging.getLogger(__name__)

# agent name -> label in the tables
AGENTS: dict[str, str] = {
    "instruct": "Instruct",
    "rft": "RFT",
    "rft_lv": "RFT_LV",
    "ppo": "PPO (RLEF)",
    "grpo": "GRPO",
    "mucode": "µCODE",
    "mucode_ov": "µCODE_OV",
    "mucode_lv": "µCODE_LV",
}
ABLATION_AGENTS = ("rft", "rft_lv", "mucode_ov", "mucode_lv", "mucode")
SELECTOR_ORDER = ("random", "lv", "pt", "pt+lv")
SELECTOR_LABELS = {"random": "random", "lv": "LV", "pt": "PT", "pt+lv": "PT+LV"}
RESULTS_DIR = "results"


class MissingCheckpointError(MuCodeError, ValueError):
    """A trained agent was asked for without a checkpoint (and without ``train=True``)."""


@dataclass(frozen=True)
class AgentSpec:
    """What one agent evaluates with: its generator, that generator's backend and its verifier."""

    name: str
    model: str
    backend: str
    verifier: str | None = None


@dataclass(frozen=True)
class CellKey:
    """One evaluation: an agent in a setting on an environment."""

    agent: str
    setting: EvalSetting
    env_id: str

    @property
    def slug(self) -> str:
        s = self.setting
        sel = "greedy" if s.n == 1 else s.selector.replace("+", "")
        return f"{self.agent}__T{s.max_turns}_N{s.n}_{sel}"


@dataclass(frozen=True)
class BenchConfig:
    """A benchmark run. ``asdict`` is written to ``run_dir/config.json``.

    Attributes:
        run_dir: every artifact goes here.
        env_ids: environments (one accuracy column each in Table 1).
        agents: agents of Table 1 (names of :data:`AGENTS`).
        split: evaluation split (None: each environment's default, e.g. MBPP test).
        limit / problem_ids: evaluate the first ``limit`` problems / these problems only.
        data_dir: offline dataset directory.
        max_turns: T of the multi-turn settings; bon_n: N of the BoN rows; selector: BoN's selector.
        temperature / max_new_tokens / repeats / seed: the shared sampling budget (N = 1: greedy).
        base_model / base_backend: Instruct's model (and the base every trained agent starts from).
        finetuned_backend: backend of trained checkpoints (HF directories): ``"transformers"``, or
            ``"llama_cpp"`` (about 2x faster on CPU; checkpoints are exported to q8_0 GGUF first).
        checkpoints: agent -> generator directory or training run directory.
        verifier: the verifier of agents without their own (Instruct, PPO, GRPO); None: their
            PT+LV/LV cells fall back to PT (recorded in the cell and footnoted in the tables).
        ablations: also evaluate the ablation agents at BoN N and write ``ablation.md``.
        selectors: also evaluate µCODE with every selector and write ``selectors.md``.
        train: train agents that have no checkpoint (``train_preset``; PPO with ``ppo_overrides``,
            GRPO (TRL's ``GRPOTrainer``, :mod:`baselines.grpo`) with ``grpo_overrides``).
        n_bootstrap: resamples of the paired bootstrap.
        backend_kwargs: backend name -> extra ``make_policy`` kwargs.
        progress: tqdm bars.
    """

    run_dir: str
    env_ids: tuple[str, ...] = ("MuCode-MBPP-v0",)
    agents: tuple[str, ...] = ("instruct", "rft", "ppo", "mucode")
    split: str | None = None
    limit: int | None = None
    problem_ids: tuple[str, ...] | None = None
    data_dir: str | None = None
    max_turns: int = 3
    bon_n: int = 5
    selector: str = "pt+lv"
    temperature: float = 0.7
    max_new_tokens: int = 1000
    repeats: int = 1
    seed: int = 0
    base_model: str = "qwen2.5-coder-0.5b"
    base_backend: str = "llama_cpp"
    finetuned_backend: str = "transformers"
    checkpoints: Mapping[str, str] = field(default_factory=dict)
    verifier: str | None = None
    ablations: bool = False
    selectors: bool = False
    train: bool = False
    train_preset: str = "cpu"
    ppo_overrides: Mapping[str, Any] = field(default_factory=dict)
    grpo_overrides: Mapping[str, Any] = field(default_factory=dict)
    n_bootstrap: int = 2000
    backend_kwargs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("env_ids", "agents"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = tuple(v.strip() for v in value.split(",") if v.strip())
            object.__setattr__(self, name, tuple(value))
        if not self.env_ids:
            raise ValueError("env_ids is empty")
        unknown = [a for a in self.agents + tuple(self.checkpoints) if a not in AGENTS]
        if unknown:
            from mucode_env.errors import did_you_mean

            raise ValueError(f"unknown agent {unknown[0]!r}; choose from {', '.join(AGENTS)}."
                             f"{did_you_mean(unknown[0], AGENTS)}")
        if not self.agents and not self.ablations and not self.selectors:
            raise ValueError("nothing to run: agents is empty and ablations/selectors are off")
        if self.problem_ids is not None:
            object.__setattr__(self, "problem_ids", tuple(self.problem_ids))
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1 or None, got {self.limit}")
        if self.max_turns < 1 or self.bon_n < 1 or self.repeats < 1 or self.n_bootstrap < 100:
            raise ValueError("max_turns, bon_n and repeats must be >= 1 and n_bootstrap >= 100")
        object.__setattr__(self, "checkpoints", dict(self.checkpoints))
        object.__setattr__(self, "ppo_overrides", dict(self.ppo_overrides))
        object.__setattr__(self, "grpo_overrides", dict(self.grpo_overrides))
        object.__setattr__(self, "backend_kwargs", {k: dict(v) for k, v in self.backend_kwargs.items()})

    @property
    def settings(self) -> tuple[EvalSetting, ...]:
        return paper_settings(self.max_turns, self.bon_n, self.selector)

    @property
    def bon_setting(self) -> EvalSetting:
        return self.settings[-1]


# ----------------------------------------------------------------------------- statistics


def accuracy_interval(values: Sequence[float], *, n_bootstrap: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% interval of a mean accuracy over problems: Wilson for 0/1 scores, else a percentile
    bootstrap over problems (scores averaged over repeats)."""
    v = np.asarray(list(values), dtype=float)
    if v.size == 0:
        return (0.0, 1.0)
    if np.all((v == 0) | (v == 1)):
        return wilson_interval(int(v.sum()), int(v.size))
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_bootstrap, v.size))].mean(axis=1)
    return (float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975)))


def paired_bootstrap(a: Mapping[str, float], b: Mapping[str, float], *, n_bootstrap: int = 2000,
                     seed: int = 0) -> dict[str, float]:
    """Mean difference a - b over the problems both evaluated, with a paired-bootstrap 95% CI.

    Returns:
        ``{"diff", "lo", "hi", "n", "p_le_0"}``: ``p_le_0`` is the bootstrap share of resamples
        with a difference <= 0 (a one-sided p-value for "a beats b").
    """
    common = sorted(set(a) & set(b))
    if not common:
        return {"diff": float("nan"), "lo": float("nan"), "hi": float("nan"), "n": 0, "p_le_0": float("nan")}
    d = np.array([a[k] - b[k] for k in common], dtype=float)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(n_bootstrap, d.size))].mean(axis=1)
    return {"diff": float(d.mean()), "lo": float(np.quantile(means, 0.025)), "hi": float(np.quantile(means, 0.975)),
            "n": int(d.size), "p_le_0": float((means <= 0).mean())}


# ----------------------------------------------------------------------------- planning


def plan_cells(config: BenchConfig) -> list[CellKey]:
    """Every (agent, setting, env) to evaluate, without duplicates, grouped by agent."""
    wanted: list[tuple[str, EvalSetting]] = [(a, s) for a in config.agents for s in config.settings]
    bon = config.bon_setting
    if config.ablations:
        wanted += [(a, bon) for a in ABLATION_AGENTS]
    if config.selectors:
        wanted += [("mucode", replace(bon, name=f"{bon.name}[{SELECTOR_LABELS[s]}]", selector=s))
                   for s in SELECTOR_ORDER]
    cells: list[CellKey] = []
    seen: set[tuple[str, str]] = set()
    order = {a: i for i, a in enumerate(dict.fromkeys(a for a, _ in wanted))}
    for agent, setting in sorted(wanted, key=lambda x: order[x[0]]):
        for env_id in config.env_ids:
            key = CellKey(agent, setting, env_id)
            if (key.slug, env_id) not in seen:
                seen.add((key.slug, env_id))
                cells.append(key)
    return cells


def cell_path(run_dir: str | os.PathLike, key: CellKey) -> Path:
    return Path(run_dir) / RESULTS_DIR / key.env_id / f"{key.slug}.json"


# ----------------------------------------------------------------------------- agents


def resolve_checkpoint(path: str | os.PathLike, default_verifier: str | None) -> tuple[str, str | None]:
    """(generator, verifier) of a checkpoint argument: a training run directory or a generator."""
    p = Path(path)
    best = p / "best.json"
    if best.is_file():  # µCODE / RFT run: the selected generator and its own verifier
        rec = json.loads(best.read_text())
        return str(rec["generator"]), rec.get("verifier") or default_verifier
    if (p / "checkpoint" / "config.json").is_file():  # PPO / GRPO run
        return str(p / "checkpoint"), default_verifier
    return str(p), default_verifier


def _train_agent(name: str, config: BenchConfig, out_dir: Path) -> str:
    """Train ``name`` from the base model under ``out_dir``; returns what resolve_checkpoint takes."""
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
                  backend_kwargs=dict(config.backend_kwargs), progress=config.progress)
    if name in ("rft", "rft_lv"):
        from baselines.rft import RFTConfig, RFTTrainer

        RFTTrainer(RFTConfig.load(config.train_preset, rft_variant="lv" if name == "rft_lv" else "paper",
                                  **common)).train()
        return str(out_dir)
    if name in ("mucode", "mucode_ov", "mucode_lv"):
        from agents.expert import ExpertConfig
        from agents.trainer import MuCodeConfig, MuCodeTrainer

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
        source = (train_fn or _train_agent)(name, config, Path(config.run_dir) / "train" / name)
    model, verifier = resolve_checkpoint(source, config.verifier)
    if config.finetuned_backend == "llama_cpp" and not model.endswith(".gguf"):
        # llama.cpp needs GGUF: export the checkpoint once (cached beside it), with the base's metadata
        from agents.gguf_export import export_for_llama_cpp

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

    def __call__(self, spec: AgentSpec, setting: EvalSetting, env_id: str, config: BenchConfig) -> dict[str, Any]:
        from baselines.instruct import evaluate_setting

        if self._policy_key != (spec.model, spec.backend):
            from agents.backends import make_policy

            self._policy = None
            self._policy = make_policy(spec.backend, spec.model, **config.backend_kwargs.get(spec.backend, {}))
            self._policy_key = (spec.model, spec.backend)
        verifier = None
        if setting.needs_verifier and spec.verifier:
            if spec.verifier not in self._verifiers:
                from agents.verifier import Verifier

                self._verifiers[spec.verifier] = Verifier.load(spec.verifier)
            verifier = self._verifiers[spec.verifier]
        env_kwargs: dict[str, Any] = {}
        if config.split is not None:
            env_kwargs["split"] = config.split
        if config.data_dir is not None:
            env_kwargs["data_dir"] = config.data_dir
        res = evaluate_setting(self._policy, env_id, setting, verifier=verifier,
                               problem_ids=self.problem_ids(env_id, config), temperature=config.temperature,
                               max_new_tokens=config.max_new_tokens, repeats=config.repeats, seed=config.seed,
                               policy_name=f"{spec.name}:{spec.model}", progress=config.progress, **env_kwargs)
        return {"per_problem": dict(res.per_problem), "accuracy_by_turn": list(res.accuracy_by_turn),
                "selector_used": res.config.get("selector", setting.selector), "stats": dict(res.stats)}


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
    }


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
    write_text_atomic(run_dir / "config.json", json.dumps(asdict(config), indent=2, sort_keys=True, default=str))
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
    results = []
    bar = tqdm(cells, desc="bench", unit="cell", disable=not config.progress)
    for key in bar:
        path = cell_path(run_dir, key)
        bar.set_postfix_str(f"{key.agent} {key.setting.name} {key.env_id}")
        if path.is_file():
            results.append(json.loads(path.read_text()))
            continue
        if key.agent not in specs:
            specs[key.agent] = resolve_agent(key.agent, config, train_fn)
        t0 = time.perf_counter()
        raw = evaluate(specs[key.agent], key.setting, key.env_id, config)
        cell = _finish_cell(key, specs[key.agent], raw, config, time.perf_counter() - t0)
        write_text_atomic(path, json.dumps(cell, indent=2, sort_keys=True, default=str))
        results.append(cell)
    bar.close()
    files = write_tables(results, config)
    return {"cells": results, "files": files}


# ----------------------------------------------------------------------------- tables


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _fmt_cell(cell: Mapping[str, Any]) -> str:
    lo, hi = cell["ci95"]
    mark = "†" if cell["setting"]["n"] > 1 and cell["selector_used"] != cell["setting"]["selector"] else ""
    return f"{_pct(cell['accuracy'])}{mark} [{_pct(lo)}, {_pct(hi)}] (n={cell['n_problems']})"


def _fmt_diff(d: Mapping[str, float]) -> str:
    if not d or d["n"] == 0:
        return "–"
    return f"{100 * d['diff']:+.1f} [{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}] (n={d['n']})"


def _index(cells: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str, str], Mapping[str, Any]]:
    out = {}
    for c in cells:
        s = c["setting"]
        key = CellKey(c["agent"], EvalSetting(**s), c["env_id"])
        out[(c["agent"], key.slug.split("__", 1)[1], c["env_id"])] = c
    return out


def _slug(setting: EvalSetting) -> str:
    return CellKey("x", setting, "").slug.split("__", 1)[1]


def _table(rows: list[dict[str, Any]], env_ids: Sequence[str], ref_label: str) -> tuple[str, list[dict[str, Any]]]:
    """Markdown and CSV records of rows ``{"method", "N", "cells": {env: cell}, "diffs": {env: diff}}``."""
    header = ["method", "N"]
    for env in env_ids:
        header += [env, f"Δ vs {ref_label} ({env})"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    records = []
    for row in rows:
        parts = [row["method"], str(row["N"])]
        for env in env_ids:
            cell = row["cells"].get(env)
            diff = row["diffs"].get(env)
            parts += [_fmt_cell(cell) if cell else "–", _fmt_diff(diff) if diff else "–"]
            if cell:
                records.append({
                    "method": row["method"], "agent": cell["agent"], "setting": cell["setting"]["name"],
                    "N": cell["setting"]["n"], "T": cell["setting"]["max_turns"], "selector": cell["selector_used"],
                    "env_id": env, "n_problems": cell["n_problems"], "accuracy": cell["accuracy"],
                    "ci_lo": cell["ci95"][0], "ci_hi": cell["ci95"][1], "reference": ref_label,
                    "diff": diff["diff"] if diff else "", "diff_lo": diff["lo"] if diff else "",
                    "diff_hi": diff["hi"] if diff else "", "diff_n": diff["n"] if diff else "",
                })
        lines.append("| " + " | ".join(parts) + " |")
    return "\n".join(lines) + "\n", records


def _csv(records: list[dict[str, Any]]) -> str:
    cols = ["method", "agent", "setting", "N", "T", "selector", "env_id", "n_problems", "accuracy", "ci_lo", "ci_hi",
            "reference", "diff", "diff_lo", "diff_hi", "diff_n"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    w.writerows(records)
    return buf.getvalue()


def write_tables(cells: Sequence[Mapping[str, Any]], config: BenchConfig) -> dict[str, str]:
    """Write Table 1, the ablation and selector tables (Markdown + CSV), the per-turn plots and
    ``report.md`` from evaluated cells. Returns ``{artifact name: path}``."""
    run_dir = Path(config.run_dir)
    idx = _index(cells)
    boot = dict(n_bootstrap=config.n_bootstrap, seed=config.seed)
    env_ids = list(config.env_ids)
    files: dict[str, str] = {}
    sections: list[str] = []

    def diff(a, b):
        return paired_bootstrap(a["per_problem"], b["per_problem"], **boot) if a and b else None

    # Table 1: single-turn rows first, then each agent's multi-turn and BoN rows (the paper's order).
    settings = config.settings
    order = [(settings[0], a) for a in config.agents] + [(s, a) for a in config.agents for s in settings[1:]]
    rows = []
    for setting, agent in order:
        cells_by_env = {e: idx.get((agent, _slug(setting), e)) for e in env_ids}
        if not any(cells_by_env.values()):
            continue
        refs = {e: idx.get(("instruct", _slug(setting), e)) for e in env_ids}
        method = f"{setting.name} {AGENTS[agent]}"
        rows.append({"method": method, "N": setting.n, "cells": {e: c for e, c in cells_by_env.items() if c},
                     "diffs": {e: diff(cells_by_env[e], refs[e]) for e in env_ids
                               if agent != "instruct" and cells_by_env[e] and refs[e]}})
    tables = {"table1": ("Table 1: accuracy (%, private tests)", rows, "Instruct")}

    bon = config.bon_setting
    if config.ablations:
        rows = []
        for agent in ABLATION_AGENTS:
            cells_by_env = {e: idx.get((agent, _slug(bon), e)) for e in env_ids}
            refs = {e: idx.get(("mucode", _slug(bon), e)) for e in env_ids}
            if any(cells_by_env.values()):
                rows.append({"method": AGENTS[agent], "N": bon.n, "cells": {e: c for e, c in cells_by_env.items() if c},
                             "diffs": {e: diff(cells_by_env[e], refs[e]) for e in env_ids
                                       if agent != "mucode" and cells_by_env[e] and refs[e]}})
        tables["ablation"] = (f"Ablation: training data (BoN N={bon.n}, {bon.selector.upper()})", rows, "µCODE")
    if config.selectors:
        rows = []
        ref_slug = _slug(replace(bon, selector="pt+lv"))
        for sel in SELECTOR_ORDER:
            slug = _slug(replace(bon, selector=sel))
            cells_by_env = {e: idx.get(("mucode", slug, e)) for e in env_ids}
            if any(cells_by_env.values()):
                rows.append({"method": SELECTOR_LABELS[sel], "N": bon.n,
                             "cells": {e: c for e, c in cells_by_env.items() if c},
                             "diffs": {e: diff(cells_by_env[e], idx.get(("mucode", ref_slug, e))) for e in env_ids
                                       if sel != "pt+lv" and cells_by_env[e] and idx.get(("mucode", ref_slug, e))}})
        tables["selectors"] = (f"Selectors: µCODE with BoN N={bon.n}", rows, "PT+LV")

    for name, (title, rows, ref) in tables.items():
        md, records = _table(rows, env_ids, ref)
        write_text_atomic(run_dir / f"{name}.md", f"### {title}\n\n{md}")
        write_text_atomic(run_dir / f"{name}.csv", _csv(records))
        files[f"{name}.md"] = str(run_dir / f"{name}.md")
        files[f"{name}.csv"] = str(run_dir / f"{name}.csv")
        sections.append(f"### {title}\n\n{md}")

    for env in env_ids:
        png = _plot_turns([c for c in cells if c["env_id"] == env], env, run_dir / f"turns_{env}.png")
        if png is not None:
            files[f"turns_{env}.png"] = str(png)
            sections.append(f"![accuracy by turn, {env}](turns_{env}.png)\n")

    notes = [
        "Cells: accuracy % [95% interval] (n = problems). Intervals: Wilson for 0/1 scores, percentile bootstrap "
        "over problems when scores average several repeats.",
        f"Δ: mean paired difference in percentage points over the problems both rows evaluated, with a "
        f"paired-bootstrap 95% interval ({config.n_bootstrap} resamples, seed {config.seed}).",
        f"N = 1 rows decode greedily; N > 1 rows sample at temperature {config.temperature}; "
        f"{config.max_new_tokens} new tokens per turn; {config.repeats} repeat(s) per problem.",
    ]
    if any(c["setting"]["n"] > 1 and c["selector_used"] != c["setting"]["selector"] for c in cells):
        notes.append("†: no verifier was available for this agent, so the PT selector replaced PT+LV/LV.")
    notes_md = "\n".join(f"- {n}" for n in notes)
    report = "# Benchmark report\n\n" + "\n".join(sections) + "\n## Notes\n\n" + notes_md + "\n"
    write_text_atomic(run_dir / "report.md", report)
    files["report.md"] = str(run_dir / "report.md")
    return files


def _plot_turns(cells: Sequence[Mapping[str, Any]], env_id: str, path: Path) -> Path | None:
    multi = [c for c in cells if c["setting"]["max_turns"] > 1 and c["accuracy_by_turn"]]
    if not multi:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed: no per-turn plot")
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for c in multi:
        turns = c["accuracy_by_turn"]
        style = "o-" if c["setting"]["n"] == 1 else "s--"
        ax.plot(range(1, len(turns) + 1), [100 * t for t in turns], style,
                label=f"{c['label']} {c['setting']['name']} (N={c['setting']['n']})")
    ax.set_xlabel("turn")
    ax.set_ylabel("accuracy (%)")
    ax.set_xticks(range(1, max(len(c["accuracy_by_turn"]) for c in multi) + 1))
    ax.set_title(f"accuracy by turn, {env_id} (n={max(c['n_problems'] for c in multi)})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path
