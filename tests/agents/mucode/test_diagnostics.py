"""agents.mucode.diagnostics: pairwise accuracy, the expert's changes, and a run directory's summary."""

from __future__ import annotations

import json
import math
from dataclasses import asdict

import pytest

from agents.mucode.diagnostics import (
    expert_pick_changes,
    pairwise_accuracy,
    run_diagnostics,
    verifier_pairwise_accuracy,
)
from agents.mucode.expert import ExpertConfig, select_experts
from agents.records import Trajectory, TurnRecord
from mucode_env.atomic import write_json_atomic, write_jsonl_atomic


def turn(resp: str, ok: bool) -> TurnRecord:
    return TurnRecord(resp, f"code:{resp}", "" if ok else "AssertionError", ok, ok, "passed" if ok else "wrong_answer")


def traj(pid: str, *turns: TurnRecord) -> Trajectory:
    return Trajectory(problem_id=pid, env_id="MuCode-MBPP-v0", prompt=f"prompt {pid}", turns=list(turns))


DATA = [
    traj("A", turn("a1", False), turn("a2", True)),
    traj("A", turn("a3", False), turn("a4", False), turn("a5", False)),
    traj("B", turn("b1", False)),  # B has no correct response: no pair
]


def test_pairwise_accuracy_counts_every_pair_and_half_a_tie():
    out = pairwise_accuracy({"A": ([3.0, 1.0], [2.0, 1.0]), "B": ([], [0.0]), "C": ([5.0], [])})
    # pairs (3>2, 3>1, 1<2, 1=1) -> 1 + 1 + 0 + 0.5 over 4
    assert out == {"pairs": 4, "problems": 1, "accuracy": pytest.approx(2.5 / 4)}
    assert math.isnan(pairwise_accuracy({})["accuracy"])


def test_verifier_pairwise_accuracy_labels_turns_as_the_verifier_was_trained():
    scores = {"a1": 0.0, "a2": 1.0, "a3": 2.0, "a4": 0.5, "a5": 0.5, "b1": 9.0}
    out = verifier_pairwise_accuracy(lambda p, r: [scores[x] for x in r], DATA)
    # A: positive a2 (1.0) against a1, a3, a4, a5 -> wins over a1, a4, a5, loses to a3
    assert out == {"pairs": 4, "problems": 1, "accuracy": pytest.approx(0.75)}
    inverted = verifier_pairwise_accuracy(lambda p, r: [-scores[x] for x in r], DATA)
    assert inverted["accuracy"] == pytest.approx(0.25)


def test_expert_pick_changes_counts_changed_and_fixed_targets():
    experts = select_experts(DATA, ExpertConfig(), lambda p, r: [0.0] * len(r))
    rows = [asdict(c) for c in experts.choices.values()]
    out = expert_pick_changes(rows, DATA)
    # A's expert is a2: same as trajectory 1's final, a fix of trajectory 2's failed a5; B's is b1, unchanged
    assert out["trajectories"] == 3 and out["differs"] == 1 and out["failed_final_fixed"] == 1
    assert out["share_differs"] == pytest.approx(1 / 3)


def test_run_diagnostics_reads_a_run_directory(tmp_path):
    for it in (1, 2):
        d = tmp_path / f"iter{it}"
        d.mkdir()
        write_jsonl_atomic(d / "rollouts.jsonl", [t.to_row() for t in DATA])
        experts = select_experts(DATA, ExpertConfig(), lambda p, r: [0.0] * len(r))
        write_jsonl_atomic(d / "experts.jsonl", [asdict(c) for c in experts.choices.values()])
        write_json_atomic(d / "relabel.done", {"n_examples": 6 * it, "n_problems": 2, "expert_accuracy": 0.5})
        write_json_atomic(d / "validation.done", {"accuracy": 0.1 * it, "accuracy_by_turn": [0.1, 0.1 * it]})
    out = run_diagnostics(tmp_path, score_verifier=False)
    assert [r["iteration"] for r in out["iterations"]] == [1, 2]
    first = out["iterations"][0]
    assert first["relabeled_examples"] == 6 and first["expert_accuracy"] == 0.5
    assert first["validation_accuracy"] == pytest.approx(0.1)
    assert first["expert_vs_final"]["differs"] == 1
    # per problem, then averaged: A is solved by turn 2 in one of two samples, B never
    assert first["rollout_accuracy_by_turn"] == pytest.approx([0.0, 0.25, 0.25])
    assert "verifier_heldout" not in first
    json.dumps(out)  # a JSON-ready summary
