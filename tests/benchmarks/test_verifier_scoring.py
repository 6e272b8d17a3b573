"""benchmarks/verifier_scoring.py on a tiny verifier: both ways score the same calls, the same
scores, and the table reports both."""

from __future__ import annotations

import json

from agents.mucode.verifier import VerifierConfig, train_verifier
from agents.records import Trajectory, TurnRecord

GOOD = "```python\ndef add(a, b):\n    return a + b\n```"
BAD = "```python\ndef add(a, b):\n    return a - b\n```"


def _rollouts(tmp_path):
    prompt = "Write a function add that returns the sum of a and b, problem {k}. " * 3
    trajs = [Trajectory(problem_id=f"P{k}", env_id="MuCode-MBPP-v0", prompt=prompt.format(k=k),
                        turns=[TurnRecord(response=(BAD if i % 2 else GOOD) + "\n" * i, code="", feedback="",
                                          public_passed=i % 2 == 0, private_passed=i % 2 == 0, status="ok")],
                        sample_index=i)
             for k in range(3) for i in range(4)]
    path = tmp_path / "rollouts.jsonl"
    path.write_text("".join(json.dumps(t.to_row()) + "\n" for t in trajs))
    return trajs, path


def test_both_ways_score_the_same_calls_alike(tiny_model_dir, tmp_path, load_benchmark, capsys):
    trajs, rollouts = _rollouts(tmp_path)
    cfg = VerifierConfig(pairs_per_prompt=2, learning_rate=3e-3, epochs=1, batch_size=8, per_device_batch_size=8,
                         max_length=256, progress=False)
    verifier = train_verifier(trajs, tiny_model_dir, cfg, tmp_path / "v")
    capsys.readouterr()  # the training's own output
    bench = load_benchmark("verifier_scoring")
    calls = bench.load_calls(str(rollouts), 2, 3)
    assert [len(r) for _, r in calls["relabel"]] == [8]  # 2 problems x 4 distinct responses, one call
    assert [len(r) for _, r in calls["bon"]] == [3, 1, 3, 1]  # per problem and turn, n=3 at a time
    out = tmp_path / "numbers.json"
    assert bench.main(["--verifier", str(verifier), "--rollouts", str(rollouts), "--limit", "2", "--n", "3",
                       "--repeat", "1", "--threads", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["results"]
    assert [r["mode"] for r in rows] == ["relabel", "bon"]
    assert all(r["programs"] == 8 and r["max_score_diff"] < 1e-4 and r["ratio"] > 0 for r in rows)
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| mode |") and table[2].startswith("| relabel | 1 | 8 |")
