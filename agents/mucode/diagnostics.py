"""Diagnostics of a µCODE run that explain its result either way: does the verifier rank held-out
responses, does the local search expert change the targets, how much relabelled data there is.

Everything reads a finished run directory (:mod:`agents.mucode.run_dir`); only
:func:`verifier_pairwise_accuracy` runs a model (the verifier's scores).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from agents.mucode.verifier import build_labels
from agents.records import Trajectory
from mucode_env.datasets.source import read_jsonl

__all__ = ["expert_pick_changes", "pairwise_accuracy", "run_diagnostics", "verifier_pairwise_accuracy"]

ScoreFn = Callable[[Sequence[str], Sequence[str]], list[float]]


def pairwise_accuracy(scores: dict[str, tuple[list[float], list[float]]]) -> dict[str, float | int]:
    """Share of (correct, incorrect) response pairs of the same problem that the scores order
    correctly (a tie counts one half), over every such pair.

    Args:
        scores: per problem, (scores of its correct responses, scores of its incorrect ones);
            problems lacking either side contribute no pair.
    """
    right = 0.0
    pairs = problems = 0
    for pos, neg in scores.values():
        if not pos or not neg:
            continue
        problems += 1
        for p in pos:
            for n in neg:
                pairs += 1
                right += 1.0 if p > n else 0.5 if p == n else 0.0
    return {"pairs": pairs, "problems": problems, "accuracy": right / pairs if pairs else float("nan")}


def verifier_pairwise_accuracy(score: ScoreFn, trajectories: Iterable[Trajectory]) -> dict[str, float | int]:
    """The verifier's pairwise accuracy on ``trajectories`` (every turn a labelled response, as
    in its training data: the final turn's oracle, intermediate turns negative). Pass
    trajectories it was not trained on for a held-out number."""
    flat = build_labels(trajectories)
    values = score([lr.prompt for lr in flat], [lr.response for lr in flat])
    by_problem: dict[str, tuple[list[float], list[float]]] = {}
    for lr, v in zip(flat, values):
        pos, neg = by_problem.setdefault(lr.problem_id, ([], []))
        (pos if lr.label >= 1.0 else neg).append(v)
    return pairwise_accuracy(by_problem)


def expert_pick_changes(experts: Iterable[dict[str, Any]], trajectories: Sequence[Trajectory]) -> dict[str, float | int]:
    """How often the expert's response y*(x) differs from a trajectory's final answer, and how
    often that turns a failed final answer into a correct target (over trajectories whose
    problem has an expert)."""
    by_problem = {row["problem_id"]: row for row in experts}
    n = differs = fixes = 0
    for traj in trajectories:
        row = by_problem.get(traj.problem_id)
        if row is None or not traj.turns:
            continue
        final = traj.turns[-1]
        n += 1
        if row["response"] != final.response:
            differs += 1
            fixes += int(row["oracle"] >= 1.0 and final.reward < 1.0)
    return {"trajectories": n, "differs": differs, "share_differs": differs / n if n else float("nan"),
            "failed_final_fixed": fixes}


def run_diagnostics(run_dir: str | Path, *, score_verifier: bool = True) -> dict[str, Any]:
    """Per iteration of a finished µCODE run: relabelled data size, expert accuracy and how often
    its pick differs from the final answer, rollout accuracy by turn, validation accuracy, and
    (``score_verifier``) the verifier's pairwise accuracy on the NEXT iteration's rollouts, which
    it never trained on (the last iteration has none)."""
    from mucode_env.metrics import accuracy_by_turn

    run_dir = Path(run_dir)
    its = sorted((p for p in run_dir.glob("iter*") if p.name[4:].isdigit()), key=lambda p: int(p.name[4:]))
    rollouts = {int(p.name[4:]): [Trajectory.from_row(r) for r in read_jsonl(p / "rollouts.jsonl")]
                for p in its if (p / "rollouts.jsonl").is_file()}
    out = []
    for it_dir in its:
        it = int(it_dir.name[4:])
        done = {s: json.loads(f.read_text()) for s in ("relabel", "generator", "verifier", "validation")
                if (f := it_dir / f"{s}.done").is_file()}
        trajs = rollouts.get(it, [])
        row: dict[str, Any] = {
            "iteration": it,
            "rollout_episodes": len(trajs),
            "rollout_accuracy_by_turn": accuracy_by_turn(
                [[u.reward for u in t.turns] for t in trajs], max((len(t.turns) for t in trajs), default=1),
                problem_ids=[t.problem_id for t in trajs]) if trajs else None,
            "relabeled_examples": done.get("relabel", {}).get("n_examples"),
            "expert_problems": done.get("relabel", {}).get("n_problems"),
            "expert_accuracy": done.get("relabel", {}).get("expert_accuracy"),
            "validation_accuracy": done.get("validation", {}).get("accuracy"),
            "validation_accuracy_by_turn": done.get("validation", {}).get("accuracy_by_turn"),
        }
        if (it_dir / "experts.jsonl").is_file():
            row["expert_vs_final"] = expert_pick_changes(read_jsonl(it_dir / "experts.jsonl"), trajs)
        held_out = rollouts.get(it + 1)
        if score_verifier and held_out and (it_dir / "verifier.done").is_file():
            from agents.mucode.verifier import Verifier

            row["verifier_heldout"] = {"on": f"iter{it + 1} rollouts",
                                       **verifier_pairwise_accuracy(Verifier.load(it_dir / "verifier").score, held_out)}
        out.append(row)
    return {"run_dir": str(run_dir), "iterations": out}
