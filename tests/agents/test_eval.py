"""Evaluation metrics, the report, and the ``mucode eval`` command."""

from __future__ import annotations

import json

import gymnasium as gym
import pytest

from agents.evaluate import evaluate, per_turn_accuracy, summarize
from agents.policy import Generation
from agents.records import Trajectory, TurnRecord
from agents.rollout import RolloutConfig, load_trajectories
from mucode_env.cli import main

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
    assert per_turn_accuracy(trajs, 3) == report.accuracy_by_turn
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


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--env", "MuCode-HumanEvl-v0"], "Did you mean: `MuCode-HumanEval-v0`"),
        (["--model", "qwen2.5-coder-05b"], "Did you mean: `qwen2.5-coder-0.5b`"),
        (["--backend", "openai"], "--base-url"),
        (["--backend", "openai", "--base-url", "http://127.0.0.1:9/v1"], "unreachable"),
        (["--turns", "0"], "--turns must be >= 1"),
        (["--temperature", "-1"], "temperature must be >= 0"),
        (["--problem-ids", "HumanEval/99999"], "unknown problem id"),
    ],
    ids=["env-typo", "model-typo", "no-url", "unreachable", "turns", "temperature", "problem-id"],
)
def test_cli_bad_input_fails_fast_with_one_line(argv, message, tmp_path, capsys):
    code = main(["eval", "--out", str(tmp_path / "out"), "--no-progress", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.splitlines()) == 1


def test_cli_wrong_sha_is_refused(tmp_path, capsys, monkeypatch):
    from agents import models

    spec = models.MODELS["smollm2-135m"]
    monkeypatch.setitem(models.MODELS, "smollm2-135m", models.ModelSpec(
        spec.name, spec.filename, spec.size_bytes, "f" * 64, spec.parts, spec.hub_id, spec.pip_flags))
    try:
        models.resolve_model("smollm2-135m", tmp_path)
    except models.ModelNotInstalledError as exc:
        pytest.skip(str(exc))
    except models.ModelIntegrityError:
        pass
    code = main(["eval", "--model", "smollm2-135m", "--cache-dir", str(tmp_path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "refusing" in err and "Traceback" not in err


def test_cli_runs_a_tiny_model_end_to_end(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    code = main(["eval", "--env", ENV, "--backend", "transformers", "--model", str(tiny_model_dir), "--limit", "2",
                 "--turns", "2", "--n", "2", "--max-new-tokens", "8", "--out", str(out), "--no-progress"])
    assert code == 0
    table = capsys.readouterr().out
    assert "accuracy after turn 2" in table and "pass@2" in table
    results = json.loads((out / "results.json").read_text())
    trajs = load_trajectories(out)
    assert len(trajs) == 4 and results["n_samples"] == 2 and results["max_turns"] == 2
    assert results["accuracy_by_turn"] == summarize(trajs, 2).accuracy_by_turn
    assert all(t.sampling["temperature"] == 0.7 for t in trajs)  # the paper's default when n > 1


@pytest.mark.slow
def test_real_eval_with_the_default_model_matches_its_trajectories(tmp_path, capsys):
    from agents.models import DEFAULT_MODEL, ModelNotInstalledError, resolve_model

    pytest.importorskip("llama_cpp")
    try:
        resolve_model(DEFAULT_MODEL)
    except ModelNotInstalledError as exc:
        pytest.skip(str(exc))
    out = tmp_path / "eval"
    code = main(["eval", "--env", ENV, "--limit", "3", "--turns", "2", "--max-new-tokens", "400", "--out", str(out),
                 "--no-progress"])
    assert code == 0
    table = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    trajs = load_trajectories(out)
    assert len(trajs) == 3
    for t, acc in enumerate(results["accuracy_by_turn"], 1):
        correct = sum(tr.turns[min(t, len(tr.turns)) - 1].reward for tr in trajs)
        assert acc == correct / 3
        assert f"{round(correct)}/3" in table
    assert all(turn.completion_tokens > 0 for tr in trajs for turn in tr.turns)
    assert all(tr.turns[-1].public_passed or len(tr.turns) == 2 for tr in trajs)
