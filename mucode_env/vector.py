"""Many environments stepped together, their programs executed in one sandbox batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from mucode_env.env import MuCodeEnv, shared_sandbox, step_batch
from mucode_env.registration import ENV_IDS, check_env_id
from mucode_env.sandbox import Executor


class MuCodeVectorEnv(gym.vector.VectorEnv):
    """``num_envs`` MuCode environments with next-step autoreset (Gymnasium's default mode).

    Observations are a tuple of per-env dicts (text cannot be stacked into arrays); rewards,
    terminated and truncated are arrays; infos is a tuple of per-env dicts. A sub-env whose
    episode ended is reset on the next ``step`` and its action there is ignored.
    """

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP}

    def __init__(self, envs: Sequence[MuCodeEnv]) -> None:
        if not envs:
            raise ValueError("MuCodeVectorEnv needs at least one environment")
        self.envs = list(envs)
        self.num_envs = len(self.envs)
        self.single_observation_space = self.envs[0].observation_space
        self.single_action_space = self.envs[0].action_space
        self.observation_space = gym.spaces.Tuple([e.observation_space for e in self.envs])
        self.action_space = gym.spaces.Tuple([e.action_space for e in self.envs])
        self._autoreset = np.zeros(self.num_envs, dtype=bool)

    def reset(self, *, seed: int | Sequence[int] | None = None,
              options: dict[str, Any] | Sequence[dict[str, Any]] | None = None) -> tuple[tuple, tuple]:
        seeds = ([None if seed is None else seed + i for i in range(self.num_envs)]
                 if seed is None or isinstance(seed, int) else list(seed))
        opts = list(options) if isinstance(options, (list, tuple)) else [options] * self.num_envs
        pairs = [env.reset(seed=s, options=o) for env, s, o in zip(self.envs, seeds, opts)]
        self._autoreset[:] = False
        return tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)

    def step(self, actions: Sequence[str]) -> tuple[tuple, np.ndarray, np.ndarray, np.ndarray, tuple]:
        if len(actions) != self.num_envs:
            raise ValueError(f"expected {self.num_envs} actions, got {len(actions)}")
        live = [i for i in range(self.num_envs) if not self._autoreset[i]]
        stepped = step_batch([self.envs[i] for i in live], [actions[i] for i in live])
        obs: list[Any] = [None] * self.num_envs
        infos: list[dict] = [{}] * self.num_envs
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        for i, (o, r, te, tr, info) in zip(live, stepped):
            obs[i], rewards[i], terminated[i], truncated[i], infos[i] = o, r, te, tr, info
        for i in range(self.num_envs):
            if self._autoreset[i]:
                obs[i], infos[i] = self.envs[i].reset()
        self._autoreset = terminated | truncated
        return tuple(obs), rewards, terminated, truncated, tuple(infos)

    def close_extras(self, **kwargs: Any) -> None:
        for env in self.envs:
            env.close()


def make_vec(env_id: str, num_envs: int, sandbox: Executor | None = None, **kwargs: Any) -> MuCodeVectorEnv:
    """``num_envs`` copies of ``env_id`` sharing one problem list and one sandbox."""
    check_env_id(env_id)
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    params = {**ENV_IDS[env_id], **kwargs}
    if "problems" not in params:
        from mucode_env.datasets import load_problems

        params["problems"] = load_problems(params["benchmark"], params.get("split", "test"),
                                           data_dir=params.get("data_dir"))
    sandbox = sandbox or shared_sandbox()
    return MuCodeVectorEnv([MuCodeEnv(sandbox=sandbox, **params) for _ in range(num_envs)])
