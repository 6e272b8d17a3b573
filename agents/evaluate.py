"""Evaluation of a policy in a MuCode environment: accuracy by turn, turns-to-solve, pass@k.

Library first: :func:`evaluate` rolls the policy out (resumable, see :mod:`agents.rollout`) and
:func:`summarize` turns trajectories into an :class:`EvalReport`, which renders a rich table,
writes JSON and plots accuracy by turn. ``mucode eval`` (:mod:`mucode_cli.eval`) is a thin caller.

Accuracy after turn t is the oracle (public and private tests) of the code the episode holds after
turn t: an episode that stopped earlier keeps its last answer. With n samples per problem it is
the mean over all episodes (the unbiased pass@1). pass@k uses each problem's final answers.

>>> from agents.evaluate import summarize
>>> report = summarize(trajectories, max_turns=3)  # doctest: +SKIP
>>> report.accuracy_by_turn  # doctest: +SKIP
[0.25, 0.3, 0.35]
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agents.policy import Policy
from agents.records import Trajectory
from agents.episodes import EpisodeStats
from agents.rollout import RolloutConfig, run_rollouts
from mucode_env.atomic import save_figure_atomic, write_json_atomic
from mucode_env.metrics import accuracy_by_turn, pass_at_k, turns_to_solve

__all__ = ["EvalReport", "evaluate", "summarize"]


@dataclass
class EvalReport:
    """The result of an evaluation.

    Attributes:
        env_id, split, policy_name: what was evaluated.
        max_turns: T.
        n_problems: problems evaluated; ``n_samples``: episodes per problem.
        accuracy_by_turn: accuracy after turn 1..T (``accuracy_by_turn[-1]`` is the final accuracy).
        solved_at_turn: number of episodes first correct at turn t (t = 1..T) and staying so.
        turns_to_solve: mean turns used by the episodes that end correct (None if none do).
        mean_turns: mean turns used by all episodes.
        public_pass_by_turn: fraction of episodes whose code passes the public tests after turn t.
        pass_at_k: unbiased pass@k of the final answers, for k = 1, 2, 5, 10, ... <= n.
        per_problem: problem id -> number of episodes that end correct.
        stats: throughput of the run (new episodes only).
    """

    env_id: str
    split: str | None
    policy_name: str
    max_turns: int
    n_problems: int
    n_samples: int
    accuracy_by_turn: list[float]
    solved_at_turn: list[int]
    turns_to_solve: float | None
    mean_turns: float
    public_pass_by_turn: list[float]
    pass_at_k: dict[str, float] = field(default_factory=dict)
    per_problem: dict[str, int] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def n_episodes(self) -> int:
        return self.n_problems * self.n_samples

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write_json(self, path: str | os.PathLike) -> Path:
        """Write the report as JSON (atomically)."""
        return write_json_atomic(path, self.to_dict())

    def table(self):
        """A ``rich.table.Table``: one row per turn, then turns-to-solve and pass@k."""
        from rich.table import Table

        title = (f"{self.env_id} ({self.split or 'default split'}), {self.policy_name}: "
                 f"{self.n_problems} problems x {self.n_samples} samples, T={self.max_turns}")
        table = Table(title=title)
        table.add_column("metric")
        table.add_column("value", justify="right")
        table.add_column("episodes", justify="right")
        for t, acc in enumerate(self.accuracy_by_turn, 1):
            correct = round(acc * self.n_episodes)
            table.add_row(f"accuracy after turn {t}", f"{100 * acc:.1f}%", f"{correct}/{self.n_episodes}")
        for t, pub in enumerate(self.public_pass_by_turn, 1):
            table.add_row(f"public tests pass after turn {t}", f"{100 * pub:.1f}%", "")
        solved = sum(self.solved_at_turn)
        table.add_row("turns to solve (solved episodes)",
                      "-" if self.turns_to_solve is None else f"{self.turns_to_solve:.2f}", f"{solved}")
        table.add_row("mean turns (all episodes)", f"{self.mean_turns:.2f}", f"{self.n_episodes}")
        for k, value in self.pass_at_k.items():
            table.add_row(f"pass@{k} (unbiased, final turn)", f"{100 * value:.1f}%", "")
        if self.stats.get("episodes"):
            table.add_row("generation tokens/s", f"{self.stats.get('tokens_per_s', 0.0):.1f}", "")
            table.add_row("sandbox executions/s", f"{self.stats.get('executions_per_s', 0.0):.1f}", "")
        return table

    def plot(self, path: str | os.PathLike) -> Path:
        """Save a PNG of accuracy (and public-test pass rate) by turn."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        turns = list(range(1, self.max_turns + 1))
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot(turns, [100 * a for a in self.accuracy_by_turn], marker="o", label="accuracy (public + private tests)")
        ax.plot(turns, [100 * a for a in self.public_pass_by_turn], marker="s", linestyle="--",
                label="public tests pass")
        ax.set_xticks(turns)
        ax.set_xlabel("turn")
        ax.set_ylabel("%")
        ax.set_ylim(0, 100)
        ax.set_title(f"{self.env_id}: {self.policy_name}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        save_figure_atomic(fig, path, dpi=120)
        plt.close(fig)
        return path


def summarize(
    trajectories: Sequence[Trajectory],
    max_turns: int,
    *,
    env_id: str | None = None,
    split: str | None = None,
    policy_name: str | None = None,
    stats: EpisodeStats | dict | None = None,
) -> EvalReport:
    """Compute the metrics of ``trajectories`` (all problems must have the same number of samples).

    Raises:
        ValueError: no trajectories, an episode longer than ``max_turns``, or unequal samples per problem.
    """
    if not trajectories:
        raise ValueError("no trajectories to summarize")
    if any(len(t.turns) > max_turns or not t.turns for t in trajectories):
        raise ValueError(f"every trajectory needs 1..{max_turns} turns")
    rewards = [[turn.reward for turn in t.turns] for t in trajectories]
    by_problem: dict[str, list[Trajectory]] = defaultdict(list)
    for t in trajectories:
        by_problem[t.problem_id].append(t)
    sizes = {len(v) for v in by_problem.values()}
    if len(sizes) != 1:
        raise ValueError(f"problems have different numbers of samples: {sorted(sizes)}")
    n = sizes.pop()
    solved_at = [0] * max_turns
    for r in rewards:
        if r[-1] == 1.0:
            first = len(r)
            while first > 1 and r[first - 2] == 1.0:
                first -= 1
            solved_at[first - 1] += 1
    public = [[float(turn.public_passed) for turn in t.turns] for t in trajectories]
    per_problem = {pid: sum(t.success for t in trajs) for pid, trajs in by_problem.items()}
    ks = [k for k in (1, 2, 5, 10, 20, 50, 100) if k <= n] if n > 1 else []
    passk = {str(k): sum(pass_at_k(n, c, k) for c in per_problem.values()) / len(per_problem) for k in ks}
    if isinstance(stats, EpisodeStats):
        stats = stats.to_dict()
    first = trajectories[0]
    return EvalReport(
        env_id=env_id or first.env_id,
        split=split,
        policy_name=policy_name or first.policy_name,
        max_turns=max_turns,
        n_problems=len(by_problem),
        n_samples=n,
        accuracy_by_turn=accuracy_by_turn(rewards, max_turns),
        solved_at_turn=solved_at,
        turns_to_solve=turns_to_solve(rewards),
        mean_turns=sum(len(r) for r in rewards) / len(rewards),
        public_pass_by_turn=accuracy_by_turn(public, max_turns),
        pass_at_k=passk,
        per_problem=per_problem,
        stats=dict(stats or {}),
    )


def evaluate(policy: Policy, config: RolloutConfig, out_dir: str | os.PathLike | None = None) -> EvalReport:
    """Roll ``policy`` out with ``config`` and summarize; with ``out_dir`` also write the
    trajectories (``trajectories/``), ``results.json`` and ``accuracy_by_turn.png`` there.

    Resuming: an interrupted evaluation started again with the same ``out_dir`` continues.
    """
    result = run_rollouts(policy, config, out_dir)
    report = summarize(
        result.trajectories,
        config.max_turns,
        env_id=config.env_id,
        split=config.split,
        policy_name=str(getattr(policy, "name", type(policy).__name__)),
        stats=result.stats,
    )
    if out_dir is not None:
        report.write_json(Path(out_dir) / "results.json")
        report.plot(Path(out_dir) / "accuracy_by_turn.png")
    return report
