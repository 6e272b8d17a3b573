"""Environment ids, registered with Gymnasium when ``mucode_env`` is imported."""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from mucode_env.errors import UnknownEnvError, did_you_mean

ENTRY_POINT = "mucode_env.env:MuCodeEnv"

# id -> the benchmark it runs (default split is each benchmark's evaluation split).
ENV_IDS: dict[str, dict[str, Any]] = {
    "MuCode-MBPP-v0": {"benchmark": "mbpp", "split": "test"},
    "MuCode-HumanEval-v0": {"benchmark": "humaneval", "split": "test"},
    "MuCode-CodeContests-v0": {"benchmark": "codecontests", "split": "train"},
    "MuCode-APPS-v0": {"benchmark": "apps", "split": "test"},
}


def register_envs() -> None:
    """Register every id (idempotent)."""
    for env_id, kwargs in ENV_IDS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=ENTRY_POINT, kwargs=dict(kwargs), disable_env_checker=False)


def check_env_id(env_id: str) -> str:
    """Return ``env_id`` if it is ours, else raise UnknownEnvError with a hint."""
    if env_id not in ENV_IDS:
        raise UnknownEnvError(f"unknown environment id {env_id!r}; registered: {sorted(ENV_IDS)}."
                              f"{did_you_mean(env_id, ENV_IDS)}")
    return env_id
