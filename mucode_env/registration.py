"""Environment ids, registered with Gymnasium when ``mucode_env`` is imported."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym

from mucode_env.env import select_problems
from mucode_env.errors import UnknownEnvError, did_you_mean
from mucode_env.problem import Problem

ENTRY_POINT = "mucode_env.env:MuCodeEnv"

# id -> the benchmark it runs (default split is each benchmark's evaluation split).
ENV_IDS: dict[str, dict[str, Any]] = {
    "MuCode-MBPP-v0": {"benchmark": "mbpp", "split": "test"},
    "MuCode-HumanEval-v0": {"benchmark": "humaneval", "split": "test"},
    "MuCode-CodeContests-v0": {"benchmark": "codecontests", "split": "train"},
    "MuCode-APPS-v0": {"benchmark": "apps", "split": "test"},
}


def register_envs() -> None:
    """Register every id (idempotent).

    Gymnasium's passive checker is off by default for these ids: every id passes the full
    ``gymnasium.utils.env_checker.check_env`` (tested), and in Gymnasium 1.4 a first ``reset``
    that raises (an unknown problem id) leaves the passive checker without its reset record, so
    the next ``step`` fails inside it with ``TypeError: cannot unpack non-iterable NoneType``.
    ``gym.make(id, disable_env_checker=False)`` turns it back on.
    """
    for env_id, kwargs in ENV_IDS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=ENTRY_POINT, kwargs=dict(kwargs), disable_env_checker=True)


def check_env_id(env_id: str) -> str:
    """Return ``env_id`` if it is ours, else raise UnknownEnvError with a hint."""
    if env_id not in ENV_IDS:
        raise UnknownEnvError(f"unknown environment id {env_id!r}; registered: {sorted(ENV_IDS)}."
                              f"{did_you_mean(env_id, ENV_IDS)}")
    return env_id


def env_problems(env_id: str, *, split: str | None = None, problem_ids: Sequence[str | int] | None = None,
                 limit: int | None = None, data_dir: str | None = None) -> list[Problem]:
    """The problems ``gym.make(env_id, split=..., problem_ids=...)`` runs on, then the first ``limit``.

    Loads the benchmark once; every episode runner selects its problems through this, so an id
    means the same thing everywhere (bare task numbers included).

    Raises:
        UnknownEnvError, UnknownProblemError, DatasetError: bad id, problem id or data.
    """
    from mucode_env.datasets import load_problems

    spec = ENV_IDS[check_env_id(env_id)]
    split = split or spec["split"]
    problems = load_problems(spec["benchmark"], split, data_dir=data_dir)
    return select_problems(problems, problem_ids, limit, where=f"{spec['benchmark']}/{split}")
