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

import functools
import os
import threading
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
from mucode_env.sandbox.ray_actors import ActorPool, ActorSlot, ray_session
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
        self._closed = True  # until the actors start
        ray = ray_session(self.config.address, INSTALL_HINT)
        self._ray = ray
        self._actor_config = replace(self.config.sandbox, n_workers=self.config.workers_per_actor)
        self._cache = ResultCache(self.config.cache_size)
        self._lock = threading.Lock()
        self.stats = {"executions": 0, "cache_hits": 0, "calls": 0, "resubmitted": 0,
                      "actor_failures": 0, "actors_started": 0}
        c = self.config
        self._pool = ActorPool(ray, self._spawn, n_actors=c.n_actors, capacity=c.in_flight_per_actor,
                               max_failures=c.max_actor_failures, start_timeout_s=c.start_timeout_s,
                               error=SandboxError, what="sandbox actor", unplaced=self._unplaced_message,
                               died=(ray.exceptions.RayError,), on_started=self._warn_weaker_jail, stats=self.stats)
        self._pool.start()
        self._closed = False

    # ---- public API --------------------------------------------------------------------------
    @property
    def n_workers(self) -> int:
        """Sandbox workers over all actors (the parallelism a caller can fill)."""
        return self.config.n_actors * self.config.workers_per_actor

    @property
    def actors(self) -> list[Any]:
        """The live actor handles (for inspection; the sandbox replaces dead ones itself)."""
        return self._pool.handles()

    def actor_info(self) -> list[dict[str, Any]]:
        """Node id, pid, tier and workers of each started actor."""
        return self._pool.infos()

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
        if getattr(self, "_closed", True):  # closed already, or __init__ failed before the actors
            return
        self._closed = True
        self._pool.close()

    # ---- actors --------------------------------------------------------------------------------
    def _spawn(self, index: int) -> Any:
        options = {"num_cpus": self.config.cpus_per_actor, "max_concurrency": self.config.in_flight_per_actor + 2,
                   "max_restarts": 0, "max_task_retries": 0, "scheduling_strategy": "SPREAD",
                   **self.config.ray_options}
        return _remote_actor_class().options(**options).remote(self._actor_config)

    def _warn_weaker_jail(self, slot: ActorSlot) -> None:
        if self.config.sandbox.tier == "auto" and slot.info and slot.info["tier"] != "bwrap":
            warnings.warn(f"mucode RaySandbox: the actor on node {slot.info['node_id'][:12]} runs the "
                          f"{slot.info['tier']!r} tier (no bubblewrap there)", RuntimeWarning, stacklevel=3)

    def _unplaced_message(self, n: int) -> str:
        try:
            available = self._ray.cluster_resources().get("CPU", 0)
        except Exception:
            available = "unknown"
        return (f"{n} sandbox actor(s) were not started within start_timeout_s={self.config.start_timeout_s} s: "
                f"{self.config.n_actors} actors x {self.config.cpus_per_actor} CPUs requested, the cluster has "
                f"{available} CPUs (lower n_actors/cpus_per_actor, add nodes, or check ray_options' resources)")

    # ---- scheduling ------------------------------------------------------------------------------
    def _run_unique(self, jobs: list[Job]) -> list[ExecResult]:
        """One job per call (a slow program delays only its own answer), on the actors' bound."""
        results: list[ExecResult | None] = [None] * len(jobs)

        def submit(slot: ActorSlot, index: int) -> Any:
            self.stats["calls"] += 1
            return slot.handle.execute.remote([jobs[index]])

        def on_result(index: int, value: list[ExecResult]) -> None:
            (result,) = value
            results[index] = result
            if not result.cache_hit:
                self.stats["executions"] += 1

        self._pool.run(len(jobs), submit, on_result)
        return results  # type: ignore[return-value]
