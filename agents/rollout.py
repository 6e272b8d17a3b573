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

import json
import logging
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from agents.backends.spec import PolicySpec
from agents.episodes import EpisodeSpec, EpisodeStats, derive_seed, play_episodes
from agents.policy import Policy, SamplingParams
from agents.ray_episodes import RayEpisodesConfig
from agents.records import Trajectory, TurnRecord
from mucode_env.atomic import atomic_dir, atomic_path, write_json_atomic, write_text_atomic

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
_SHARDS = "shards"
_FINAL = "trajectories"
# Fields whose change makes old episodes incomparable with new ones (resume refuses them).
_IDENTITY_FIELDS = ("env_id", "split", "max_turns", "seed", "sampling", "env_kwargs")


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
            "sampling": _jsonable(asdict(self.sampling)),
            "env_kwargs": _jsonable(env_kwargs),
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
    if out is not None:
        _check_manifest(out, config, policy)
    env_kw["max_turns"] = config.max_turns
    if config.split is not None:
        env_kw["split"] = config.split
    env_kw["problems"] = problems  # every env shares the loaded problems
    problem_ids = [p.id for p in problems]
    order = {pid: i for i, pid in enumerate(problem_ids)}

    done: dict[tuple[str, int], Trajectory] = {}
    if out is not None:
        wanted = {(pid, j) for pid in problem_ids for j in range(config.n)}
        for traj in _read_shards(out / _SHARDS):
            key = (traj.problem_id, traj.sample_index)
            if key in wanted:
                done.setdefault(key, traj)
    pending = [EpisodeSpec(pid, j) for pid in problem_ids for j in range(config.n) if (pid, j) not in done]
    stats = EpisodeStats(resumed_episodes=len(done))
    writer = _ShardWriter(out / _SHARDS if out is not None else None, config.shard_size, config.shard_interval_s)

    def finished(traj: Trajectory) -> None:
        done[(traj.problem_id, traj.sample_index)] = traj
        writer.add(traj)

    sampling, seed = replace(config.sampling, n=1), config.seed  # what the sampling function carries to actors
    play = dict(
        sampling=lambda call: replace(sampling, seed=derive_seed("rollout", seed, call)),
        max_live=config.max_live_episodes, on_done=finished, on_round=lambda _: writer.maybe_flush(),
        stats=stats, env_id=config.env_id, seed=config.seed, sampling_record=_jsonable(asdict(config.sampling)),
        progress=config.progress, progress_total=len(problem_ids) * config.n,
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
        writer.flush()
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


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


# ---- storage -------------------------------------------------------------------------------------
def _check_manifest(out: Path, config: RolloutConfig, policy: Policy) -> None:
    manifest = out / _MANIFEST
    identity = config.identity()
    if manifest.is_file():
        old = json.loads(manifest.read_text())
        diffs = [k for k in _IDENTITY_FIELDS if old.get("identity", {}).get(k) != identity.get(k)]
        if diffs:
            raise ValueError(
                f"{out} holds rollouts made with a different configuration ({', '.join(diffs)} differ: "
                f"stored {[old.get('identity', {}).get(k) for k in diffs]}, now {[identity.get(k) for k in diffs]}); "
                "use another output directory or delete it"
            )
        return
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(manifest, json.dumps({
        "identity": identity,
        "policy_name": str(getattr(policy, "name", type(policy).__name__)),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }, indent=2))


_SIMPLE_TYPES = {"str": "string", "bool": "bool", "int": "int64", "float": "float64"}


def trajectory_features():
    """The ``datasets.Features`` of a trajectory row, derived from the record dataclasses.

    Returns ``None`` when a field has a type this mapping does not know (then Arrow infers it).
    """
    import datasets

    list_type = getattr(datasets, "List", None) or datasets.Sequence

    def simple(annotation: str):
        if annotation in _SIMPLE_TYPES:
            return datasets.Value(_SIMPLE_TYPES[annotation])
        if annotation == "tuple[str, ...]":
            return list_type(datasets.Value("string"))
        return None

    turn = {f.name: simple(str(f.type)) for f in fields(TurnRecord)}
    sampling = {f.name: simple(str(f.type)) for f in fields(SamplingParams)}
    row: dict[str, Any] = {}
    for f in fields(Trajectory):
        if f.name == "turns":
            row[f.name] = list_type(turn)
        elif f.name == "sampling":
            row[f.name] = sampling
        else:
            row[f.name] = simple(str(f.type))
    flat = list(turn.values()) + list(sampling.values()) + [v for k, v in row.items() if k not in ("turns", "sampling")]
    if any(v is None for v in flat):
        return None
    return datasets.Features(row)


def _write_parquet(rows: list[dict[str, Any]], path: Path) -> None:
    import datasets

    features = trajectory_features()
    if features is not None and rows and set(rows[0]["sampling"]) != set(features["sampling"]):
        features = None  # a caller-defined sampling dict: let Arrow infer
    import pyarrow.parquet as pq

    ds = datasets.Dataset.from_list(rows, features=features)
    pq.write_table(ds.data.table, str(path))  # the schema carries the datasets features metadata


def write_trajectories(trajectories: Sequence[Trajectory], path: str | os.PathLike) -> Path:
    """Write trajectories as a ``datasets`` Parquet table in directory ``path``, atomically.

    The table is written into a temporary sibling directory that then replaces ``path``. Load it
    with :func:`load_trajectories` or ``datasets.load_dataset("parquet", data_dir=path)``.
    """
    path = Path(path)
    rows = [t.to_row() for t in trajectories]
    with atomic_dir(path) as tmp:
        _write_parquet(rows, tmp / "data-00000-of-00001.parquet")
    return path


def load_trajectories(path: str | os.PathLike) -> list[Trajectory]:
    """Read trajectories from a rollout directory, its ``trajectories/`` table, or Parquet files."""
    import pyarrow.parquet as pq

    path = Path(path)
    if (path / _FINAL).is_dir():
        path = path / _FINAL
    files = [path] if path.is_file() else sorted(p for p in path.glob("*.parquet") if not p.name.startswith("."))
    if not files:
        raise FileNotFoundError(f"no trajectories (*.parquet) under {path}")
    out: list[Trajectory] = []
    for file in files:
        out.extend(_from_row(row) for row in pq.read_table(file).to_pylist())
    return out


def _from_row(row: dict[str, Any]) -> Trajectory:
    row = dict(row)
    known = {f.name for f in fields(Trajectory)}
    row = {k: v for k, v in row.items() if k in known}
    turn_known = {f.name for f in fields(TurnRecord)}
    row["turns"] = [{k: v for k, v in t.items() if k in turn_known} for t in row["turns"]]
    return Trajectory.from_row(row)


def _read_shards(shard_dir: Path) -> list[Trajectory]:
    if not shard_dir.is_dir():
        return []
    for stale in shard_dir.glob(".*.tmp"):
        stale.unlink(missing_ok=True)
    return [t for f in sorted(shard_dir.glob("shard-*.parquet")) for t in load_trajectories(f)]


class _ShardWriter:
    """Buffers finished episodes and writes them as atomically renamed Parquet shards."""

    def __init__(self, shard_dir: Path | None, shard_size: int, interval_s: float) -> None:
        self.shard_dir = shard_dir
        self.shard_size = shard_size
        self.interval_s = interval_s
        self.oldest = 0.0
        self.buffer: list[Trajectory] = []
        self.run_id = f"{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:8]}"
        self.count = 0

    def add(self, traj: Trajectory) -> None:
        if self.shard_dir is None:
            return
        if not self.buffer:
            self.oldest = time.monotonic()
        self.buffer.append(traj)
        self.maybe_flush()

    def maybe_flush(self) -> None:
        if self.buffer and (len(self.buffer) >= self.shard_size or time.monotonic() - self.oldest >= self.interval_s):
            self.flush()

    def flush(self) -> None:
        if self.shard_dir is None or not self.buffer:
            return
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        name = f"shard-{self.run_id}-{self.count:05d}.parquet"
        with atomic_path(self.shard_dir / name) as tmp:
            _write_parquet([t.to_row() for t in self.buffer], tmp)
        self.count += 1
        self.buffer = []
