"""benchmarks/rollout_throughput.py with recording policies instead of engines (the lanes, the table)."""

from __future__ import annotations

import pytest

from agents.policy import Generation


@pytest.fixture
def bench_module(load_benchmark):
    return load_benchmark("rollout_throughput")


class RecordingPolicy:
    """Answers every chat with one fixed program; records how many chats each call carried and how
    many calls were in flight at once (a server's view of continuous play)."""

    def __init__(self, backend: str) -> None:
        import threading

        self.backend = backend
        self.widths: list[int] = []
        self.closed = False
        self.active = self.peak = 0
        self.lock = threading.Lock()
        self.concurrent_generate = backend == "vllm"

    def generate(self, chats, params):
        import time

        with self.lock:
            self.widths.append(len(chats))
            self.active += 1
            self.peak = max(self.peak, self.active)
        time.sleep(0.05)  # long enough for the other episodes' calls to overlap
        with self.lock:
            self.active -= 1
        text = "```python\nreturn None\n```" if self.backend == "llama_cpp" else "```python\npass\n```"
        return [[Generation(text, 5, 8)] for _ in chats]

    def close(self) -> None:
        self.closed = True


def test_vllm_lanes_keep_their_concurrency_and_the_table_compares_them(bench_module, monkeypatch, capsys):
    made: dict[str, RecordingPolicy] = {}

    def fake_make_policy(backend, model, **kw):
        assert model == "m"
        made[backend] = RecordingPolicy(backend)
        if backend == "vllm":  # a managed server reports the dtype it served (bf16 or float32)
            made[backend].precision = "float32"
        return made[backend]

    monkeypatch.setattr(bench_module, "make_policy", fake_make_policy)
    assert bench_module.main(["--model", "m", "--limit", "4", "--turns", "1", "--concurrency", "1,2,4"]) == 0
    # The first call of each engine is the warm-up chat; then the lanes, in order: for each
    # concurrency rounds (one call of that width per turn), then continuous (one chat per call)
    assert made["llama_cpp"].widths == [1, 4]
    assert made["vllm"].widths == [1] + [1] * 4 + [1] * 4 + [2] * 2 + [1] * 4 + [4] + [1] * 4
    assert made["vllm"].peak == 4 and made["llama_cpp"].peak == 1  # continuous lanes keep c calls in flight
    assert made["vllm"].closed
    rows = [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    header, llama, *lanes = rows
    assert header[8].startswith("same turn-1 text") and len(lanes) == 6
    # columns: backend, in flight, load s, tokens, gen s, tokens/s, episodes/min, solved, same text, ratios
    assert llama[:2] == ["llama.cpp (GGUF)", "1 (sequential)"] and llama[3] == "32"
    assert llama[7:10] == ["0/4", "4/4", "1.00x"]
    modes = [f"{c}, {play}" for c in (1, 2, 4) for play in ("rounds", "continuous")]
    for lane, mode in zip(lanes, modes):
        assert lane[:2] == ["vLLM (float32)", mode] and lane[3] == "32"
        assert lane[8] == "0/4"  # its turn-1 texts differ from llama.cpp's

def test_bad_arguments_are_refused(bench_module):
    with pytest.raises(SystemExit):
        bench_module.parse_args(["--backends", "llama_cpp,vllmm"])
    with pytest.raises(SystemExit):
        bench_module.parse_args(["--concurrency", "0,4"])
    with pytest.raises(SystemExit):
        bench_module.parse_args(["--play", "rounds,async"])
