"""Bounded concurrency where every request gets an explicit answer: a slot, a 429, or a 503.

``max_concurrent`` requests execute at once; up to ``max_queue`` more wait (first come, first
served) for at most ``queue_timeout_s``. Beyond that the request is refused at once with
``Busy`` (HTTP 429). When the server shuts down, new requests get ``ShuttingDown`` (HTTP 503),
the running and queued ones may finish until the grace deadline, and then every request still
waiting for its result is answered ``ShuttingDown`` too: nothing is dropped without an answer.

All methods run on the event loop's thread (``release`` from elsewhere through
``loop.call_soon_threadsafe``).
"""

from __future__ import annotations

import asyncio
import collections

from mucode_env.errors import MuCodeError


class Busy(MuCodeError):
    """Every slot is busy and the queue is full, or the wait for a slot ran out: HTTP 429."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ShuttingDown(MuCodeError):
    """The server is shutting down and this request was not (or could not be) completed: HTTP 503."""


class Admission:
    """The gate in front of the sandbox (see the module docstring)."""

    def __init__(self, max_concurrent: int, max_queue: int, queue_timeout_s: float) -> None:
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self.queue_timeout_s = queue_timeout_s
        self.running = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.draining = False
        self._expired: asyncio.Future[None] | None = None
        self.counts = {"admitted": 0, "busy": 0, "shutting_down": 0, "expired": 0}

    @property
    def waiting(self) -> int:
        return sum(not w.done() for w in self._waiters)

    @property
    def idle(self) -> bool:
        return self.running == 0 and self.waiting == 0

    def expired(self) -> asyncio.Future[None]:
        """A future that completes when the shutdown grace period is over."""
        if self._expired is None:
            self._expired = asyncio.get_running_loop().create_future()
        return self._expired

    async def acquire(self) -> None:
        """Take a slot, waiting in the queue if allowed. Raises Busy or ShuttingDown."""
        if self.draining:
            self.counts["shutting_down"] += 1
            raise ShuttingDown("the server is shutting down and takes no new work; retry on another instance")
        if self.running < self.max_concurrent and not self.waiting:
            self.running += 1
            self.counts["admitted"] += 1
            return
        if self.waiting >= self.max_queue:
            self.counts["busy"] += 1
            raise Busy(f"server full: {self.max_concurrent} requests running and {self.max_queue} queued; "
                       f"retry later", retry_after_s=1.0)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            # release() hands its slot over by completing the future (running stays the same).
            await asyncio.wait_for(waiter, self.queue_timeout_s)
        except asyncio.TimeoutError:
            self.counts["busy"] += 1
            raise Busy(f"server full: no slot became free within {self.queue_timeout_s:g} s; retry later",
                       retry_after_s=max(1.0, self.queue_timeout_s)) from None
        finally:
            try:
                self._waiters.remove(waiter)
            except ValueError:
                pass
        self.counts["admitted"] += 1

    def release(self) -> None:
        """Give the slot to the next waiter, else free it."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.running -= 1

    def begin_drain(self) -> None:
        """Refuse new work from now on; running and queued requests carry on."""
        self.draining = True

    def expire(self) -> None:
        """The grace period is over: every queued or running request answers ShuttingDown now."""
        self.draining = True
        for waiter in list(self._waiters):
            if not waiter.done():
                waiter.set_exception(ShuttingDown("the server shut down before this request got a slot"))
        if self._expired is not None and not self._expired.done():
            self._expired.set_result(None)
