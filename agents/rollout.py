"""Batched multi-turn rollouts of a policy in MuCode environments, stored and resumable.

Every turn, all live episodes are sent to the policy in one ``generate`` call and their programs
are run in one sandbox batch (:func:`mucode_env.step_batch`). Finished episodes are written in
Parquet shards keyed by ``(problem_id, sample_index)``; a run that is interrupted and started
again with the same ``out_dir`` skips the finished keys, so no episode is lost or duplicated.
At the end all shards are consolidated into one Hugging Face ``datasets`` Parquet table
(``out_dir/trajectories/``), written to a temporary directory and renamed.

>>> from agents.rollout import RolloutConfig, collect_rollouts
>>> trajs = collect_rollouts(policy, RolloutConfig("MuCode-MBPP-v0", limit=5, n=2))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from agents.backends.spec import PolicySpec
from agents.episodes import EpisodeSpec, EpisodeStats, derive_seed, play_episodes
from agents.policy import Policy, SamplingParams
from agents.ray_episodes import RayEpisodesConfig
from agents.episode_store import EpisodeStore, load_trajectories, trajectory_features, write_trajectories
from agents.records import Trajectory, jsonable
from mucode_env.atomic import write_json_atomic

__all__ = [
    "RolloutConfig",
    "RolloutResult",
    "collect_rollouts",
    "load_trajectories",
    "run_rollouts",
    "trajectory_features",
    "write_trajectories",
]

log = logging.getLogger(__name__)

_MANIFEST = "rollout.json"
_FINAL = "trajectories"


@dataclass(frozen=True)
class RolloutConfig:
    """What to roll out.

    Attributes:
        env_id: a registered MuCode environment id.
        split: dataset split (``None``: the environment id's default).
        problem_ids: restrict to these problems, in this order (``None``: the whole split).
        limit: keep only the first ``limit`` problems (after ``problem_ids``).
        n: episodes (samples) per problem.
        sampling: how each turn is sampled; its ``n`` must be 1 (use ``n`` above) and its seed is
            replaced per generation call by one derived from ``seed``.
        max_turns: the turn limit T.
        seed: the run's seed.
        env_kwargs: extra environment arguments (``termination``, ``reward_mode``, ``data_dir``,
            ``sandbox``...).
        max_live_episodes: how many episodes are in flight (the generation batch width).
        shard_size: finished episodes per Parquet shard.
        shard_interval_s: also write a shard when finished episodes have waited this long, so an
            interrupted run loses at most ``shard_size`` episodes or this many seconds of work.
        progress: show a tqdm progress bar.
        continuous: play each episode on as soon as its last turn ran instead of in rounds
            (:func:`agents.episodes.play_episodes`; ``None``: where the policy allows it). Not part
            of the run's identity: the episodes are the same either way.
        ray: play the episodes on Ray actors (:class:`agents.ray_episodes.RayEpisodesConfig`);
            None plays them here. Not part of the run's identity: a run started here may resume
            on a cluster and back, with the same results for policies that take per-episode
            seeds (see :mod:`agents.episodes`).
    """

    env_id: str = "MuCode-MBPP-v0"
    split: str | None = None
    problem_ids: tuple[str, ...] | None = None
    limit: int | None = None
    n: int = 1
    sampling: SamplingParams = field(default_factory=SamplingParams)
    max_turns: int = 3
    seed: int = 0
    env_kwargs: Mapping[str, Any] = field(default_factory=dict)
    max_live_episodes: int = 64
    shard_size: int = 32
    shard_interval_s: float = 60.0
    progress: bool = True
    continuous: bool | None = None
    ray: RayEpisodesConfig | None = None

    def __post_init__(self) -> None:
        if isinstance(self.ray, Mapping):
            object.__setattr__(self, "ray", RayEpisodesConfig.from_dict(self.ray))
        if self.ray is not None and not isinstance(self.ray, RayEpisodesConfig):
            raise ValueError(f"ray must be a RayEpisodesConfig or None, got {type(self.ray).__name__}")
        if self.ray is not None and "sandbox" in self.env_kwargs:
            raise ValueError("env_kwargs must not set 'sandbox' with ray: each episode actor builds its own "
                             "(set RayEpisodesConfig.sandbox)")
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.sampling.n != 1:
            raise ValueError(
                f"sampling.n must be 1 in a rollout (got {self.sampling.n}); set RolloutConfig.n for samples per problem"
            )
        if self.max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {self.max_turns}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1 or None, got {self.limit}")
        if self.max_live_episodes < 1:
            raise ValueError(f"max_live_episodes must be >= 1, got {self.max_live_episodes}")
        if self.shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {self.shard_size}")
        if self.shard_interval_s <= 0:
            raise ValueError(f"shard_interval_s must be > 0, got {self.shard_interval_s}")
        if isinstance(self.problem_ids, str):
            raise TypeError("problem_ids must be a sequence of ids, not a single string")
        if self.problem_ids is not None:
            object.__setattr__(self, "problem_ids", tuple(self.problem_ids))
        for key in ("split", "max_turns", "problem_ids", "problems"):
            if key in self.env_kwargs:
                raise ValueError(f"env_kwargs must not set {key!r}: it is a RolloutConfig field (or set by the rollout)")

    def identity(self) -> dict[str, Any]:
        """The JSON-able fields that must match for a resumed run (``sandbox`` objects excluded)."""
        env_kwargs = {k: v for k, v in sorted(self.env_kwargs.items()) if k != "sandbox"}
        out = {
            "env_id": self.env_id,
            "split": self.split,
            "max_turns": self.max_turns,
            "seed": self.seed,
            "sampling": jsonable(asdict(self.sampling)),
            "env_kwargs": jsonable(env_kwargs),
        }
        return out


@dataclass
class RolloutResult:
    """What :func:`run_rollouts` returns: the trajectories (config order) and this run's stats."""

    trajectories: list[Trajectory]
    stats: EpisodeStats
    problem_ids: list[str]
    out_dir: Path | None = None


def collect_rollouts(policy: Policy | PolicySpec, config: RolloutConfig,
                     out_dir: str | os.PathLike | None = None) -> list[Trajectory]:
    """Roll ``policy`` out on ``config``'s problems; see :func:`run_rollouts`.

    Returns:
        One :class:`~agents.records.Trajectory` per (problem, sample), ordered by problem then sample.
    """
    return run_rollouts(policy, config, out_dir).trajectories


def run_rollouts(policy: Policy | PolicySpec, config: RolloutConfig,
                 out_dir: str | os.PathLike | None = None) -> RolloutResult:
    """Run the episodes of ``config`` not yet stored in ``out_dir`` and return all of them.

    Args:
        policy: any :class:`~agents.policy.Policy`, or a :class:`~agents.backends.spec.PolicySpec`
            (built here, or in every Ray actor with ``config.ray``; there a picklable policy
            object also works, each actor playing with its own copy).
        config: what to run.
        out_dir: where shards, the manifest, ``stats.json`` and the final dataset go; ``None``
            keeps everything in memory (no resume).

    Returns:
        A :class:`RolloutResult`.

    Raises:
        UnknownEnvError, UnknownProblemError, DatasetError: bad environment id, problem id or data.
        ValueError: ``out_dir`` holds rollouts made with a different configuration.
        SandboxError: the sandbox itself failed (episodes finished so far are saved first).
    """
    import gymnasium as gym

    from mucode_env import env_problems

    env_kw: dict[str, Any] = dict(config.env_kwargs)
    problems = env_problems(config.env_id, split=config.split, problem_ids=config.problem_ids, limit=config.limit,
                            data_dir=env_kw.get("data_dir"))
    out = Path(out_dir) if out_dir is not None else None
    store = None
    if out is not None:
        store = EpisodeStore(out, config.identity(), shard_size=config.shard_size, interval_s=config.shard_interval_s,
                             manifest=_MANIFEST,
                             extra={"policy_name": str(getattr(policy, "name", type(policy).__name__))})
    env_kw["max_turns"] = config.max_turns
    if config.split is not None:
        env_kw["split"] = config.split
    env_kw["problems"] = problems  # every env shares the loaded problems
    problem_ids = [p.id for p in problems]
    order = {pid: i for i, pid in enumerate(problem_ids)}

    done: dict[tuple[str, int], Trajectory] = {}
    if store is not None:
        wanted = {(pid, j) for pid in problem_ids for j in range(config.n)}
        done = {key: traj for key, traj in store.load().items() if key in wanted}
    pending = [EpisodeSpec(pid, j) for pid in problem_ids for j in range(config.n) if (pid, j) not in done]
    stats = EpisodeStats(resumed_episodes=len(done))

    def finished(traj: Trajectory) -> None:
        done[(traj.problem_id, traj.sample_index)] = traj
        if store is not None:
            store.add(traj)

    sampling, seed = replace(config.sampling, n=1), config.seed  # what the sampling function carries to actors
    play = dict(
        sampling=lambda call: replace(sampling, seed=derive_seed("rollout", seed, call)),
        max_live=config.max_live_episodes, on_done=finished,
        on_round=lambda _: store.maybe_flush() if store is not None else None,
        stats=stats, env_id=config.env_id, seed=config.seed, sampling_record=jsonable(asdict(config.sampling)),
        progress=config.progress, progress_total=len(problem_ids) * config.n, continuous=config.continuous,
        progress_desc=f"rollouts {config.env_id}",
    )
    try:
        if config.ray is not None:
            if pending:
                from agents.ray_episodes import RayEpisodes

                with RayEpisodes(config.ray, policy) as runner:
                    runner.play(config.env_id, env_kw, pending, **play)
        else:
            local = policy.build() if isinstance(policy, PolicySpec) else policy
            play_episodes(local, lambda: gym.make(config.env_id, disable_env_checker=True, **env_kw), pending, **play)
    finally:
        if store is not None:
            store.flush()
    log.info(
        "rollouts: %d new episodes (%d resumed) in %.1f s: %.1f tokens/s, %.1f executions/s, %.1f episodes/min",
        stats.episodes, stats.resumed_episodes, stats.wall_s, stats.tokens_per_s, stats.executions_per_s,
        stats.episodes_per_min,
    )
    trajectories = sorted(done.values(), key=lambda t: (order[t.problem_id], t.sample_index))
    if out is not None:
        write_trajectories(trajectories, out / _FINAL)
        write_json_atomic(out / "stats.json", stats.to_dict())
    return RolloutResult(trajectories, stats, problem_ids, out)
