"""benchmarks/ppo_update.py: its segments mark the policy's tokens, and both variants run and are tabled."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.records import Trajectory, TurnRecord


@pytest.fixture
def bench_module(load_benchmark):
    return load_benchmark("ppo_update")


def _episodes(tmp_path) -> Path:
    from agents.episode_store import EpisodeStore

    turns = [TurnRecord("First try: return 1", "return 1", "Test failed: assert f(2) == 3", False, False,
                        "wrong_answer"),
             TurnRecord("Fixed: return x + 1", "return x + 1", "", True, True, "passed")]
    store = EpisodeStore(tmp_path / "cell", {"test": 1})
    sampling = {"n": 1, "temperature": 0.0, "top_p": 1.0, "max_new_tokens": 64, "stop": [], "seed": 0}
    store.add(Trajectory("P/1", "toy", "Write f(x) = x + 1.", turns, sampling=sampling))
    store.add(Trajectory("P/2", "toy", "Write g.", turns[1:], sampling=sampling))
    store.flush()
    return tmp_path / "cell"


def test_segments_mark_the_responses_as_the_policy_tokens(bench_module, tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    from agents.episode_store import EpisodeStore

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    segs = bench_module.segments(tok, EpisodeStore.read(_episodes(tmp_path)), 5)
    assert len(segs) == 2
    (ids, mask), _ = segs  # the two-turn episode comes first
    assert len(ids) == len(mask) and 0 < sum(mask) < len(mask)
    policy_text = tok.decode([i for i, m in zip(ids, mask) if m])
    assert "First try" in policy_text and "Fixed" in policy_text and "Feedback" not in policy_text
    assert "Write f(x)" in tok.decode([i for i, m in zip(ids, mask) if not m])


@pytest.mark.slow
def test_both_variants_run_and_are_tabled(bench_module, tiny_model_dir, tmp_path, capfd):
    import json

    out = tmp_path / "r.json"
    assert bench_module.main(["--episodes", str(_episodes(tmp_path)), "--model", str(tiny_model_dir),
                              "--threads", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["variant"] for r in rows] == ["dense", "policy"]
    assert rows[0]["tokens"] == rows[1]["tokens"] > rows[0]["policy_tokens"] > 0
    table = [line for line in capfd.readouterr().out.splitlines() if line.startswith("| ")]
    assert len(table) == 3 and table[1].startswith("| every position") and table[2].startswith("| the policy tokens")
