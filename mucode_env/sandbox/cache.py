"""Identical jobs run once: a verdict cache and the batch de-duplication every executor shares.

The local pool and the Ray front-end both serve a batch through :func:`run_once_each`, so the
cache key, what is cached (never an infrastructure failure) and the ``cache_hit`` marks are the
same whichever executor an environment was given.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from mucode_env.errors import SandboxError
from mucode_env.sandbox.limits import SandboxLimits
from mucode_env.sandbox.results import ExecResult, Status

if TYPE_CHECKING:
    from mucode_env.sandbox.pool import Job


class ResultCache:
    """A thread-safe LRU of verdicts keyed by ``Job.key``; size 0 disables it."""

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError(f"cache size must be >= 0, got {size}")
        self.size = size
        self._entries: OrderedDict[Hashable, ExecResult] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> ExecResult | None:
        """The cached verdict marked ``cache_hit``, or None."""
        if not self.size:
            return None
        with self._lock:
            result = self._entries.get(key)
            if result is None:
                return None
            self._entries.move_to_end(key)
        return replace(result, cache_hit=True)

    def put(self, key: Hashable, result: ExecResult) -> None:
        """Keep ``result`` unless it is an infrastructure failure (those are retried, not cached)."""
        if not self.size or result.status is Status.SANDBOX_ERROR:
            return
        with self._lock:
            self._entries[key] = result
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)


def run_once_each(jobs: Sequence["Job"], default_limits: SandboxLimits, cache: ResultCache,
                  run: Callable[[list["Job"]], list[ExecResult]]) -> list[ExecResult]:
    """Verdicts for ``jobs`` in input order: cached ones served, the rest de-duplicated and
    handed to ``run`` (which returns one result per job it was given, in order).

    Copies of a job within the batch and cache hits come back with ``cache_hit=True``.
    """
    from mucode_env.sandbox.pool import Job  # pool imports this module

    results: list[ExecResult | None] = [None] * len(jobs)
    pending: dict[Hashable, list[int]] = {}
    for index, job in enumerate(jobs):
        if not isinstance(job, Job):
            raise TypeError(f"execute() takes Job objects, got {type(job).__name__} at index {index}")
        key = job.key(job.limits or default_limits)
        cached = cache.get(key)
        if cached is not None:
            results[index] = cached
        else:
            pending.setdefault(key, []).append(index)
    fresh = run([jobs[indices[0]] for indices in pending.values()]) if pending else []
    if len(fresh) != len(pending):
        raise SandboxError(f"the executor returned {len(fresh)} results for {len(pending)} jobs")
    for (key, indices), result in zip(pending.items(), fresh):
        cache.put(key, result)
        for n, index in enumerate(indices):
            results[index] = result if n == 0 else replace(result, cache_hit=True)
    return results  # type: ignore[return-value]
