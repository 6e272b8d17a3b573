"""Evaluation metrics, the report, and the ``mucode eval`` command."""

from __future__ import annotations

import json

import gymnasium as gym
import pytest

from agents.evaluate import evaluate, summarize
from agents.policy import Generation
from agents.records import Trajectory, TurnRecord
from agents.rollout import RolloutConfig, load_trajectories

ENV = "MuCode-HumanEval-v0"


def _traj(pid: str, oracles: list[bool], sample: int = 0, public: list[bool] | None = None) -> Trajectory:
    public = public or oracles
    turns = [TurnRecord("r", "c", "f", pub, ok, "passed" if pub else "wrong_answer") for ok, pub in zip(oracles, public)]
    return Trajectory(pid, ENV, "prompt", turns, sample_index=sample)


def test_summary_metrics_by_hand():
    trajs = [
        _traj("A", [True], 0), _traj("A", [False, True], 1),
        _traj("B", [False, False, False], 0), _traj("B", [False, False, False], 1),
        _traj("C", [False, False, True], 0), _traj("C", [False], 1, public=[True]),  # public-only pass
    ]
    report = summarize(trajs, 3)
    assert report.n_problems == 3 and report.n_samples == 2
    assert report.accuracy_by_turn == pytest.approx([1 / 6, 2 / 6, 3 / 6])
    assert report.public_pass_by_turn == pytest.approx([2 / 6, 3 / 6, 4 / 6])
    assert report.solved_at_turn == [1, 1, 1]
    assert report.turns_to_solve == pytest.approx(2.0)
    assert report.mean_turns == pytest.approx(13 / 6)
    assert report.per_problem == {"A": 2, "B": 0, "C": 1}
    # unbiased pass@k over problems: A: c=2, B: c=0, C: c=1 with n=2
    assert report.pass_at_k == {"1": pytest.approx((1 + 0 + 0.5) / 3), "2": pytest.approx((1 + 0 + 1) / 3)}


def test_single_sample_has_no_pass_at_k_and_bad_inputs_raise():
    assert summarize([_traj("A", [True])], 1).pass_at_k == {}
    with pytest.raises(ValueError, match="no trajectories"):
        summarize([], 3)
    with pytest.raises(ValueError, match="1..1 turns"):
        summarize([_traj("A", [False, True])], 1)
    with pytest.raises(ValueError, match="different numbers of samples"):
        summarize([_traj("A", [True], 0), _traj("A", [True], 1), _traj("B", [True])], 3)


class SolvesOddProblemsAtTurnTwo:
    name = "scripted"

    def __init__(self, problems):
        self.problems = problems

    def generate(self, chats, params):
        out = []
        for chat in chats:
            i, p = next((i, p) for i, p in enumerate(self.problems) if f"def {p.entry_point}(" in chat[0]["content"])
            good = i % 2 == 1 and len(chat) >= 3
            code = p.reference_solution if good else f"def {p.entry_point}(*a):\n    return None\n"
            out.append([Generation(f"```python\n{code}\n```", 5, 3)])
        return out


def test_evaluate_writes_results_plot_and_trajectories(tmp_path):
    env = gym.make(ENV)
    problems = env.unwrapped.problems[:4]
    env.close()
    config = RolloutConfig(ENV, limit=4, max_turns=3, progress=False)
    report = evaluate(SolvesOddProblemsAtTurnTwo(problems), config, tmp_path)
    assert report.accuracy_by_turn == [0.0, 0.5, 0.5]
    assert report.turns_to_solve == 2.0
    stored = json.loads((tmp_path / "results.json").read_text())
    assert stored["accuracy_by_turn"] == report.accuracy_by_turn
    assert (tmp_path / "accuracy_by_turn.png").read_bytes()[:4] == b"\x89PNG"
    assert summarize(load_trajectories(tmp_path), 3).accuracy_by_turn == report.accuracy_by_turn


