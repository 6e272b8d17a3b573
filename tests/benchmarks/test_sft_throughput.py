"""benchmarks/sft_throughput.py on a tiny model: every variant trains in its own process, and the
table compares them with the configurations they name."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "sft_throughput.py"


@pytest.mark.slow
def test_the_variants_train_the_same_examples_and_the_table_names_their_settings(tiny_model_dir, tmp_path):
    rows = [{"prompt": [{"role": "user", "content": "Write add " + "now " * k}],
             "completion": [{"role": "assistant", "content": "def add(a, b):\n    return a + b"}],
             "problem_id": f"p{k}", "turn": 1, "source": "expert"} for k in range(4)]
    data = tmp_path / "relabeled.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "numbers.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--examples", str(data), "--generator", str(tiny_model_dir),
                           "--threads", "1", "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    numbers = json.loads(out.read_text())["rows"]
    assert [r["variant"] for r in numbers] == ["before", "micro-batch-1", "after"]
    assert [(r["per_device"], r["compact_lm_head"]) for r in numbers] == [(2, False), (1, False), (1, True)]
    assert {r["examples"] for r in numbers} == {4} and len({r["tokens"] for r in numbers}) == 1
    assert all(r["tokens_per_s"] > 0 and r["peak_gib"] > 0.1 for r in numbers)
    table = done.stdout.splitlines()
    assert table[0].startswith("| variant |") and len(table) == 2 + 3
    assert "| before | 2 | every position |" in table[2] and "| 1.00x |" in table[2]
    assert "| after | 1 | completion tokens |" in table[4]


def test_an_unknown_variant_is_named(tmp_path):
    data = tmp_path / "r.jsonl"
    data.write_text(json.dumps({"prompt": [], "completion": []}) + "\n")
    done = subprocess.run([sys.executable, str(SCRIPT), "--examples", str(data), "--variants", "before,fastest"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "unknown variants ['fastest']" in done.stderr
