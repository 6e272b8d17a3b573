"""What a benchmark run evaluates: the agents, the settings, the cells (one evaluation each) and
where each cell's result lives under the run directory."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agents.ray_episodes import RayEpisodesConfig
from baselines.instruct import EvalSetting, paper_settings
from mucode_env.errors import MuCodeError

__all__ = ["ABLATION_AGENTS", "AGENTS", "AgentSpec", "BenchConfig", "CellKey", "MissingCheckpointError",
           "RESULTS_DIR", "SELECTOR_LABELS", "SELECTOR_ORDER", "cell_path", "episodes_path", "plan_cells"]

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
        train_dir: where trained agents' runs go (default ``run_dir/train``): a results directory
            kept in version control can hold the cells while the checkpoints live elsewhere.
        share_rollouts: RFT starts from µCODE's iteration-1 rollouts and verifier
            (:func:`agents.mucode.run_dir.share_stages`) when µCODE was trained here first, so
            the two differ only in their training sets.
        train: train agents that have no checkpoint (``train_preset``; PPO with ``ppo_overrides``,
            GRPO (TRL's ``GRPOTrainer``, :mod:`baselines.grpo`) with ``grpo_overrides``).
        n_bootstrap: resamples of the paired bootstrap.
        backend_kwargs: backend name -> extra ``make_policy`` kwargs.
        progress: tqdm bars.
        episodes_dir: where each cell's finished episodes are saved while it runs (default
            ``run_dir/episodes``), so that a killed run resumes its unfinished cell where it
            stopped (:func:`agents.bon.best_of_n`'s ``store_dir``); a finished cell's episodes stay
            there (the texts behind its scores).
        max_live_episodes: episodes in flight per cell (None: all at once, in lock-step; a bound
            saves episodes as they finish). Results do not depend on it for policies that take
            per-episode seeds (every shipped backend).
        ray: play the evaluation episodes (and, with ``train``, the µCODE/RFT rollout and
            validation stages) on Ray actors (:class:`agents.ray_episodes.RayEpisodesConfig`):
            each actor builds its replica of the agent's generator and loads its verifier from
            the same paths, so they must be on a file system every node sees.
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
    train_dir: str | None = None
    share_rollouts: bool = True
    train_preset: str = "cpu"
    ppo_overrides: Mapping[str, Any] = field(default_factory=dict)
    grpo_overrides: Mapping[str, Any] = field(default_factory=dict)
    n_bootstrap: int = 2000
    backend_kwargs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    progress: bool = True
    episodes_dir: str | None = None
    max_live_episodes: int | None = None
    ray: RayEpisodesConfig | None = None

    def __post_init__(self) -> None:
        if isinstance(self.ray, Mapping):
            object.__setattr__(self, "ray", RayEpisodesConfig.from_dict(self.ray))
        if self.max_live_episodes is not None and self.max_live_episodes < 1:
            raise ValueError(f"max_live_episodes must be >= 1 or None, got {self.max_live_episodes}")
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
    def train_root(self) -> Path:
        """The directory of trained agents' runs."""
        return Path(self.train_dir) if self.train_dir is not None else Path(self.run_dir) / "train"

    @property
    def episodes_root(self) -> Path:
        """The directory of the cells' saved episodes."""
        return Path(self.episodes_dir) if self.episodes_dir is not None else Path(self.run_dir) / "episodes"

    @property
    def settings(self) -> tuple[EvalSetting, ...]:
        return paper_settings(self.max_turns, self.bon_n, self.selector)

    @property
    def bon_setting(self) -> EvalSetting:
        return self.settings[-1]




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


def episodes_path(config: BenchConfig, key: CellKey) -> Path:
    """Where ``key``'s finished episodes are saved while it runs (and kept after)."""
    return config.episodes_root / key.env_id / key.slug


