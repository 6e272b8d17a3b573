"""verl/SkyRL rows and the verl-style compute_score in process (through ``mucode serve``:
tests/mucode_env/serve/test_clients.py)."""

from __future__ import annotations

import importlib
import os

import pytest

from mucode_env.datasets import load_problems
from mucode_env.integrations import verl
from mucode_env.prompts import first_user_message

# pyarrow comes with the serve extra; only a local run without it may skip.
pq = importlib.import_module("pyarrow.parquet") if os.environ.get("CI") == "true" else pytest.importorskip("pyarrow.parquet")


def test_verl_rows_reference_the_problem_and_carry_the_first_turn(data_dir):
    rows = verl.rows("MuCode-MBPP-v0", data_dir=data_dir, limit=3)
    problems = load_problems("mbpp", "test", data_dir=data_dir)[:3]
    assert [r["reward_model"] for r in rows] == [{"style": "rule", "ground_truth": f"mbpp/test/{p.id}"} for p in problems]
    first = rows[0]
    assert set(first) == {"data_source", "prompt", "ability", "reward_model", "extra_info"}
    assert first["data_source"] == "MuCode-MBPP-v0" and first["ability"] == "code"
    assert first["prompt"] == [{"role": "user", "content": first_user_message(problems[0])}]
    assert first["extra_info"] == {"split": "test", "index": 0, "problem_id": "MBPP/11", "benchmark": "mbpp",
                                   "env_id": "MuCode-MBPP-v0"}
    for row, problem in zip(rows, problems):  # the tests themselves never travel in a row
        for test in problem.private_tests:
            assert test.check not in str(row)


def test_skyrl_rows(data_dir):
    row = verl.rows("MuCode-HumanEval-v0", flavor="skyrl", data_dir=data_dir, limit=1, env_class="mucode_code")[0]
    assert set(row) == {"data_source", "prompt", "env_class", "reward_spec", "extra_info"}
    assert row["env_class"] == "mucode_code"
    assert row["reward_spec"] == {"method": "rule", "ground_truth": "humaneval/test/HumanEval/0"}


def test_parquet_export_round_trips_and_replaces_atomically(data_dir, tmp_path):
    path = tmp_path / "out" / "train.parquet"
    verl.export_parquet("MuCode-MBPP-v0", path, split="train", data_dir=data_dir, limit=5)
    table = pq.read_table(path).to_pylist()
    assert table == verl.rows("MuCode-MBPP-v0", "train", data_dir=data_dir, limit=5)
    assert table[0]["reward_model"]["ground_truth"].startswith("mbpp/train/")
    before = path.read_bytes()
    with pytest.raises(ValueError, match="flavor must be one of"):
        verl.export_parquet("MuCode-MBPP-v0", path, flavor="trl", data_dir=data_dir)
    assert path.read_bytes() == before  # a failed export leaves the old file, and no temporary file
    assert sorted(p.name for p in path.parent.iterdir()) == ["train.parquet"]


def test_compute_score_in_process(data_dir, monkeypatch):
    monkeypatch.delenv("MUCODE_SERVE_URL", raising=False)
    problem = load_problems("humaneval", "test", data_dir=data_dir)[2]
    truth = f"humaneval/test/{problem.id}"
    good = f"```python\n{problem.prompt}{problem.reference_solution}\n```"
    assert verl.compute_score("MuCode-HumanEval-v0", good, truth) == 1.0
    assert verl.compute_score("MuCode-HumanEval-v0", good, truth, extra_info={"index": 2}) == 1.0
    assert verl.compute_score("MuCode-HumanEval-v0", "```python\ndef truncate_number(x):\n    return 0.0\n```",
                              truth) == 0.0
    with pytest.raises(ValueError, match="benchmark/split/problem_id"):
        verl.compute_score("MuCode-HumanEval-v0", good, problem.id)
    with pytest.raises(ValueError, match="must match"):
        verl.compute_score_batch(["a"], [good, good], [truth])
