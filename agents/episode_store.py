"""Finished episodes on disk, so that a long run resumes where it stopped.

A run that plays many episodes (rollouts, an evaluation cell of hundreds of problems x N
candidates) writes every finished :class:`~agents.records.Trajectory` into Parquet shards,
each written to a temporary name and renamed, as the episodes finish. Started again with the
same directory, it reads the shards back and plays only the episodes not yet there, so an
interrupted run loses at most a shard's worth of work (``shard_size`` episodes or
``interval_s`` seconds) and never duplicates an episode. A manifest records the run's identity
(what makes its episodes comparable); a directory made by a different run is refused with an
error that names the fields that differ.

The trajectory table is a Hugging Face ``datasets`` Parquet table (:func:`write_trajectories`,
:func:`load_trajectories`).

>>> store = EpisodeStore("runs/x/episodes", {"env_id": "MuCode-MBPP-v0", "seed": 0})  # doctest: +SKIP
>>> done = store.load()  # {(problem_id, sample_index): trajectory}  # doctest: +SKIP
>>> store.add(trajectory); store.flush()  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from agents.policy import SamplingParams
from agents.records import Trajectory, TurnRecord, jsonable
from mucode_env.atomic import atomic_dir, atomic_path, write_text_atomic

__all__ = ["EpisodeStore", "load_trajectories", "trajectory_features", "write_trajectories"]

_MANIFEST = "manifest.json"
_SHARDS = "shards"
_FINAL = "trajectories"


class EpisodeStore:
    """The shards of one run's finished episodes under ``directory``.

    Args:
        directory: where the manifest and shards go (created on the first write).
        identity: JSON-able fields that must match for a resumed run; a directory holding
            episodes of another identity raises ``ValueError`` naming the differing fields.
        shard_size: finished episodes per shard.
        interval_s: also write a shard once the oldest buffered episode has waited this long.
        manifest: the manifest's file name (rollout directories keep their historical name).
        extra: more manifest fields, informative only (not compared).
    """

    def __init__(self, directory: str | os.PathLike, identity: Mapping[str, Any], *, shard_size: int = 32,
                 interval_s: float = 60.0, manifest: str = _MANIFEST, extra: Mapping[str, Any] | None = None) -> None:
        if shard_size < 1 or interval_s <= 0:
            raise ValueError(f"shard_size must be >= 1 and interval_s > 0, got {shard_size}, {interval_s}")
        self.directory = Path(directory)
        self.identity = jsonable(identity)  # what a reload of the manifest compares
        self.shard_size = shard_size
        self.interval_s = interval_s
        self._manifest = self.directory / manifest
        self._extra = dict(extra or {})
        self._buffer: list[Trajectory] = []
        self._oldest = 0.0
        self._run_id = f"{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:8]}"
        self._count = 0
        self._check_manifest()

    @property
    def shard_dir(self) -> Path:
        return self.directory / _SHARDS

    @staticmethod
    def read(directory: str | os.PathLike) -> list[Trajectory]:
        """Every episode saved under ``directory`` (one per ``(problem_id, sample_index)``), without
        checking an identity: for readers of a finished run. Empty if there are none."""
        return list(_read_shards(Path(directory) / _SHARDS).values())

    def _check_manifest(self) -> None:
        if self._manifest.is_file():
            old = json.loads(self._manifest.read_text()).get("identity", {})
            keys = sorted(set(old) | set(self.identity))
            diffs = [k for k in keys if old.get(k) != self.identity.get(k)]
            if diffs:
                raise ValueError(
                    f"{self.directory} holds episodes made with a different configuration ({', '.join(diffs)} "
                    f"differ: stored {[old.get(k) for k in diffs]}, now {[self.identity.get(k) for k in diffs]}); "
                    "use another directory or delete it")
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self._manifest, json.dumps(
            {"identity": self.identity, **self._extra, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=2))

    def load(self) -> dict[tuple[str, int], Trajectory]:
        """The stored episodes by ``(problem_id, sample_index)`` (the first copy wins should one
        appear twice). Temporary files of an interrupted write are removed."""
        for stale in self.shard_dir.glob(".*.tmp"):
            stale.unlink(missing_ok=True)
        return _read_shards(self.shard_dir)

    def add(self, traj: Trajectory) -> None:
        """Buffer a finished episode; a shard is written when the buffer is full or old."""
        if not self._buffer:
            self._oldest = time.monotonic()
        self._buffer.append(traj)
        self.maybe_flush()

    def maybe_flush(self) -> None:
        """Write the buffer if it is full or its oldest episode waited ``interval_s``."""
        if self._buffer and (len(self._buffer) >= self.shard_size
                             or time.monotonic() - self._oldest >= self.interval_s):
            self.flush()

    def flush(self) -> None:
        """Write the buffered episodes as one shard (atomically renamed into place)."""
        if not self._buffer:
            return
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.shard_dir / f"shard-{self._run_id}-{self._count:05d}.parquet") as tmp:
            _write_parquet([t.to_row() for t in self._buffer], tmp)
        self._count += 1
        self._buffer = []


def _read_shards(shard_dir: Path) -> dict[tuple[str, int], Trajectory]:
    out: dict[tuple[str, int], Trajectory] = {}
    for shard in sorted(shard_dir.glob("shard-*.parquet")):
        for traj in load_trajectories(shard):
            out.setdefault((traj.problem_id, traj.sample_index), traj)
    return out


# ---- the trajectory table -----------------------------------------------------------------------
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
