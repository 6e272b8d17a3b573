"""The environment's contract: spaces, episodes, rewards, termination, bad input, no leaks."""

from __future__ import annotations

import json

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import mucode_env
from mucode_env import EpisodeError, MuCodeEnv, SandboxError, UnknownEnvError, UnknownProblemError
from mucode_env.sandbox import Status

def fenced(code: str) -> str:
    return f"Let me think.\n```python\n{code}\n```\nDone."


@pytest.fixture()
def env(sandbox, toy_problems):
    e = MuCodeEnv(problems=toy_problems, sandbox=sandbox, max_turns=3)
    yield e
    e.close()


def test_episode_with_feedback_then_success(env):
    obs, info = env.reset(seed=0, options={"problem_id": "Toy/inc"})
    assert obs["turn"] == 0 and obs["history"] == () and "assert f(1) == 2" in obs["prompt"]
    obs, reward, terminated, truncated, info = env.step(fenced("def f(x):\n    return x + 2"))
    assert (reward, terminated, truncated) == (0.0, False, False)
    assert "Test failed: assert f(1) == 2" in info["feedback"] and "returned: 3" in info["feedback"]
    assert info["public_passed"] is False and info["status"] == "wrong_answer"
    obs, reward, terminated, truncated, info = env.step(fenced("def f(x):\n    return x + 1"))
    assert (reward, terminated, truncated) == (1.0, True, False)
    assert info["feedback"] == "Code passed all tests" and info["oracle"] == 1.0
    messages = mucode_env.to_messages(obs)
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant", "user"]
    assert messages[2]["content"].startswith("Feedback:\n")


def test_public_pass_private_fail_terminates_with_zero_reward(env):
    env.reset(options={"problem_id": "Toy/inc"})
    _, reward, terminated, _, info = env.step(fenced("def f(x):\n    return 2"))
    assert terminated and reward == 0.0
    assert info["public_passed"] and not info["private_passed"]


def test_oracle_termination_continues_until_private_pass(sandbox, toy_problems):
    env = MuCodeEnv(problems=toy_problems, sandbox=sandbox, termination="oracle", max_turns=2)
    env.reset(options={"problem_id": "Toy/inc"})
    _, reward, terminated, truncated, _ = env.step(fenced("def f(x):\n    return 2"))
    assert (reward, terminated, truncated) == (0.0, False, False)
    _, reward, terminated, truncated, _ = env.step(fenced("def f(x):\n    return 2"))
    assert (reward, terminated, truncated) == (0.0, False, True)


def test_truncation_and_per_turn_reward(sandbox, toy_problems):
    env = MuCodeEnv(problems=toy_problems, sandbox=sandbox, max_turns=2, reward_mode="per_turn")
    env.reset(options={"problem_id": "Toy/inc"})
    _, reward, terminated, truncated, _ = env.step(fenced("def f(x):\n    return 0"))
    assert (reward, terminated, truncated) == (0.0, False, False)
    _, reward, terminated, truncated, _ = env.step(fenced("def f(x):\n    return 0"))
    assert (terminated, truncated) == (False, True)
    with pytest.raises(EpisodeError):
        env.step(fenced("def f(x):\n    return x + 1"))


def test_stdio_problem(env):
    env.reset(options={"problem_id": "Toy/echo"})
    _, reward, terminated, _, info = env.step(fenced("print(sum(map(int, input().split())))"))
    assert reward == 1.0 and terminated and info["private_passed"]


def test_private_tests_never_reach_observations(env, toy_secret):
    """Programs that print, raise or return their inputs must not leak private test text."""
    leaky = [
        "def f(x):\n    print('ARGS', x, globals())\n    return x",
        "def f(x):\n    raise ValueError(repr(x) * 3)",
        "import sys\ndef f(x):\n    sys.stderr.write(str(x))\n    return None",
        "import sys\nprint(sys.stdin.read())",
        "data = input()\nprint(data, data)",
    ]
    for pid in ("Toy/inc", "Toy/echo"):
        for code in leaky:
            obs, _ = env.reset(options={"problem_id": pid})
            observations = [obs]
            done = False
            while not done:
                obs, _, terminated, truncated, info = env.step(fenced(code))
                observations.append(obs)
                done = terminated or truncated
            text = json.dumps(observations)
            assert toy_secret not in text
            assert "40 2" not in text and "f(5)" not in text
            assert "private" not in text.lower()


def test_bad_actions_are_errors_or_scored_failures(env):
    env.reset(options={"problem_id": "Toy/inc"})
    with pytest.raises(TypeError, match="str"):
        env.step(123)  # type: ignore[arg-type]
    _, reward, _, _, info = env.step("")
    assert reward == 0.0 and info["status"] == "compile_error" and "No code" in info["feedback"]
    _, _, _, _, info = env.step("I cannot solve this problem, sorry.")
    assert info["status"] == "compile_error" and "SyntaxError" in info["feedback"]
    obs, reward, _, truncated, info = env.step("x" * (env.config.max_action_chars + 1))
    assert truncated and reward == 0.0 and "too long" in info["feedback"]
    assert len(obs["history"][-1]["response"]) == env.config.max_action_chars


def test_unknown_ids_get_specific_errors(sandbox, toy_problems):
    with pytest.raises(UnknownProblemError, match="Did you mean"):
        env = MuCodeEnv(problems=toy_problems, sandbox=sandbox)
        env.reset(options={"problem_id": "Toy/incc"})
    with pytest.raises(UnknownProblemError):
        MuCodeEnv(problems=toy_problems, sandbox=sandbox, problem_ids=["Toy/nope"])
    with pytest.raises(gym.error.Error):
        gym.make("MuCode-MBPPP-v0")
    with pytest.raises(UnknownEnvError, match="MuCode-MBPP-v0"):
        mucode_env.make_vec("MuCode-MBPPP-v0", 2)
    with pytest.raises(ValueError, match="unknown reset option"):
        MuCodeEnv(problems=toy_problems, sandbox=sandbox).reset(options={"problemid": "Toy/inc"})
    with pytest.raises(EpisodeError):
        MuCodeEnv(problems=toy_problems, sandbox=sandbox).step("x")


def test_config_validation(sandbox, toy_problems):
    for bad in ({"max_turns": 0}, {"termination": "private"}, {"reward_mode": "dense"}):
        with pytest.raises(ValueError):
            MuCodeEnv(problems=toy_problems, sandbox=sandbox, **bad)


def test_reset_is_reproducible_per_seed(sandbox, toy_problems):
    a = MuCodeEnv(problems=list(toy_problems), sandbox=sandbox)
    b = MuCodeEnv(problems=list(toy_problems), sandbox=sandbox)
    ids_a = [a.reset(seed=s)[0]["problem_id"] for s in range(30)]
    ids_b = [b.reset(seed=s)[0]["problem_id"] for s in range(30)]
    assert ids_a == ids_b and set(ids_a) == {p.id for p in toy_problems}


def test_check_env_passes(env):
    check_env(env, skip_render_check=True)


def test_step_batch_matches_sequential_steps(sandbox, toy_problems):
    actions = [fenced("def f(x):\n    return x + 1"), fenced("def f(x):\n    return x"), "no code here"]
    batch_envs = [MuCodeEnv(problems=toy_problems, sandbox=sandbox) for _ in actions]
    solo_envs = [MuCodeEnv(problems=toy_problems, sandbox=sandbox) for _ in actions]
    for e in batch_envs + solo_envs:
        e.reset(options={"problem_id": "Toy/inc"})
    batched = mucode_env.step_batch(batch_envs, actions)
    solo = [e.step(a) for e, a in zip(solo_envs, actions)]
    for (o1, r1, te1, tr1, i1), (o2, r2, te2, tr2, i2) in zip(batched, solo):
        assert o1 == o2 and (r1, te1, tr1) == (r2, te2, tr2) and i1["feedback"] == i2["feedback"]


class RecordingExecutor:
    """Not a Sandbox: anything with execute/close (a RaySandbox, a remote service) can back an env."""

    def __init__(self, inner):
        self.inner, self.batches, self.closed = inner, [], False

    def execute(self, jobs):
        jobs = list(jobs)
        self.batches.append(len(jobs))
        return self.inner.execute(jobs)

    def close(self):
        self.closed = True


def test_any_executor_backs_the_env_and_step_batch(sandbox, toy_problems):
    executor = RecordingExecutor(sandbox)
    envs = [gym.make("MuCode-MBPP-v0", problems=toy_problems, sandbox=executor) for _ in range(2)]
    assert all(e.unwrapped.sandbox is executor for e in envs)  # gym.make's deep copy keeps the instance
    for e in envs:
        e.reset(options={"problem_id": "Toy/inc"})
    out = mucode_env.step_batch(envs, [fenced("def f(x):\n    return x + 1"), fenced("def f(x):\n    return x")])
    assert [o[1] for o in out] == [1.0, 0.0] and executor.batches == [4]  # one batch: public + private each
    for e in envs:
        e.close()
    assert not executor.closed  # an env closes only the sandbox it built itself
    with pytest.raises(TypeError, match="Executor"):
        MuCodeEnv(problems=toy_problems, sandbox=object())


def test_vector_env_autoresets_next_step(sandbox, toy_problems):
    vec = mucode_env.MuCodeVectorEnv([MuCodeEnv(problems=toy_problems, sandbox=sandbox) for _ in range(2)])
    obs, _ = vec.reset(seed=3, options=[{"problem_id": "Toy/inc"}, {"problem_id": "Toy/inc"}])
    obs, rewards, terminated, truncated, infos = vec.step([fenced("def f(x):\n    return x + 1"), "nothing"])
    assert rewards.tolist() == [1.0, 0.0] and terminated.tolist() == [True, False]
    obs, rewards, terminated, _, _ = vec.step(["ignored", "nothing"])
    assert obs[0]["turn"] == 0 and obs[1]["turn"] == 2 and rewards.tolist() == [0.0, 0.0]
    vec.close()


def test_problem_ids_resolve_bare_task_numbers(sandbox, data_dir):
    env = gym.make("MuCode-MBPP-v0", data_dir=str(data_dir), sandbox=sandbox)
    assert env.reset(options={"problem_id": 11})[0]["problem_id"] == "MBPP/11"
    assert env.reset(options={"problem_id": "12"})[0]["problem_id"] == "MBPP/12"
    with pytest.raises(UnknownProblemError, match="MBPP/"):
        env.reset(options={"problem_id": 999999})
    narrowed = gym.make("MuCode-MBPP-v0", data_dir=str(data_dir), sandbox=sandbox, problem_ids=[13, "MBPP/14"])
    assert [p.id for p in narrowed.unwrapped.problems] == ["MBPP/13", "MBPP/14"]
    assert [p.id for p in mucode_env.env_problems("MuCode-MBPP-v0", problem_ids=[15], data_dir=str(data_dir))] == [
        "MBPP/15"]


def test_a_failed_reset_leaves_the_env_usable_through_gym_make(sandbox, data_dir):
    env = gym.make("MuCode-MBPP-v0", data_dir=str(data_dir), sandbox=sandbox)
    with pytest.raises(UnknownProblemError):
        env.reset(options={"problem_id": "MBPP/not-an-id"})
    obs, _ = env.reset(options={"problem_id": "MBPP/11"})
    _, reward, terminated, truncated, info = env.step("no code at all")
    assert obs["problem_id"] == "MBPP/11" and info["status"] == "compile_error" and not terminated


def test_run_public_scores_candidates_without_stepping(env, toy_problems):
    env.reset(options={"problem_id": "Toy/inc"})
    right, wrong = fenced("def f(x):\n    return x + 1"), fenced("def f(x):\n    return 2")
    results = env.run_public([right, wrong, "no code", fenced("def f(x):\n    return 0")])
    assert [r.passed for r in results] == [True, True, False, False]  # `return 2` passes the public test
    assert results[2].status is Status.COMPILE_ERROR
    assert env.unwrapped._history == []  # nothing recorded, the episode did not advance
    other = MuCodeEnv(problems=toy_problems, sandbox=env.sandbox)
    other.reset(options={"problem_id": "Toy/echo"})
    batch = mucode_env.run_public_batch([env, other], [[wrong], [fenced("print(sum(map(int, input().split())))")]])
    assert [[r.passed for r in rs] for rs in batch] == [[True], [True]]


def test_run_public_raises_on_sandbox_failure(env):
    class Broken:
        def execute(self, jobs):
            from mucode_env.sandbox import ExecResult

            return [ExecResult(Status.SANDBOX_ERROR, message="worker died") for _ in jobs]

    env.reset(options={"problem_id": "Toy/inc"})
    env.sandbox = Broken()
    with pytest.raises(SandboxError, match="worker died"):
        env.run_public([fenced("def f(x):\n    return x + 1")])
