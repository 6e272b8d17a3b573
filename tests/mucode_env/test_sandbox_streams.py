"""Job(capture_streams=True): a stdio run's raw stdout, stderr and Python-style exit status."""

from __future__ import annotations

import pytest

from mucode_env.problem import TestCase
from mucode_env.sandbox import Job, ProgramRun, SandboxLimits, Status

LIMITS = SandboxLimits(per_test_s=1.0)


def run(sandbox, code: str, stdin: str = "", expected: str = "") -> ProgramRun:
    result = sandbox.execute([Job(code, (TestCase("run", stdin=stdin, expected_stdout=expected),), limits=LIMITS,
                                  capture_streams=True)])[0]
    assert len(result.runs) == 1
    assert result.runs[0].status is result.status  # one run: its status is the verdict
    return result.runs[0]


@pytest.mark.parametrize("code, exit_code, stdout, stderr_end", [
    ("print(int(input()) * 2)", 0, "42\n", ""),
    ("import sys\nprint('a')\nsys.stderr.write('warn\\n')\nraise ValueError('boom')", 1, "a\n",
     "warn\nTraceback (most recent call last):\n  File \"solution.py\", line 4, in <module>\nValueError: boom\n"),
    ("import sys\nprint('x')\nsys.exit(3)", 3, "x\n", ""),
    ("import sys\nsys.exit(-1)", 255, "", ""),
    ("import sys\nsys.exit('bye')", 1, "", ""),
    ("import sys\nsys.exit(None)", 0, "", ""),
    ("import os\nprint(3, flush=True)\nos._exit(7)", 7, "3\n", ""),
    # Without the child's report a clean exit cannot be told from a crash that hid its report.
    ("import os\nprint(3, flush=True)\nos._exit(0)", 1, "3\n", ""),
    ("import os\nos.close(3)\nprint(3, flush=True)\nraise SystemExit(5)", 1, "3\n", ""),
    ("def f(:\n    pass", 1, "", "SyntaxError: invalid syntax\n"),
    ("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)", -11, "", ""),
    ("x = bytearray(10 ** 10)", 1, "", "MemoryError\n"),
])
def test_exit_status_and_streams_are_those_of_a_python_process(sandbox, code, exit_code, stdout, stderr_end):
    got = run(sandbox, code, stdin="21\n")
    assert (got.exit_code, got.stdout) == (exit_code, stdout)
    assert got.stderr.endswith(stderr_end)


def test_a_timeout_has_no_exit_status_and_keeps_what_was_printed(sandbox):
    got = run(sandbox, "import sys\nprint('started', flush=True)\nwhile True:\n    pass\n")
    assert got.status is Status.TIMEOUT and got.timed_out
    assert got.exit_code is None
    assert got.stdout == "started\n"


def test_an_output_flood_is_killed_by_its_signal(sandbox):
    got = run(sandbox, "while True:\n    print('x' * 10000)\n")
    assert got.status is Status.OUTPUT_LIMIT
    assert got.exit_code == -25  # SIGXFSZ
    assert 0 < len(got.stdout) <= 8 << 20


def test_the_verdict_against_expected_stdout_is_unchanged(sandbox):
    assert run(sandbox, "print(input())", stdin="7\n", expected="7\n").status is Status.PASSED
    assert run(sandbox, "print(input())", stdin="7\n", expected="8\n").status is Status.WRONG_ANSWER


def test_streams_are_only_returned_when_asked(sandbox):
    tests = (TestCase("run", stdin="1\n", expected_stdout="1\n"),)
    plain = sandbox.execute([Job("print(input())", tests, limits=LIMITS)])[0]
    streams = sandbox.execute([Job("print(input())", tests, limits=LIMITS, capture_streams=True)])[0]
    assert plain.runs == () and not plain.cache_hit
    assert streams.runs[0].stdout == "1\n" and not streams.cache_hit  # a different cache entry
    assert plain == streams  # the same verdict


def test_capture_streams_needs_stdio_tests():
    with pytest.raises(ValueError, match="capture_streams needs stdin/stdout tests"):
        Job("def f(): return 1", (TestCase("f()", ("f()",), "assert _0 == 1"),), capture_streams=True)
