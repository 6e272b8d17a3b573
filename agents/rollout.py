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

import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from agents.policy import Policy, SamplingParams
from agents.records import Trajectory, TurnRecord
from mucode_env.atomic import atomic_dir, write_text_atomic

__all__ = [
    "RolloutConfig",
    "RolloutResult",
    "RolloutStats",
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

    def __post_init__(self) -> None:
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
class RolloutStats:
    """Throughput of one run (only the episodes generated in this run, not resumed ones)."""

    episodes: int = 0
    resumed_episodes: int = 0
    generation_calls: int = 0
    generations: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    executions: int = 0  # turns whose program was sent to the sandbox (public + private runs)
    generation_s: float = 0.0
    execution_s: float = 0.0
    wall_s: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.generation_s if self.generation_s > 0 else 0.0

    @property
    def executions_per_s(self) -> float:
        return self.executions / self.execution_s if self.execution_s > 0 else 0.0

    @property
    def episodes_per_min(self) -> float:
        return 60.0 * self.episodes / self.wall_s if self.wall_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "tokens_per_s": self.tokens_per_s,
            "executions_per_s": self.executions_per_s,
            "episodes_per_min": self.episodes_per_min,
        }


@dataclass
class RolloutResult:
    """What :func:`run_rollouts` returns: the trajectories (config order) and this run's stats."""

    trajectories: list[Trajectory]
    stats: RolloutStats
    problem_ids: list[str]
    out_dir: Path | None = None


def collect_rollouts(policy: Policy, config: RolloutConfig, out_dir: str | os.PathLike | None = None) -> list[Trajectory]:
    """Roll ``policy`` out on ``config``'s problems; see :func:`run_rollouts`.

    Returns:
        One :class:`~agents.records.Trajectory` per (problem, sample), ordered by problem then sample.
    """
    return run_rollouts(policy, config, out_dir).trajectories


def run_rollouts(policy: Policy, config: RolloutConfig, out_dir: str | os.PathLike | None = None) -> RolloutResult:
    """Run the episodes of ``config`` not yet stored in ``out_dir`` and return all of them.

    Args:
        policy: any :class:`~agents.policy.Policy`.
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

    import mucode_env
    from mucode_env.registration import check_env_id

    check_env_id(config.env_id)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        _check_manifest(out, config, policy)
    env_kw: dict[str, Any] = dict(config.env_kwargs)
    env_kw["max_turns"] = config.max_turns
    if config.split is not None:
        env_kw["split"] = config.split
    probe = gym.make(config.env_id, problem_ids=config.problem_ids, disable_env_checker=True, **env_kw)
    problems = list(probe.unwrapped.problems)
    if config.limit is not None:
        problems = problems[: config.limit]
    problem_ids = [p.id for p in problems]
    order = {pid: i for i, pid in enumerate(problem_ids)}
    env_kw["problems"] = problems  # every pool env shares the loaded problems

    done: dict[tuple[str, int], Trajectory] = {}
    if out is not None:
        wanted = {(pid, j) for pid in problem_ids for j in range(config.n)}
        for traj in _read_shards(out / _SHARDS):
            key = (traj.problem_id, traj.sample_index)
            if key in wanted:
                done.setdefault(key, traj)
    pending = [(pid, j) for pid in problem_ids for j in range(config.n) if (pid, j) not in done]
    stats = RolloutStats(resumed_episodes=len(done))
    policy_name = str(getattr(policy, "name", type(policy).__name__))
    sampling_row = _jsonable(asdict(config.sampling))

    writer = _ShardWriter(out / _SHARDS if out is not None else None, config.shard_size, config.shard_interval_s)
    start = time.perf_counter()
    bar = None
    if config.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(problem_ids) * config.n, initial=len(done), desc=f"rollouts {config.env_id}", unit="ep")
    free_envs: list[Any] = []
    live: list[_Episode] = []
    call = 0
    try:
        queue = list(reversed(pending))
        while queue or live:
            while queue and len(live) < config.max_live_episodes:
                pid, j = queue.pop()
                env = free_envs.pop() if free_envs else gym.make(config.env_id, disable_env_checker=True, **env_kw)
                obs, _ = env.reset(options={"problem_id": pid})
                live.append(_Episode(pid, j, env, obs, []))
            params = replace(config.sampling, n=1, seed=_derive_seed(config.seed, call))
            call += 1
            chats = [mucode_env.to_messages(ep.obs) for ep in live]
            t0 = time.perf_counter()
            gens = policy.generate(chats, params)
            stats.generation_s += time.perf_counter() - t0
            if len(gens) != len(chats) or any(len(g) != 1 for g in gens):
                raise ValueError(
                    f"policy {policy_name} returned {[len(g) for g in gens]} generations for {len(chats)} chats with n=1"
                )
            stats.generation_calls += 1
            stats.generations += len(gens)
            actions = [g[0].text for g in gens]
            t0 = time.perf_counter()
            results = mucode_env.step_batch([ep.env for ep in live], actions)
            stats.execution_s += time.perf_counter() - t0
            still: list[_Episode] = []
            for ep, (g,), (obs, _reward, terminated, truncated, info) in zip(live, gens, results):
                stats.prompt_tokens += g.prompt_tokens
                stats.completion_tokens += g.completion_tokens
                stats.executions += int(bool(info["code"].strip()))  # turns without code are not run
                ep.turns.append(TurnRecord(
                    response=g.text,
                    code=info["code"],
                    feedback=info["feedback"],
                    public_passed=bool(info["public_passed"]),
                    private_passed=bool(info["private_passed"]),
                    status=str(info["status"]),
                    prompt_tokens=g.prompt_tokens,
                    completion_tokens=g.completion_tokens,
                ))
                ep.obs = obs
                if terminated or truncated:
                    traj = Trajectory(
                        problem_id=ep.problem_id,
                        env_id=config.env_id,
                        prompt=obs["prompt"],
                        turns=ep.turns,
                        sample_index=ep.sample_index,
                        seed=config.seed,
                        sampling=sampling_row,
                        policy_name=policy_name,
                    )
                    done[(ep.problem_id, ep.sample_index)] = traj
                    writer.add(traj)
                    stats.episodes += 1
                    free_envs.append(ep.env)
                    if bar is not None:
                        bar.update(1)
                else:
                    still.append(ep)
            live = still
            writer.maybe_flush()
            if bar is not None:
                elapsed = time.perf_counter() - start
                bar.set_postfix(tok_s=f"{stats.tokens_per_s:.1f}", exec_s=f"{stats.executions_per_s:.1f}",
                                ep_min=f"{60 * stats.episodes / elapsed:.1f}" if elapsed > 0 else "-")
    finally:
        writer.flush()
        if bar is not None:
            bar.close()
        for env in free_envs + [ep.env for ep in live]:
            env.close()
        probe.close()
    stats.wall_s = time.perf_counter() - start
    log.info(
        "rollouts: %d new episodes (%d resumed) in %.1f s: %.1f tokens/s, %.1f executions/s, %.1f episodes/min",
        stats.episodes, stats.resumed_episodes, stats.wall_s, stats.tokens_per_s, stats.executions_per_s,
        stats.episodes_per_min,
    )
    trajectories = sorted(done.values(), key=lambda t: (order[t.problem_id], t.sample_index))
    if out is not None:
        write_trajectories(trajectories, out / _FINAL)
        write_text_atomic(out / "stats.json", json.dumps(stats.to_dict(), indent=2))
    return RolloutResult(trajectories, stats, problem_ids, out)


@dataclass
class _Episode:
    problem_id: str
    sample_index: int
    env: Any
    obs: dict
    turns: list[TurnRecord]


def _derive_seed(seed: int, call: int) -> int:
    digest = hashlib.blake2b(f"rollout:{seed}:{call}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


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
        tmp = self.shard_dir / f".{name}.tmp"
        _write_parquet([t.to_row() for t in self.buffer], tmp)
        os.replace(tmp, self.shard_dir / name)
        self.count += 1
        self.buffer = []
