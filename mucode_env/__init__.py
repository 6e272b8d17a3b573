"""mucode_env: multi-turn code generation as a Gymnasium environment.

>>> import gymnasium as gym, mucode_env                                     # doctest: +SKIP
>>> env = gym.make("MuCode-MBPP-v0", split="test", max_turns=3)              # doctest: +SKIP
>>> obs, info = env.reset(seed=0)                                            # doctest: +SKIP
>>> obs, reward, terminated, truncated, info = env.step(llm_text)            # doctest: +SKIP
"""

from mucode_env.env import EnvConfig, MuCodeEnv, run_public_batch, shared_sandbox, step_batch, to_messages
from mucode_env.errors import (DatasetError, EpisodeError, MuCodeError, SandboxError, UnknownEnvError,
                               UnknownProblemError)
from mucode_env.extract import extract_code
from mucode_env.problem import IOStyle, Problem, TestCase
from mucode_env.registration import ENV_IDS, env_problems, register_envs
from mucode_env.vector import MuCodeVectorEnv, make_vec

register_envs()

__version__ = "0.1.0"

__all__ = [
    "DatasetError", "ENV_IDS", "EnvConfig", "EpisodeError", "IOStyle", "MuCodeEnv", "MuCodeError",
    "MuCodeVectorEnv", "Problem", "SandboxError", "TestCase", "UnknownEnvError", "UnknownProblemError",
    "env_problems", "extract_code", "make_vec", "register_envs", "run_public_batch", "shared_sandbox", "step_batch", "to_messages",
]
