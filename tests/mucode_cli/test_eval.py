"""``mucode eval``: bad input fails fast with one line; a tiny model and the default model end to end."""

from __future__ import annotations

import json

import pytest

from agents.evaluate import summarize
from agents.rollout import load_trajectories
from mucode_cli.main import main

ENV = "MuCode-HumanEval-v0"


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
        (["--ray-actors", "2"], "--ray-actors need --ray"),
        (["--ray", "--endpoints", "localhost:8000"], "endpoints must be"),
        (["--ray", "--ray-actors", "0"], "--ray-actors must be >= 1"),
        (["--ray", "--endpoints", "http://a:8000/v1", "--backend", "llama_cpp"], "drop --backend llama_cpp"),
    ],
    ids=["env-typo", "model-typo", "no-url", "unreachable", "turns", "temperature", "problem-id", "ray-flag-alone",
         "bad-endpoint", "no-actors", "endpoints-backend"],
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


def test_cli_ray_flags_send_a_policy_recipe_and_the_layout(tmp_path, monkeypatch, capsys):
    import agents.evaluate
    from agents.backends import PolicySpec
    from agents.ray_episodes import RayEpisodesConfig

    seen = {}

    class Report:
        def table(self):
            return "report"

    def fake_evaluate(policy, config, out_dir):
        seen.update(policy=policy, config=config, out=out_dir)
        return Report()

    monkeypatch.setattr(agents.evaluate, "evaluate", fake_evaluate)
    code = main(["eval", "--env", ENV, "--model", "served", "--limit", "3", "--out", str(tmp_path / "o"),
                 "--no-progress", "--ray", "10.0.0.1:6379", "--ray-actors", "3", "--ray-cpus-per-actor", "2",
                 "--endpoints", "http://a:8000/v1,http://b:8000/v1"])
    assert code == 0, capsys.readouterr().err
    assert seen["policy"] == PolicySpec("openai", "served", {})  # each actor binds it to its server
    assert seen["config"].ray == RayEpisodesConfig(address="10.0.0.1:6379", n_actors=3, cpus_per_actor=2,
                                                   endpoints=("http://a:8000/v1", "http://b:8000/v1"), chunk_size=16)
    code = main(["eval", "--env", ENV, "--limit", "3", "--out", str(tmp_path / "p"), "--no-progress", "--ray"])
    assert code == 0 and seen["config"].ray == RayEpisodesConfig()
    assert seen["policy"].backend == "llama_cpp" and "n_threads" not in seen["policy"].kwargs  # the actor's CPUs
