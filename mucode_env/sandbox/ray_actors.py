"""A pool of Ray actors serving units of work: placement, bounded calls in flight, dead actors
replaced and their work run again.

Both Ray executors drive their actors through it: :class:`~mucode_env.sandbox.RaySandbox` (a unit
is one job) and ``agents.ray_episodes.RayEpisodes`` (a unit is a chunk of episodes). They differ
only in what a call sends and what an answer means, which they pass in as ``submit`` and
``on_result``. Hand-written because ``ray.util.ActorPool`` holds one call per actor, neither
replaces a dead actor nor re-submits its calls, and has no start-up deadline.

Ray is imported when a caller opens its session (:func:`ray_session`), never at import time.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import Any

__all__ = ["ActorPool", "ActorSlot", "ray_session"]


def ray_session(address: str | None, hint: str) -> Any:
    """The ``ray`` module with a session open: this process's own if it has one, else one joined
    at ``address`` (None: a local Ray, or ``RAY_ADDRESS``). ImportError with ``hint`` (how to
    install Ray) when it is missing."""
    try:
        import ray
    except ImportError as exc:
        raise ImportError(hint) from exc
    if not ray.is_initialized():
        ray.init(address=address)
    return ray


class ActorSlot:
    """One actor (``index`` is its place in the pool, which a replacement keeps) and the calls it
    holds; ready once its ``describe()`` answered (its constructor finished)."""

    def __init__(self, index: int, handle: Any, describe_ref: Any) -> None:
        self.index = index
        self.handle = handle
        self.describe_ref = describe_ref
        self.info: dict[str, Any] | None = None
        self.in_flight = 0

    @property
    def ready(self) -> bool:
        return self.info is not None


class ActorPool:
    """``n_actors`` actors, each serving at most ``capacity`` calls at once.

    Args:
        ray: the ``ray`` module (a session is open).
        spawn: ``spawn(index)`` creates the actor of slot ``index`` and returns its handle; the
            actor class must have ``describe() -> dict`` (answered once it is built) and ``close()``.
        n_actors, capacity: actors, and calls each may hold unanswered (backpressure).
        max_failures: actor deaths in a row (no answer in between) before :meth:`run` gives up.
        start_timeout_s: how long to wait for actors to be placed and built.
        error: the exception type raised (``SandboxError``, ``RayEpisodesError``).
        what: how messages name an actor (``"sandbox actor"``).
        unplaced: ``unplaced(n)`` explains why ``n`` actors are not placed (resources asked, had).
        died: exceptions of ``ray.get`` that mean the actor (or its node) is gone: its calls run
            again elsewhere. Others propagate (an error the work itself raised).
        on_started: called with each slot once it is ready (a warning about a weaker jail).
        stats: counters updated in place: ``actors_started``, ``actor_failures`` and
            ``resubmitted_key`` (units run again after a death).
        init_failed: the message's start when an actor's constructor raised.

    An actor whose constructor raised is a configuration error (raised at once, not replaced).
    """

    def __init__(self, ray: Any, spawn: Callable[[int], Any], *, n_actors: int, capacity: int, max_failures: int,
                 start_timeout_s: float, error: type[Exception], what: str, unplaced: Callable[[int], str],
                 died: tuple[type[BaseException], ...], on_started: Callable[[ActorSlot], None] | None = None,
                 stats: dict[str, int] | None = None, resubmitted_key: str = "resubmitted",
                 init_failed: str | None = None) -> None:
        self._ray = ray
        self._spawn_handle = spawn
        self.n_actors, self.capacity, self.max_failures = n_actors, capacity, max_failures
        self.start_timeout_s = start_timeout_s
        self._error, self._what, self._unplaced, self._died = error, what, unplaced, died
        self._on_started = on_started
        self._init_failed = init_failed or f"a {what} failed to start (its constructor raised)"
        self.stats = stats if stats is not None else {}
        for key in ("actors_started", "actor_failures", resubmitted_key):
            self.stats.setdefault(key, 0)
        self._resubmitted_key = resubmitted_key
        self.slots: list[ActorSlot] = []
        self._failures_in_a_row = 0
        self._rotation = 0
        self._closed = False

    def handles(self) -> list[Any]:
        """The live actor handles (dead ones are replaced by :meth:`run`)."""
        return [slot.handle for slot in self.slots]

    def infos(self) -> list[dict[str, Any]]:
        """What each started actor's ``describe()`` answered."""
        return [dict(slot.info) for slot in self.slots if slot.info is not None]

    # ---- life cycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Create every actor and wait until all are built (closes the pool if that fails).

        Raises:
            error: an actor was not placed within ``start_timeout_s``, its constructor raised,
                or it died while starting.
        """
        try:
            self.slots = [self._spawn(k) for k in range(self.n_actors)]
            pending = {slot.describe_ref: slot for slot in self.slots}
            deadline = time.monotonic() + self.start_timeout_s
            while pending:
                ready, _ = self._ray.wait(list(pending), num_returns=1,
                                          timeout=max(0.0, deadline - time.monotonic()))
                if not ready:
                    raise self._error(self._unplaced(len(pending)))
                slot = pending.pop(ready[0])
                try:
                    self._started(slot)
                except self._died as exc:
                    raise self._error(f"a {self._what} died while starting: {exc}") from None
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Let started actors ``close()`` (clean up), then end every actor (idempotent)."""
        if self._closed:
            return
        self._closed = True
        slots, self.slots = self.slots, []
        try:
            refs = [slot.handle.close.remote() for slot in slots if slot.ready]
            if refs:
                self._ray.wait(refs, num_returns=len(refs), timeout=10.0)
        except Exception:  # a dead actor or a session already shut down: nothing left to close
            pass
        for slot in slots:
            self._kill(slot)

    # ---- work --------------------------------------------------------------------------------------
    def run(self, n_units: int, submit: Callable[[ActorSlot, int], Any], on_result: Callable[[int, Any], None],
            on_round: Callable[[], None] | None = None) -> None:
        """Serve units ``0..n_units-1``: ``submit(slot, unit)`` sends one to an actor and returns
        the object reference; ``on_result(unit, value)`` receives its answer (once per unit).
        Free actors are filled least-loaded first (ties in turn), one unit per call, so a slow
        unit delays only its own answer. ``on_round`` is called after every wake-up (at least
        once a second).

        Raises:
            error: actors kept dying (``max_failures`` in a row) or none could be placed within
                ``start_timeout_s``.
            Any exception of the work that is not a death (``died``).
        """
        if self._closed:
            raise self._error(f"this {self._what} pool is closed")
        queue: collections.deque[int] = collections.deque(range(n_units))
        in_flight: dict[Any, tuple[ActorSlot, int]] = {}
        self._failures_in_a_row = 0
        taken = {slot.index for slot in self.slots}  # an earlier run gave up on a failing actor
        self.slots += [self._spawn(k) for k in range(self.n_actors) if k not in taken]
        self.slots.sort(key=lambda s: s.index)
        stalled_since = time.monotonic()
        while queue or in_flight:
            self._dispatch(queue, in_flight, submit)
            starting = {slot.describe_ref: slot for slot in self.slots if slot.describe_ref is not None}
            if in_flight or any(slot.ready for slot in self.slots):
                stalled_since = time.monotonic()
            elif time.monotonic() - stalled_since > self.start_timeout_s:
                raise self._error(self._unplaced(len(starting)))
            waiting = [*in_flight, *starting]
            if not waiting:  # cannot happen while every slot is started or starting
                raise self._error(f"no {self._what} is started or starting; work is left over")
            ready, rest = self._ray.wait(waiting, num_returns=1, timeout=1.0)
            if ready and rest:  # take every answer already there, not one per wake-up
                ready += self._ray.wait(rest, num_returns=len(rest), timeout=0)[0]
            for ref in ready:
                if ref in starting and starting[ref] in self.slots:
                    try:
                        self._started(starting[ref])
                    except self._died as exc:
                        self._replace(starting[ref], queue, in_flight, f"an actor died while starting: {exc}")
                elif ref in in_flight:  # not handed back by an actor death met earlier in this round
                    slot, unit = in_flight[ref]
                    try:
                        value = self._ray.get(ref)
                    except self._died as exc:  # the actor (or its node) died: its units run again
                        self._replace(slot, queue, in_flight, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                        continue
                    del in_flight[ref]
                    slot.in_flight -= 1
                    self._failures_in_a_row = 0
                    on_result(unit, value)
            if on_round is not None:
                on_round()

    # ---- internals -------------------------------------------------------------------------------
    def _spawn(self, index: int) -> ActorSlot:
        handle = self._spawn_handle(index)
        self.stats["actors_started"] += 1
        return ActorSlot(index, handle, handle.describe.remote())

    def _kill(self, slot: ActorSlot) -> None:
        try:
            self._ray.kill(slot.handle, no_restart=True)
        except Exception:  # already dead, or the session is gone
            pass

    def _started(self, slot: ActorSlot) -> None:
        try:
            slot.info = self._ray.get(slot.describe_ref)
        except self._ray.exceptions.RayActorError as exc:
            if getattr(exc, "actor_init_failed", False):
                raise self._error(f"{self._init_failed}: {exc}") from None
            raise
        slot.describe_ref = None
        if self._on_started is not None:
            self._on_started(slot)

    def _dispatch(self, queue: collections.deque[int], in_flight: dict[Any, tuple[ActorSlot, int]],
                  submit: Callable[[ActorSlot, int], Any]) -> None:
        ready = [slot for slot in self.slots if slot.ready]
        if not ready:
            return
        self._rotation = (self._rotation + 1) % len(ready)
        ready = ready[self._rotation:] + ready[: self._rotation]
        while queue:
            free = sorted((slot for slot in ready if slot.in_flight < self.capacity), key=lambda s: s.in_flight)
            if not free:
                return
            for slot in free:
                if not queue:
                    return
                unit = queue.popleft()
                in_flight[submit(slot, unit)] = (slot, unit)
                slot.in_flight += 1

    def _replace(self, slot: ActorSlot, queue: collections.deque[int], in_flight: dict[Any, tuple[ActorSlot, int]],
                 reason: str) -> None:
        """An actor died: its units go first in line, it is ended and another takes its slot."""
        self.stats["actor_failures"] += 1
        self._failures_in_a_row += 1
        lost = sorted(unit for owner, unit in in_flight.values() if owner is slot)
        for ref in [ref for ref, (owner, _) in in_flight.items() if owner is slot]:
            del in_flight[ref]
        queue.extendleft(reversed(lost))
        self.stats[self._resubmitted_key] += len(lost)
        self._kill(slot)
        if self._failures_in_a_row > self.max_failures:
            self.slots.remove(slot)
            raise self._error(f"{self._what}s died {self._failures_in_a_row} times in a row "
                              f"(max_actor_failures={self.max_failures}); last: {reason}")
        self.slots[self.slots.index(slot)] = self._spawn(slot.index)
