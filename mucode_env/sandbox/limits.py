"""Named limits for one sandboxed execution. Units are in the names."""

from __future__ import annotations

import math
from dataclasses import dataclass

DEFAULT_PER_TEST_S = 2.0
DEFAULT_TOTAL_CAP_S = 30.0
DEFAULT_MEMORY_MB = 1024
DEFAULT_CAPTURE_BYTES = 64 << 10
DEFAULT_FSIZE_MB = 8
DEFAULT_NOFILE = 256
DEFAULT_NPROC = 64
DEFAULT_TMPFS_MB = 64
DEFAULT_VALUE_BYTES = 1 << 20


@dataclass(frozen=True)
class SandboxLimits:
    """Hard limits applied from outside the untrusted program.

    Attributes:
        per_test_s: wall-clock budget per test (SIGALRM inside the child, plus the outer deadline).
        total_s: wall-clock deadline for a whole execution, enforced by SIGKILL of the child's
            process group from the zygote. None: ``min(DEFAULT_TOTAL_CAP_S, n_tests*per_test_s + 2)``.
        memory_mb: RLIMIT_AS of the child.
        capture_bytes: stdout+stderr kept (half head, half tail).
        fsize_mb: RLIMIT_FSIZE: any output or file beyond this kills the child (SIGXFSZ).
        nofile: RLIMIT_NOFILE.
        nproc: RLIMIT_NPROC for the child's unprivileged uid (threads count against it).
        value_bytes: the largest serialised return value a test may send back.
        allow_threads: False would be stricter, but threads are legitimate (numpy).
    """

    per_test_s: float = DEFAULT_PER_TEST_S
    total_s: float | None = None
    memory_mb: int = DEFAULT_MEMORY_MB
    capture_bytes: int = DEFAULT_CAPTURE_BYTES
    fsize_mb: int = DEFAULT_FSIZE_MB
    nofile: int = DEFAULT_NOFILE
    nproc: int = DEFAULT_NPROC
    value_bytes: int = DEFAULT_VALUE_BYTES

    def __post_init__(self) -> None:
        if not (self.per_test_s > 0 and math.isfinite(self.per_test_s)):
            raise ValueError(f"per_test_s must be a positive number of seconds, got {self.per_test_s!r}")
        if self.total_s is not None and not self.total_s > 0:
            raise ValueError(f"total_s must be positive or None, got {self.total_s!r}")
        for name in ("memory_mb", "capture_bytes", "fsize_mb", "nofile", "nproc", "value_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.memory_mb < 64:
            raise ValueError(f"memory_mb must be at least 64 (the interpreter needs it), got {self.memory_mb}")

    def deadline_s(self, n_tests: int) -> float:
        """Wall-clock deadline for an execution with ``n_tests`` tests."""
        if self.total_s is not None:
            return self.total_s
        return min(DEFAULT_TOTAL_CAP_S, max(1, n_tests) * self.per_test_s + 2.0)
