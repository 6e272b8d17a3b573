"""Every registered id builds through gym.make on the offline data, passes check_env, and
never shows private tests, on real problems."""

from __future__ import annotations

import json

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import mucode_env
from mucode_env.problem import IOStyle


@pytest.mark.parametrize("env_id", sorted(mucode_env.ENV_IDS))
def test_make_and_check_env_for_every_id(env_id, data_dir, sandbox):
    env = gym.make(env_id, sandbox=sandbox, max_turns=2)
    obs, info = env.reset(seed=0)
    assert obs["problem_id"] == info["problem_id"] and obs["turn"] == 0
    problem = env.unwrapped.problem
    action = f"```python\n{problem.reference_solution or 'print(0)'}\n```"
    obs, reward, terminated, truncated, info = env.step(action)
    if problem.reference_solution:
        assert reward == 1.0 and terminated and info["feedback"] == "Code passed all tests"
    check_env(env.unwrapped, skip_render_check=True)
    env.close()


@pytest.mark.parametrize("benchmark_id", ["MuCode-MBPP-v0", "MuCode-HumanEval-v0", "MuCode-CodeContests-v0"])
def test_programs_that_echo_their_inputs_leak_no_private_test(benchmark_id, data_dir, sandbox):
    env = gym.make(benchmark_id, sandbox=sandbox, max_turns=3).unwrapped
    for index in range(0, min(40, len(env.problems)), 4):
        obs, _ = env.reset(options={"problem_index": index})
        problem = env.problem
        if problem.io_style is IOStyle.STDIO:
            code = "import sys\ndata = sys.stdin.read()\nprint(data)\nraise ValueError(data)"
        else:
            code = (f"def {problem.entry_point}(*args, **kwargs):\n    print('ARGS', args, kwargs)\n"
                    f"    raise ValueError(repr(args))")
        observations, done = [obs], False
        while not done:
            obs, _, terminated, truncated, _ = env.step(f"```python\n{code}\n```")
            observations.append(obs)
            done = terminated or truncated
        text = json.dumps(observations)
        public_text = "".join(t.display + t.stdin for t in problem.public_tests)
        for test in problem.private_tests:
            secrets = [test.stdin.strip()] if test.stdin.strip() else [e for e in test.exprs]
            for secret in secrets:
                if len(secret) >= 8 and secret not in public_text and secret not in problem.prompt:
                    assert secret not in text, f"{problem.id}: private test text reached an observation"
    env.close()


def test_shared_sandbox_is_reused_by_default(data_dir):
    a = gym.make("MuCode-HumanEval-v0").unwrapped
    b = gym.make("MuCode-HumanEval-v0").unwrapped
    a.reset(seed=0)
    b.reset(seed=0)
    a.step("```python\nx = 1\n```")
    b.step("```python\nx = 1\n```")
    assert a.sandbox is b.sandbox is mucode_env.shared_sandbox()
