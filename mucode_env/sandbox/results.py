"""Verdicts of sandboxed executions: a status taxonomy and frozen result records."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Status(str, enum.Enum):
    """Outcome of one test, or of a whole execution (the first failing test's status).

    SANDBOX_ERROR is an infrastructure failure: it is retried and never scored as a model failure.
    """

    PASSED = "passed"
    WRONG_ANSWER = "wrong_answer"
    RUNTIME_ERROR = "runtime_error"
    COMPILE_ERROR = "compile_error"
    TIMEOUT = "timeout"
    MEMORY_LIMIT = "memory_limit"
    OUTPUT_LIMIT = "output_limit"
    NOT_RUN = "not_run"
    SANDBOX_ERROR = "sandbox_error"


@dataclass(frozen=True)
class TestOutcome:
    """One test's verdict, computed in the host.

    Attributes:
        status: PASSED, or why it failed.
        got: a short repr of what the program returned/printed (None when nothing came back).
        message: a human-readable reason (failing assert with the value, or the exception).
        traceback: the program's traceback, trimmed to the program's own frames ('' if none).
        duration_ms: time the child spent on this test.
    """

    __test__ = False

    status: Status
    got: str | None = None
    message: str = ""
    traceback: str = ""
    duration_ms: float = field(default=0.0, compare=False)  # timing is not part of the verdict

    @property
    def passed(self) -> bool:
        return self.status is Status.PASSED


@dataclass(frozen=True)
class ProgramRun:
    """What one stdin/stdout run of a program did, as raw streams (``Job(capture_streams=True)``).

    For callers that need the program's own output rather than a verdict (``mucode serve``'s
    SandboxFusion ``run_code``). The child produced all of it: treat it as untrusted text.

    Attributes:
        status: that run's outcome (TIMEOUT, MEMORY_LIMIT, RUNTIME_ERROR, ..., or PASSED /
            WRONG_ANSWER against the test's expected stdout).
        stdout: everything the program wrote to stdout (bounded by the output size limit).
        stderr: what it wrote to stderr (head and tail), then its traceback when an exception
            ended it, as a Python process would print it.
        exit_code: what a ``python`` process would exit with: 0, 1 after an uncaught exception,
            the code of ``sys.exit``/``os._exit``, -N when signal N killed it; None after a timeout.
            A run that ended without the child's report is never 0 (see ``checking.program_run``).
        wall_ms: the run's wall-clock time.
    """

    status: Status
    stdout: str = ""
    stderr: str = ""
    exit_code: int | None = 0
    wall_ms: float = field(default=0.0, compare=False)

    @property
    def timed_out(self) -> bool:
        return self.status is Status.TIMEOUT


@dataclass(frozen=True)
class ExecResult:
    """The verdict of running one program on a list of tests.

    Attributes:
        status: PASSED iff every test passed; else the status of the first failure, or a
            run-level status (COMPILE_ERROR, TIMEOUT, MEMORY_LIMIT, OUTPUT_LIMIT, SANDBOX_ERROR).
        tests: one outcome per test, in order.
        output: the program's stdout+stderr, head and tail, sanitised.
        output_truncated: whether ``output`` lost its middle.
        message: a run-level reason ("Timed out after 2.0 s", "Memory limit (1024 MB) exceeded").
        wall_ms / cpu_ms: the child's wall-clock and CPU time.
        run_delay_ms: time the child waited for a CPU while runnable (None: not reported).
        cache_hit: served from the result cache.
        runs: the raw streams of each stdin/stdout run, only for jobs built with
            ``capture_streams=True`` (else empty).
    """

    status: Status
    tests: tuple[TestOutcome, ...] = ()
    output: str = ""
    output_truncated: bool = False
    message: str = ""
    wall_ms: float = field(default=0.0, compare=False)  # equal results = same verdict and output
    cpu_ms: float = field(default=0.0, compare=False)
    run_delay_ms: float | None = field(default=None, compare=False)
    cache_hit: bool = field(default=False, compare=False)
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    runs: tuple[ProgramRun, ...] = field(default=(), compare=False)

    @property
    def passed(self) -> bool:
        return self.status is Status.PASSED

    @property
    def n_passed(self) -> int:
        return sum(t.passed for t in self.tests)

    @property
    def n_total(self) -> int:
        return len(self.tests)
