"""One Python program run on a stdin, returning its raw streams: what ``run_code`` endpoints need.

The program runs in the sandbox as a stdin/stdout job with ``capture_streams`` (see
``mucode_env.sandbox.ProgramRun``), so it gets the jail, the limits and the seccomp filter of
every other execution; only the reporting differs.
"""

from __future__ import annotations

from dataclasses import replace

from mucode_env.problem import TestCase
from mucode_env.sandbox import ExecResult, Job, ProgramRun, SandboxLimits, Status

FINISHED = (Status.PASSED, Status.WRONG_ANSWER)  # the program ended normally (judged on its stdout)


def program_job(code: str, stdin: str | None, timeout_s: float, memory_mb: int | None = None,
                expected_stdout: str = "") -> Job:
    """The job that runs ``code`` once on ``stdin`` with a ``timeout_s`` wall-clock limit."""
    limits = replace(SandboxLimits(), per_test_s=float(timeout_s))
    if memory_mb is not None:
        limits = replace(limits, memory_mb=int(memory_mb))
    test = TestCase("program run", stdin=stdin or "", expected_stdout=expected_stdout)
    return Job(code, (test,), limits=limits, capture_streams=True)


def program_run(result: ExecResult) -> ProgramRun | None:
    """The run's streams, or None when the sandbox itself failed (``Status.SANDBOX_ERROR``)."""
    if result.status is Status.SANDBOX_ERROR or not result.runs:
        return None
    return result.runs[0]
