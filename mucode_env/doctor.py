"""Ground-truth self-check: every reference solution must pass its own public and private tests.

A failure here means the dataset conversion, the sandbox or a time limit is wrong, so every
number measured on top of it would be wrong too. ``calibrate_time_limits`` measures the
reference solutions to set per-problem limits that do not flip on a slower machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mucode_env.problem import Problem, TestCase
from mucode_env.problem_jobs import TEST_SETS, problem_job
from mucode_env.sandbox import Job, Sandbox, SandboxLimits

CALIBRATION_FACTOR = 4.0
CALIBRATION_FLOOR_S = 2.0
CALIBRATION_PROBE_S = 60.0


@dataclass
class Failure:
    problem_id: str
    which: str  # "public" | "private"
    status: str
    message: str


@dataclass
class BenchmarkCheck:
    """The reference-solution check of one benchmark split."""

    benchmark: str
    split: str
    n_problems: int = 0
    n_checked: int = 0
    n_without_reference: int = 0
    failures: list[Failure] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures


def sandbox_probes(sandbox: Sandbox) -> list[tuple[str, bool, str]]:
    """A few hostile programs that must fail: (probe, blocked as expected, detail)."""
    probe = TestCase("assert f() == 1", ("f()",), "assert _0 == 1")
    programs = {
        "network is unreachable": "import socket\ndef f():\n    socket.create_connection(('1.1.1.1', 80), timeout=2)\n    return 1",
        "process creation is denied": "import os\ndef f():\n    os.fork()\n    return 1",
        "host files are invisible": f"def f():\n    open({str(Path(__file__).resolve())!r}).read()\n    return 1",
        "infinite loop is killed": "def f():\n    while True: pass",
        "exit(0) cannot fake a pass": "import sys\nsys.exit(0)\ndef f(): return 1",
        "always-equal objects are refused": "class A:\n    def __eq__(self, o): return True\ndef f(): return A()",
        # hold without a uid switch too (a host that is not root): see mucode_env/sandbox/jail.py
        "the fork server's descriptors are out of reach": (
            "import os\ndef f():\n    for fd in range(12):\n        try:\n"
            "            os.close(os.open('/proc/%d/fd/%d' % (os.getppid(), fd), os.O_WRONLY))\n"
            "            return 1\n        except OSError:\n            pass"),
        "no other process can be signalled": "import os\ndef f():\n    os.kill(os.getppid(), 0)\n    return 1",
    }
    limits = SandboxLimits(per_test_s=1.0)
    results = sandbox.execute([_job(code, (probe,), limits) for code in programs.values()])
    return [(name, not r.passed, f"{r.status.value}: {r.message or (r.tests[0].message if r.tests else '')}"[:120])
            for name, r in zip(programs, results)]


def _job(code: str, tests: tuple[TestCase, ...], limits: SandboxLimits, setup: str = "") -> Job:
    return Job(code, tests, setup, limits)


def check_references(problems: Sequence[Problem], sandbox: Sandbox, benchmark: str, split: str,
                     progress: Callable[[int], None] | None = None, batch_size: int = 32) -> BenchmarkCheck:
    """Run every reference solution on its public and private tests; collect failures."""
    report = BenchmarkCheck(benchmark, split, n_problems=len(problems))
    started = time.monotonic()
    with_reference = [p for p in problems if p.reference_solution.strip()]
    report.n_without_reference = len(problems) - len(with_reference)
    for start in range(0, len(with_reference), batch_size):
        chunk = with_reference[start:start + batch_size]
        jobs = [problem_job(p, p.reference_solution, which) for p in chunk for which in TEST_SETS]
        results = sandbox.execute(jobs)
        for i, problem in enumerate(chunk):
            for which, result in zip(TEST_SETS, results[2 * i: 2 * i + 2]):
                if not result.passed:
                    failed = next((t for t in result.tests if not t.passed), None)
                    detail = result.message or (failed.message if failed else "")
                    if failed is not None and failed.got is not None:
                        detail += f" (got {failed.got})"
                    report.failures.append(Failure(problem.id, which, result.status.value, detail[:300]))
            report.n_checked += 1
        if progress is not None:
            progress(len(chunk))
    report.seconds = time.monotonic() - started
    return report


def calibrate_time_limits(problems: Sequence[Problem], sandbox: Sandbox, factor: float = CALIBRATION_FACTOR,
                          floor_s: float = CALIBRATION_FLOOR_S, probe_s: float = CALIBRATION_PROBE_S,
                          progress: Callable[[int], None] | None = None) -> dict[str, float]:
    """Per-test limit for each problem: max(floor_s, factor x the slowest test of its reference).

    The reference runs under a generous ``probe_s`` limit, so a slow reference (MBPP task 123)
    gets a limit it can meet, and a floor keeps quick problems from flipping on a slow machine.
    """
    limits = SandboxLimits(per_test_s=probe_s, total_s=probe_s * 4)
    table: dict[str, float] = {}
    for problem in problems:
        if not problem.reference_solution.strip():
            continue
        tests = problem.public_tests + problem.private_tests
        split_jobs = [_job(problem.reference_solution, tuple(t for t in tests if t.is_stdio == stdio), limits,
                           problem.test_setup) for stdio in (False, True)]
        results = sandbox.execute([j for j in split_jobs if j.tests])
        slowest_ms = max((t.duration_ms for r in results for t in r.tests), default=0.0)
        table[problem.id] = round(max(floor_s, factor * slowest_ms / 1e3), 2)
        if progress is not None:
            progress(1)
    return table
