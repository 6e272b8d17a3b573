"""What an environment needs from a sandbox, so that any executor can stand in for the local pool."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol, Self, runtime_checkable

if TYPE_CHECKING:
    from mucode_env.sandbox.pool import Job
    from mucode_env.sandbox.results import ExecResult


@runtime_checkable
class Executor(Protocol):
    """Runs jobs and returns their verdicts in input order; ``close`` releases its workers.

    The local :class:`~mucode_env.sandbox.Sandbox` and the Ray front-end
    (``mucode_env.sandbox.ray_pool.RaySandbox``) both satisfy it; environments take either
    through ``sandbox=``. An implementation must judge exactly as the local pool does (it may
    simply run one), never cache a SANDBOX_ERROR, and raise ``SandboxError`` once closed.
    """

    def execute(self, jobs: Iterable["Job"]) -> list["ExecResult"]: ...

    def close(self) -> None: ...


class SharedPool:
    """Base of the executors: a pool of live workers is a shared resource, not a value.

    Copies are the pool itself (``gym.make`` deep-copies its kwargs, and every environment must
    keep using the one pool it was given); ``with`` and garbage collection close it.
    Subclasses define ``close`` (idempotent).
    """

    def close(self) -> None:
        raise NotImplementedError

    def __deepcopy__(self, memo: dict) -> Self:
        return self

    def __copy__(self) -> Self:
        return self

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: the processes die with us anyway
            pass
