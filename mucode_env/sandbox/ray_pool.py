"""The sandbox spread over a Ray cluster: the local pool's contract, its jobs run on many nodes.

A :class:`RaySandbox` owns ``n_actors`` Ray actors; each actor owns an ordinary local
:class:`~mucode_env.sandbox.Sandbox` with one worker per CPU Ray gave it, on its own node. The
actor's pool runs and judges every program exactly as the local path does and sends back the
``ExecResult``; this process only de-duplicates, caches and routes. So a trainer on a GPU node
can step environments whose code runs on CPU nodes, with the same verdicts.

Ray is optional (``pip install 'mucode[ray]'``) and imported only when a RaySandbox is built.
Every node needs mucode installed (the actors import ``mucode_env``) and, for the jail tier,
bubblewrap; ``ray_options={"runtime_env": ...}`` can ship the package instead.
"""

from __future__ import annotations

import collections
import functools
import os
import threading
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from mucode_env.errors import SandboxError
from mucode_env.problem import TestCase
from mucode_env.sandbox.cache import ResultCache, run_once_each
from mucode_env.sandbox.executor import SharedPool
from mucode_env.sandbox.limits import SandboxLimits
from mucode_env.sandbox.pool import Job, Sandbox, SandboxConfig
from mucode_env.sandbox.results import ExecResult

INSTALL_HINT = "the Ray executor needs Ray: pip install 'mucode[ray]'"


@dataclass(frozen=True)
class RaySandboxConfig:
    """How the distributed sandbox is laid out.

    Attributes:
        address: the Ray cluster to join when this process has no Ray session yet ("auto", a
            GCS address "host:6379", "ray://host:10001"); None starts a local Ray (or follows
            ``RAY_ADDRESS``). A process that already called ``ray.init`` keeps its session.
        n_actors: sandbox actors, spread over the nodes.
        cpus_per_actor: CPUs Ray reserves for each actor; its pool gets one worker per CPU.
        max_in_flight_per_actor: jobs sent to one actor and not yet answered (backpressure).
            None: its workers plus a quarter (at least one), enough to hide the round trip
            without queueing much behind a slow program while other actors are idle.
        sandbox: the local pool each actor builds (``n_workers=None``: ``cpus_per_actor``).
        cache_size: verdicts kept by this process for identical jobs, whichever actor ran
            them; 0 disables the cache (identical jobs in one batch still run once).
        max_actor_failures: actor deaths in a row (no call answered in between) before
            ``execute`` gives up with SandboxError; each death re-runs that actor's jobs
            elsewhere and starts a replacement.
        start_timeout_s: how long to wait for actors to be placed and their pools to start
            (at construction, and during ``execute`` while no actor is alive).
        ray_options: extra ``ActorClass.options(...)`` for the actors, e.g.
            ``{"resources": {"cpu_node": 1}}`` or ``{"runtime_env": {...}}``.
    """

    address: str | None = None
    n_actors: int = 1
    cpus_per_actor: int = 1
    max_in_flight_per_actor: int | None = None
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    cache_size: int = 4096
    max_actor_failures: int = 8
    start_timeout_s: float = 300.0
    ray_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("n_actors", "cpus_per_actor", "max_actor_failures"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.max_in_flight_per_actor is not None and (
                not isinstance(self.max_in_flight_per_actor, int) or self.max_in_flight_per_actor < 1):
            raise ValueError(f"max_in_flight_per_actor must be a positive int or None (the actor's workers "
                             f"plus a quarter), got {self.max_in_flight_per_actor!r}")
        if not isinstance(self.sandbox, SandboxConfig):
            raise ValueError(f"sandbox must be a SandboxConfig, got {type(self.sandbox).__name__}")
        if not isinstance(self.cache_size, int) or self.cache_size < 0:
            raise ValueError(f"cache_size must be an int >= 0 (0 disables the cache), got {self.cache_size!r}")
        if not self.start_timeout_s > 0:
            raise ValueError(f"start_timeout_s must be a positive number of seconds, got {self.start_timeout_s!r}")
        reserved = {"num_cpus", "max_concurrency", "max_restarts", "max_task_retries"} & set(self.ray_options)
        if reserved:
            raise ValueError(f"ray_options must not set {sorted(reserved)}: use cpus_per_actor and "
                             f"max_in_flight_per_actor (restarts are handled by RaySandbox)")
        object.__setattr__(self, "ray_options", dict(self.ray_options))

    @property
    def workers_per_actor(self) -> int:
        return self.sandbox.n_workers or self.cpus_per_actor

    @property
    def in_flight_per_actor(self) -> int:
        workers = self.workers_per_actor
        return self.max_in_flight_per_actor or workers + max(1, workers // 4)


class SandboxActor:
    """The body of one Ray actor: a local Sandbox on the actor's node (no Ray inside).

    Calls may overlap (a threaded actor): the pool queues them on its workers. ``load()``
    reports the jobs it holds now and at most, which the driver's backpressure bounds.
    """

    def __init__(self, config: SandboxConfig) -> None:
        self.sandbox = Sandbox(config)
        self._held = self._peak_held = 0
        self._lock = threading.Lock()

    def describe(self) -> dict[str, Any]:
        """Where the actor runs and what it built: answered once its pool has started."""
        import ray

        return {"node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
                "tier": self.sandbox.tier, "n_workers": self.sandbox.n_workers}

    def execute(self, jobs: list[Job]) -> list[ExecResult]:
        with self._lock:
            self._held += len(jobs)
            self._peak_held = max(self._peak_held, self._held)
        try:
            return self.sandbox.execute(jobs)
        finally:
            with self._lock:
                self._held -= len(jobs)

    def load(self) -> dict[str, int]:
        with self._lock:
            return {"held": self._held, "peak_held": self._peak_held}

    def close(self) -> None:
        self.sandbox.close()


@functools.cache
def _remote_actor_class() -> Any:
    import ray

    return ray.remote(SandboxActor)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return ray


class _Slot:
    """One actor and the work it holds: ready once ``describe`` answered."""

    def __init__(self, handle: Any, describe_ref: Any) -> None:
        self.handle = handle
        self.describe_ref = describe_ref
        self.info: dict[str, Any] | None = None
        self.in_flight = 0

    @property
    def ready(self) -> bool:
        return self.info is not None


class RaySandbox(SharedPool):
    """An :class:`~mucode_env.sandbox.executor.Executor` whose jobs run on Ray actors.

    Same contract as the local ``Sandbox``: ``execute(jobs)`` returns one verdict per job in
    input order, identical jobs run once (cache shared across actors), SANDBOX_ERROR is never
    cached, ``close()`` (or ``with``) releases the actors. Each actor holds at most
    ``in_flight_per_actor`` jobs; when an actor or its node dies, its unanswered jobs run again
    on the others (only the answer that arrives counts) and a replacement actor is started.
    Batches from several threads are served one at a time.

    >>> with RaySandbox(RaySandboxConfig(address="auto", n_actors=4, cpus_per_actor=8)) as sb:  # doctest: +SKIP
    ...     env = gym.make("MuCode-MBPP-v0", sandbox=sb)
    """

    def __init__(self, config: RaySandboxConfig | None = None) -> None:
        self.config = config or RaySandboxConfig()
        ray = _import_ray()
        if not ray.is_initialized():
            ray.init(address=self.config.address)
        self._ray = ray
        self._actor_config = replace(self.config.sandbox, n_workers=self.config.workers_per_actor)
        self._cache = ResultCache(self.config.cache_size)
        self._lock = threading.Lock()
        self._slots: list[_Slot] = []
        self._closed = False
        self._rotation = 0
        self._failures_in_a_row = 0
        self.stats = {"executions": 0, "cache_hits": 0, "calls": 0, "resubmitted": 0,
                      "actor_failures": 0, "actors_started": 0}
        try:
            for _ in range(self.config.n_actors):
                self._slots.append(self._spawn())
            self._wait_until_started()
        except BaseException:
            self.close()
            raise

    # ---- public API --------------------------------------------------------------------------
    @property
    def n_workers(self) -> int:
        """Sandbox workers over all actors (the parallelism a caller can fill)."""
        return self.config.n_actors * self.config.workers_per_actor

    @property
    def actors(self) -> list[Any]:
        """The live actor handles (for inspection; the sandbox replaces dead ones itself)."""
        return [slot.handle for slot in self._slots]

    def actor_info(self) -> list[dict[str, Any]]:
        """Node id, pid, tier and workers of each started actor."""
        return [dict(slot.info) for slot in self._slots if slot.info is not None]

    def run(self, code: str, tests: Iterable[TestCase], setup: str = "", limits: SandboxLimits | None = None) -> ExecResult:
        """Run one program on ``tests``."""
        return self.execute([Job(code, tuple(tests), setup, limits)])[0]

    def execute(self, jobs: Iterable[Job]) -> list[ExecResult]:
        """Run every job on the actors; identical jobs run once. Results keep the input order.

        Raises:
            SandboxError: the sandbox is closed, or actors kept dying (``max_actor_failures``
                in a row) or could not be placed within ``start_timeout_s``.
        """
        if self._closed:
            raise SandboxError("this RaySandbox is closed")
        with self._lock:
            results = run_once_each(list(jobs), self.config.sandbox.default_limits, self._cache, self._run_unique)
            self.stats["cache_hits"] += sum(r.cache_hit for r in results)
        return results

    def close(self) -> None:
        """Close every actor's pool, then end the actors (idempotent). The Ray session stays."""
        if getattr(self, "_closed", True):  # closed already, or __init__ failed before any actor
            return
        self._closed = True
        slots, self._slots = self._slots, []
        ray = self._ray
        try:  # started actors clean up their pools (scratch dirs of the process tier) first
            refs = [slot.handle.close.remote() for slot in slots if slot.ready]
            if refs:
                ray.wait(refs, num_returns=len(refs), timeout=10.0)
        except Exception:  # a dead actor or a session already shut down: nothing left to close
            pass
        for slot in slots:
            self._kill(slot)

    # ---- actors --------------------------------------------------------------------------------
    def _spawn(self) -> _Slot:
        options = {"num_cpus": self.config.cpus_per_actor, "max_concurrency": self.config.in_flight_per_actor + 2,
                   "max_restarts": 0, "max_task_retries": 0, "scheduling_strategy": "SPREAD",
                   **self.config.ray_options}
        handle = _remote_actor_class().options(**options).remote(self._actor_config)
        self.stats["actors_started"] += 1
        return _Slot(handle, handle.describe.remote())

    def _kill(self, slot: _Slot) -> None:
        try:
            self._ray.kill(slot.handle, no_restart=True)
        except Exception:  # already dead, or the session is gone
            pass

    def _started(self, slot: _Slot) -> None:
        """Record a started actor (its ``describe`` answered) and warn about a weaker jail."""
        slot.info = self._ray.get(slot.describe_ref)
        slot.describe_ref = None
        if self.config.sandbox.tier == "auto" and slot.info["tier"] != "bwrap":
            warnings.warn(f"mucode RaySandbox: the actor on node {slot.info['node_id'][:12]} runs the "
                          f"{slot.info['tier']!r} tier (no bubblewrap there)", RuntimeWarning, stacklevel=3)

    def _wait_until_started(self) -> None:
        pending = {slot.describe_ref: slot for slot in self._slots}
        deadline = time.monotonic() + self.config.start_timeout_s
        while pending:
            ready, _ = self._ray.wait(list(pending), num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                raise SandboxError(self._unplaced_message(len(pending)))
            slot = pending.pop(ready[0])
            try:
                self._started(slot)
            except self._ray.exceptions.RayError as exc:
                raise SandboxError(f"a sandbox actor failed to start: {exc}") from None

    def _unplaced_message(self, n: int) -> str:
        try:
            available = self._ray.cluster_resources().get("CPU", 0)
        except Exception:
            available = "unknown"
        return (f"{n} sandbox actor(s) were not started within start_timeout_s={self.config.start_timeout_s} s: "
                f"{self.config.n_actors} actors x {self.config.cpus_per_actor} CPUs requested, the cluster has "
                f"{available} CPUs (lower n_actors/cpus_per_actor, add nodes, or check ray_options' resources)")

    def _replace(self, slot: _Slot, queue: collections.deque[int], in_flight: dict[Any, tuple[_Slot, int]],
                 reason: str) -> None:
        """An actor failed: put its unanswered jobs first in line, end it, start another."""
        self.stats["actor_failures"] += 1
        self._failures_in_a_row += 1
        lost = sorted(index for ref, (owner, index) in in_flight.items() if owner is slot)
        for ref in [ref for ref, (owner, _) in in_flight.items() if owner is slot]:
            del in_flight[ref]
        queue.extendleft(reversed(lost))
        self.stats["resubmitted"] += len(lost)
        self._kill(slot)
        if self._failures_in_a_row > self.config.max_actor_failures:
            self._slots.remove(slot)
            raise SandboxError(f"sandbox actors failed {self._failures_in_a_row} times in a row "
                               f"(max_actor_failures={self.config.max_actor_failures}); last: {reason}")
        self._slots[self._slots.index(slot)] = self._spawn()

    # ---- scheduling ------------------------------------------------------------------------------
    def _run_unique(self, jobs: list[Job]) -> list[ExecResult]:
        ray = self._ray
        results: list[ExecResult | None] = [None] * len(jobs)
        queue = collections.deque(range(len(jobs)))
        in_flight: dict[Any, tuple[_Slot, int]] = {}
        self._failures_in_a_row = 0
        while len(self._slots) < self.config.n_actors:  # an earlier execute gave up on a failing actor
            self._slots.append(self._spawn())
        stalled_since = time.monotonic()
        while queue or in_flight:
            self._dispatch(jobs, queue, in_flight)
            starting = {slot.describe_ref: slot for slot in self._slots if slot.describe_ref is not None}
            if not in_flight and not any(slot.ready for slot in self._slots):
                if time.monotonic() - stalled_since > self.config.start_timeout_s:
                    raise SandboxError(self._unplaced_message(len(starting)))
                timeout: float | None = 1.0
            else:
                stalled_since = time.monotonic()
                timeout = None
            waiting = [*in_flight, *starting]
            ready, rest = ray.wait(waiting, num_returns=1, timeout=timeout)
            if ready and rest:  # take every answer already there, not one per round
                ready += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
            for ref in ready:
                if ref in starting and starting[ref] in self._slots:
                    self._collect_start(starting[ref], queue, in_flight)
                elif ref in in_flight:  # not handed back by an actor failure met earlier in this round
                    self._collect(ref, results, queue, in_flight)
        return results  # type: ignore[return-value]

    def _dispatch(self, jobs: list[Job], queue: collections.deque[int], in_flight: dict[Any, tuple[_Slot, int]]) -> None:
        """Fill every started actor up to its in-flight bound, round robin, one job per call: a
        slow program then delays only its own answer, never a batch of others."""
        ready = [slot for slot in self._slots if slot.ready]
        if not ready:
            return
        self._rotation = (self._rotation + 1) % len(ready)
        ready = ready[self._rotation:] + ready[: self._rotation]
        capacity = self.config.in_flight_per_actor
        while queue:
            free = [slot for slot in ready if slot.in_flight < capacity]
            if not free:
                return
            for slot in free:
                if not queue:
                    return
                index = queue.popleft()
                in_flight[slot.handle.execute.remote([jobs[index]])] = (slot, index)
                slot.in_flight += 1
                self.stats["calls"] += 1

    def _collect_start(self, slot: _Slot, queue: collections.deque[int],
                       in_flight: dict[Any, tuple[_Slot, int]]) -> None:
        try:
            self._started(slot)
        except self._ray.exceptions.RayError as exc:
            self._replace(slot, queue, in_flight, f"an actor failed to start: {exc}")

    def _collect(self, ref: Any, results: list[ExecResult | None], queue: collections.deque[int],
                 in_flight: dict[Any, tuple[_Slot, int]]) -> None:
        slot, index = in_flight[ref]
        try:
            (result,) = self._ray.get(ref)
        except self._ray.exceptions.RayError as exc:  # the actor (or its node) died: all it held runs again
            self._replace(slot, queue, in_flight, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            return
        del in_flight[ref]
        slot.in_flight -= 1
        self._failures_in_a_row = 0
        results[index] = result
        if not result.cache_hit:
            self.stats["executions"] += 1
