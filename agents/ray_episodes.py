"""Episodes spread over Ray actors: rollouts, evaluation and Best-of-N on a cluster.

What runs where:

- the driver (this process) selects the problems, splits the pending episodes into small chunks,
  hands them out (at most ``chunks_per_actor`` per actor) and receives each chunk's trajectories
  as it completes; :func:`agents.rollout.run_rollouts` writes them through its shard writer, so a
  driver killed mid-run resumes from its shards;
- ``n_actors`` episode actors, spread over the nodes, each with ``cpus_per_actor`` CPUs (and
  ``gpus_per_actor`` GPUs): each builds its policy replica once (a
  :class:`~agents.backends.spec.PolicySpec` built there, or a copy of a picklable policy; with
  ``endpoints`` an OpenAI-compatible client bound to one server, so an episode keeps its server
  across turns and the server's prefix cache is reused) and its own sandbox (a local pool on its
  node, or a :class:`~mucode_env.sandbox.RaySandbox` whose actors run on other nodes), and plays
  its chunks with the one episode engine (:func:`agents.episodes.play_episodes`).

Results do not depend on the spread: the engine gives a policy that takes ``seeds`` one seed per
episode and turn (:func:`agents.episodes.episode_seed`), and every chunk keeps its episodes'
indices in the whole run (what Best-of-N's seeded picks use). An actor or node that dies has its
chunks played again elsewhere and is replaced; only the answer that arrives counts, and every
episode is delivered once.

Ray is optional (``pip install 'mucode[ray]'``) and imported only when a runner starts. Every
node needs mucode installed (and bubblewrap for the jail tier); model paths must exist on every
node that builds a replica.

>>> config = RayEpisodesConfig(address="auto", n_actors=8, cpus_per_actor=4)  # doctest: +SKIP
>>> spec = PolicySpec("llama_cpp", "qwen2.5-coder-0.5b")
>>> run_rollouts(spec, replace(rollout_config, ray=config), "runs/r")  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from agents.backends.spec import PolicySpec
from agents.episodes import EpisodeSpec, EpisodeStats, accepts_seeds, play_episodes
from agents.policy import Policy
from agents.records import Trajectory
from mucode_env.errors import MuCodeError
from mucode_env.sandbox import RaySandboxConfig, SandboxConfig, SandboxLimits
from mucode_env.sandbox.ray_actors import ActorPool, ActorSlot, ray_session

__all__ = ["INSTALL_HINT", "RayEpisodes", "RayEpisodesConfig", "RayEpisodesError"]

INSTALL_HINT = "distributed episodes need Ray: pip install 'mucode[ray]'"
_RESERVED_OPTIONS = ("num_cpus", "num_gpus", "max_concurrency", "max_restarts", "max_task_retries")


class RayEpisodesError(MuCodeError):
    """Episode actors could not be placed or started, or kept dying."""


def _sandbox_config(value: Any) -> SandboxConfig | RaySandboxConfig | None:
    """A sandbox setting from a config file: a dict is a local pool's :class:`SandboxConfig`."""
    if value is None or isinstance(value, (SandboxConfig, RaySandboxConfig)):
        return value
    if isinstance(value, Mapping):
        d = dict(value)
        if isinstance(d.get("default_limits"), Mapping):
            d["default_limits"] = SandboxLimits(**d["default_limits"])
        if "preload" in d:
            d["preload"] = tuple(d["preload"])
        return SandboxConfig(**d)
    raise ValueError(f"sandbox must be a SandboxConfig, a RaySandboxConfig or None, got {type(value).__name__}")


@dataclass(frozen=True)
class RayEpisodesConfig:
    """Where episodes are played (the policy itself is given to the runner).

    Attributes:
        address: the Ray cluster to join when this process has no Ray session yet ("auto", a GCS
            address "host:6379", "ray://host:10001"); None: ``RAY_ADDRESS``, else a cluster
            started on this machine, else a new local one. A session already open is kept.
        n_actors: episode actors, spread over the nodes.
        cpus_per_actor: CPUs Ray reserves for each actor: its sandbox gets one worker per CPU and a
            llama.cpp replica as many threads (unless its kwargs set ``n_threads``).
        gpus_per_actor: GPUs reserved for each actor (a GPU model replica per actor).
        endpoints: OpenAI-compatible servers (vLLM, SGLang...), base URLs; actor k is bound to
            ``endpoints[k % len(endpoints)]`` (an ``openai`` :class:`PolicySpec` gets it as
            ``base_url``; other policies ignore it), so an episode keeps one server.
        sandbox: each actor's sandbox: a :class:`SandboxConfig` (a local pool on the actor's
            node; None: the default with ``cpus_per_actor`` workers) or a
            :class:`RaySandboxConfig` (the actor's programs run on sandbox actors elsewhere).
        chunk_size: episodes handed to an actor at once; what a killed driver or actor loses at
            most per chunk in flight, and the width of the actor's generate calls.
        chunks_per_actor: chunks sent to one actor and not yet answered (one playing, the rest
            queued so the actor never waits for the driver).
        max_actor_failures: actor deaths in a row (no chunk answered in between) before giving up.
        start_timeout_s: how long actors may take to be placed and build their policy and sandbox.
        ray_options: extra ``ActorClass.options(...)``, e.g. ``{"resources": {"gpu_node": 1}}``
            or ``{"runtime_env": {...}}``.
    """

    address: str | None = None
    n_actors: int = 1
    cpus_per_actor: int = 1
    gpus_per_actor: float = 0.0
    endpoints: tuple[str, ...] | None = None
    sandbox: SandboxConfig | RaySandboxConfig | None = None
    chunk_size: int = 4
    chunks_per_actor: int = 2
    max_actor_failures: int = 8
    start_timeout_s: float = 600.0
    ray_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("n_actors", "cpus_per_actor", "chunk_size", "chunks_per_actor", "max_actor_failures"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(self.gpus_per_actor, (int, float)) or self.gpus_per_actor < 0:
            raise ValueError(f"gpus_per_actor must be a number >= 0, got {self.gpus_per_actor!r}")
        if not self.start_timeout_s > 0:
            raise ValueError(f"start_timeout_s must be a positive number of seconds, got {self.start_timeout_s!r}")
        endpoints = self.endpoints
        if isinstance(endpoints, str):
            endpoints = [e.strip() for e in endpoints.split(",") if e.strip()]
        if endpoints is not None:
            endpoints = tuple(endpoints)
            bad = [e for e in endpoints if not str(e).startswith(("http://", "https://"))]
            if not endpoints or bad:
                raise ValueError(f"endpoints must be a non-empty list of http(s):// base URLs, got {self.endpoints!r}")
        object.__setattr__(self, "endpoints", endpoints)
        object.__setattr__(self, "sandbox", _sandbox_config(self.sandbox))
        reserved = sorted(set(_RESERVED_OPTIONS) & set(self.ray_options))
        if reserved:
            raise ValueError(f"ray_options must not set {reserved}: use cpus_per_actor and gpus_per_actor "
                             "(restarts and concurrency are handled by RayEpisodes)")
        object.__setattr__(self, "ray_options", dict(self.ray_options))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RayEpisodesConfig":
        """Read the dict ``asdict`` wrote (a config file); unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown RayEpisodesConfig keys {unknown}; allowed: {sorted(known)}")
        return cls(**d)

    def endpoint(self, k: int) -> str | None:
        """The server of actor slot ``k`` (None without endpoints)."""
        return self.endpoints[k % len(self.endpoints)] if self.endpoints else None

    @property
    def sandbox_for_actor(self) -> SandboxConfig | RaySandboxConfig:
        if self.sandbox is None:
            return SandboxConfig(n_workers=self.cpus_per_actor)
        return self.sandbox


# ---- the actor ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Task:
    """What one ``play`` call needs besides its episodes: put in the object store once per call."""

    env_id: str
    env_kwargs: dict[str, Any]
    play_kwargs: dict[str, Any]


def _build_policy(policy: Policy | PolicySpec, endpoint: str | None, cpus: int) -> Policy:
    if not isinstance(policy, PolicySpec):
        return policy  # a copy of a picklable policy object
    overrides: dict[str, Any] = {}
    if endpoint is not None and policy.backend == "openai":
        overrides["base_url"] = endpoint
    if policy.backend == "llama_cpp" and "n_threads" not in policy.kwargs:
        overrides["n_threads"] = cpus  # the CPUs Ray gave this actor, not half the node
    return policy.build(**overrides)


class EpisodeActor:
    """The body of one Ray actor: a policy replica and a sandbox, playing chunks of episodes."""

    def __init__(self, policy: Policy | PolicySpec, sandbox: SandboxConfig | RaySandboxConfig,
                 endpoint: str | None, cpus: int) -> None:
        from mucode_env.sandbox import RaySandbox, Sandbox

        self.endpoint = endpoint
        self.policy = _build_policy(policy, endpoint, cpus)
        self.sandbox = RaySandbox(sandbox) if isinstance(sandbox, RaySandboxConfig) else Sandbox(sandbox)
        self._task_id: str | None = None
        self._task: _Task | None = None

    def describe(self) -> dict[str, Any]:
        """Where the actor runs and what it built: answered once policy and sandbox are ready."""
        import ray

        return {"node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
                "tier": getattr(self.sandbox, "tier", "ray"), "endpoint": self.endpoint,
                "policy_name": str(getattr(self.policy, "name", type(self.policy).__name__)),
                "accepts_seeds": accepts_seeds(self.policy)}

    def play(self, task_box: list[Any], specs: list[EpisodeSpec],
             ids: list[int]) -> tuple[list[Trajectory], EpisodeStats]:
        """Play ``specs`` (episode indices ``ids`` in the run) with the task in ``task_box[0]``
        (an object reference, boxed so Ray does not fetch it again for every chunk)."""
        import gymnasium as gym
        import ray

        import mucode_env  # noqa: F401  (registers the environments in this process)

        (ref,) = task_box
        if ref.hex() != self._task_id:
            self._task, self._task_id = ray.get(ref), ref.hex()
        task = self._task
        env_kwargs = {**task.env_kwargs, "sandbox": self.sandbox}
        stats = EpisodeStats()
        trajs = play_episodes(self.policy, lambda: gym.make(task.env_id, disable_env_checker=True, **env_kwargs),
                              specs, episode_ids=ids, stats=stats, progress=False, **task.play_kwargs)
        return trajs, stats

    def close(self) -> None:
        self.sandbox.close()


@functools.cache
def _remote_actor_class() -> Any:
    import ray

    return ray.remote(EpisodeActor)


# ---- the driver -----------------------------------------------------------------------------------
class RayEpisodes:
    """Plays episodes on Ray actors, each with a replica of one policy (see the module docstring).

    Args:
        config: the layout.
        policy: a :class:`PolicySpec` (each actor builds it) or a picklable policy object (each
            actor gets a copy, e.g. a scripted policy).

    The actors start (policy and sandbox built) before the constructor returns; :meth:`play`
    can be called many times (Best-of-N repeats); :meth:`close` (or ``with``) ends them. The
    Ray session stays open.

    Raises:
        ImportError: Ray is not installed.
        RayEpisodesError: the actors could not be placed or started within ``start_timeout_s``.
    """

    def __init__(self, config: RayEpisodesConfig, policy: Policy | PolicySpec) -> None:
        self.config = config
        self._closed = True
        ray = ray_session(config.address, INSTALL_HINT)
        self._ray = ray
        try:
            self._policy_ref = ray.put(policy)
        except Exception as exc:  # an engine in memory does not pickle: its recipe does
            raise ValueError(f"the policy {type(policy).__name__} cannot be sent to Ray actors ({exc}); pass an "
                             "agents.backends.PolicySpec (backend, model, kwargs) instead") from exc
        self.stats = {"chunks": 0, "resubmitted_chunks": 0, "actor_failures": 0, "actors_started": 0}
        died = (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError, ray.exceptions.NodeDiedError,
                ray.exceptions.WorkerCrashedError)
        self._pool = ActorPool(ray, self._spawn, n_actors=config.n_actors, capacity=config.chunks_per_actor,
                               max_failures=config.max_actor_failures, start_timeout_s=config.start_timeout_s,
                               error=RayEpisodesError, what="episode actor", unplaced=self._unplaced_message,
                               died=died, stats=self.stats, resubmitted_key="resubmitted_chunks",
                               init_failed="an episode actor failed to build its policy or sandbox")
        self._pool.start()
        self._closed = False
        infos = self._pool.infos()  # every actor has started
        self.policy_name = infos[0]["policy_name"]
        if not all(info["accepts_seeds"] for info in infos):
            warnings.warn(f"policy {self.policy_name} takes no per-episode seeds: its samples depend on which "
                          "episodes share a generate call, so results change with the number of actors and "
                          "chunk_size", RuntimeWarning, stacklevel=2)

    def __enter__(self) -> "RayEpisodes":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- public API ------------------------------------------------------------------------------
    @property
    def actors(self) -> list[Any]:
        """The live actor handles (for inspection; dead ones are replaced by the runner)."""
        return self._pool.handles()

    def actor_info(self) -> list[dict[str, Any]]:
        """Node id, pid, sandbox tier, endpoint and policy name of each started actor."""
        return self._pool.infos()

    def play(
        self,
        env_id: str,
        env_kwargs: Mapping[str, Any],
        specs: Sequence[EpisodeSpec],
        /,
        *,
        on_done: Callable[[Trajectory], None] | None = None,
        on_round: Callable[[EpisodeStats], None] | None = None,
        stats: EpisodeStats | None = None,
        policy_name: str | None = None,
        progress: bool = False,
        progress_total: int | None = None,
        progress_desc: str = "episodes",
        episode_ids: Sequence[int] | None = None,
        **play_kwargs: Any,
    ) -> list[Trajectory]:
        """Play one episode per spec on the actors; returns the trajectories in spec order.

        Args:
            env_id, env_kwargs: what ``gym.make`` builds in each actor (``sandbox`` is the actor's
                own and must not be given).
            specs: the episodes.
            on_done: called here for each finished trajectory, as its chunk arrives (once each).
            on_round: called here after every wake-up (at least once a second while playing).
            stats: receives the actors' counters (their busy seconds summed, so ``tokens_per_s``
                is per replica); ``wall_s`` is this call's wall time (``episodes_per_min`` is the
                whole cluster's).
            policy_name: recorded in every trajectory (default: the first actor's policy name).
            progress, progress_total, progress_desc: a progress bar of finished episodes.
            episode_ids: each spec's episode index in the whole run (default: its position), as
                selectors and policies see it: a resumed run that plays only the missing episodes
                keeps their indices, and so their picks.
            play_kwargs: :func:`agents.episodes.play_episodes` arguments (``sampling``, ``n``,
                ``select``, ``score_fn``, ``max_live``, ``env_id``, ``seed``,
                ``sampling_record``), sent to the actors (they must pickle).

        Raises:
            RayEpisodesError: actors kept dying or could not be placed.
            Any error an episode raised in an actor (a bad policy answer, a SandboxError).
        """
        if self._closed:
            raise RayEpisodesError("this RayEpisodes is closed")
        if "sandbox" in env_kwargs:
            raise ValueError("env_kwargs must not set 'sandbox': each episode actor uses its own "
                             "(RayEpisodesConfig.sandbox)")
        for key in ("on_turn", "progress"):
            if key in play_kwargs:
                raise ValueError(f"play does not take {key!r} (it runs in the actors)")
        ray = self._ray
        stats = stats if stats is not None else EpisodeStats()
        start = time.perf_counter()
        play_kwargs = {**play_kwargs, "env_id": play_kwargs.get("env_id", env_id),
                       "policy_name": self.policy_name if policy_name is None else policy_name}
        task_ref = ray.put(_Task(env_id, dict(env_kwargs), play_kwargs))
        size = self.config.chunk_size
        chunks = [list(range(i, min(i + size, len(specs)))) for i in range(0, len(specs), size)]
        ids = list(range(len(specs))) if episode_ids is None else [int(i) for i in episode_ids]
        if len(ids) != len(specs):
            raise ValueError(f"episode_ids has {len(ids)} entries for {len(specs)} specs")
        done: list[Trajectory | None] = [None] * len(specs)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            total = progress_total if progress_total is not None else len(specs)
            bar = tqdm(total=total, initial=total - len(specs), desc=progress_desc, unit="ep")

        def submit(slot: ActorSlot, chunk: int) -> Any:
            self.stats["chunks"] += 1
            members = chunks[chunk]
            return slot.handle.play.remote([task_ref], [specs[i] for i in members], [ids[i] for i in members])

        def on_result(chunk: int, value: tuple[list[Trajectory], EpisodeStats]) -> None:
            trajs, chunk_stats = value
            stats.add(chunk_stats)
            for traj_index, traj in zip(chunks[chunk], trajs):
                if done[traj_index] is None:  # every episode is delivered once
                    done[traj_index] = traj
                    if bar is not None:
                        bar.update(1)
                    if on_done is not None:
                        on_done(traj)

        try:
            self._pool.run(len(chunks), submit, on_result,
                           on_round=None if on_round is None else (lambda: on_round(stats)))
        finally:
            if bar is not None:
                bar.close()
            stats.wall_s += time.perf_counter() - start
        return done  # type: ignore[return-value]

    def close(self) -> None:
        """Close every actor's sandbox, then end the actors (idempotent). The Ray session stays."""
        if self._closed:
            return
        self._closed = True
        self._pool.close()

    # ---- actors ----------------------------------------------------------------------------------
    def _spawn(self, k: int) -> Any:
        config = self.config
        options = {"num_cpus": config.cpus_per_actor, "num_gpus": config.gpus_per_actor, "max_concurrency": 1,
                   "max_restarts": 0, "max_task_retries": 0, "scheduling_strategy": "SPREAD",
                   **config.ray_options}
        return _remote_actor_class().options(**options).remote(
            self._policy_ref, config.sandbox_for_actor, config.endpoint(k), config.cpus_per_actor)

    def _unplaced_message(self, n: int) -> str:
        try:
            available = self._ray.cluster_resources()
            have = f"{available.get('CPU', 0)} CPUs and {available.get('GPU', 0)} GPUs"
        except Exception:
            have = "unknown resources"
        c = self.config
        return (f"{n} episode actor(s) were not started within start_timeout_s={c.start_timeout_s} s: "
                f"{c.n_actors} actors x {c.cpus_per_actor} CPUs (+{c.gpus_per_actor} GPUs) requested, the cluster "
                f"has {have} (lower n_actors/cpus_per_actor, add nodes, or check ray_options' resources)")
