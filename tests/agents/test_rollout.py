"""Batched rollouts with a scripted policy in the real HumanEval environment and sandbox."""

from __future__ import annotations

from collections import Counter

import gymnasium as gym
import pytest

import mucode_env
from agents.policy import Generation, SamplingParams
from agents.rollout import RolloutConfig, collect_rollouts, load_trajectories, run_rollouts
from mucode_env.errors import UnknownEnvError, UnknownProblemError

ENV = "MuCode-HumanEval-v0"
N_PROBLEMS = 4


@pytest.fixture(scope="module")
def problems():
    env = gym.make(ENV)
    try:
        return list(env.unwrapped.problems[:N_PROBLEMS])
    finally:
        env.close()


class ScriptedPolicy:
    """Problem i is solved at turn (i % 3) + 1, except the last one, never solved.

    Records every call's chats; raises after ``fail_after`` calls (an interrupted run).
    """

    name = "scripted"

    def __init__(self, problems, fail_after: int | None = None):
        self.by_prompt = {}
        for i, p in enumerate(problems):
            solve_turn = None if i == len(problems) - 1 else i % 3 + 1
            self.by_prompt[p.id] = (solve_turn, p.reference_solution, p.entry_point)
        self.prompts = {}
        self.calls: list[list[list[dict]]] = []
        self.fail_after = fail_after

    def generate(self, chats, params: SamplingParams):
        assert params.n == 1
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.calls.append(chats)
        out = []
        for chat in chats:
            pid = next(pid for pid in self.by_prompt if f"def {self.by_prompt[pid][2]}(" in chat[0]["content"])
            solve_turn, reference, entry = self.by_prompt[pid]
            turn = (len(chat) + 1) // 2
            if solve_turn is not None and turn >= solve_turn:
                code = reference
            else:
                code = f"def {entry}(*args):\n    return None\n"
            out.append([Generation(f"Sure.\n```python\n{code}```\n", prompt_tokens=len(chat) * 10, completion_tokens=7)])
        return out


def _config(problems, **kw):
    base = dict(env_id=ENV, problem_ids=tuple(p.id for p in problems), n=2, max_turns=3, progress=False)
    base.update(kw)
    return RolloutConfig(**base)


def test_batched_multi_turn_episodes_are_recorded(problems, tmp_path):
    policy = ScriptedPolicy(problems)
    result = run_rollouts(policy, _config(problems), tmp_path / "run")
    trajs = result.trajectories
    assert [(t.problem_id, t.sample_index) for t in trajs] == [(p.id, j) for p in problems for j in range(2)]
    # one generate call per turn across all live episodes: 8 live, then 6, then 4
    assert [len(c) for c in policy.calls] == [8, 6, 4]
    for i, t in enumerate(trajs):
        expected_turns = 3 if i // 2 == N_PROBLEMS - 1 else (i // 2) % 3 + 1
        assert len(t.turns) == expected_turns
        assert t.success == (i // 2 != N_PROBLEMS - 1)
        assert [turn.public_passed for turn in t.turns[:-1]] == [False] * (expected_turns - 1)
        assert all(turn.completion_tokens == 7 for turn in t.turns)
        assert t.prompt.startswith("Write a Python function implementation")
        assert t.env_id == ENV and t.policy_name == "scripted"
    # the turn-2 chat is prompt, response, "Feedback:\n..." as the env renders it
    second = policy.calls[1][0]
    assert [m["role"] for m in second] == ["user", "assistant", "user"]
    assert second[2]["content"].startswith("Feedback:\n")
    assert result.stats.episodes == 8 and result.stats.executions == 18
    assert result.stats.completion_tokens == 7 * 18
    # stored as a datasets Parquet table
    assert [t.to_row() for t in load_trajectories(tmp_path / "run")] == [t.to_row() for t in trajs]
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_parquet(str(tmp_path / "run" / "trajectories" / "data-00000-of-00001.parquet"),
                                       cache_dir=str(tmp_path / "hf"))
    assert len(ds) == 8 and ds[0]["turns"][0]["status"] == trajs[0].turns[0].status


def test_live_episode_limit_bounds_the_batch(problems):
    policy = ScriptedPolicy(problems)
    trajs = collect_rollouts(policy, _config(problems, max_live_episodes=3))
    assert max(len(c) for c in policy.calls) == 3
    assert len(trajs) == 8


def test_interrupted_run_resumes_without_duplicates_or_losses(problems, tmp_path):
    out = tmp_path / "run"
    first = ScriptedPolicy(problems, fail_after=2)
    with pytest.raises(KeyboardInterrupt):
        run_rollouts(first, _config(problems, shard_size=1, max_live_episodes=4), out)
    saved = load_trajectories(out / "shards")
    assert 0 < len(saved) < 8
    second = ScriptedPolicy(problems)
    trajs = collect_rollouts(second, _config(problems, shard_size=1, max_live_episodes=4), out)
    keys = [(t.problem_id, t.sample_index) for t in trajs]
    assert len(keys) == len(set(keys)) == 8
    # the resumed run started only the episodes that were not finished
    started = sum(1 for call in second.calls for chat in call if len(chat) == 1)
    assert started == 8 - len(saved)
    shard_keys = Counter((t.problem_id, t.sample_index) for t in load_trajectories(out / "shards"))
    assert set(shard_keys.values()) == {1}
    # a third run has nothing to do and returns the same episodes
    third = ScriptedPolicy(problems)
    again = collect_rollouts(third, _config(problems, shard_size=1), out)
    assert third.calls == [] and [t.to_row() for t in again] == [t.to_row() for t in trajs]


def test_limit_extends_a_finished_run(problems, tmp_path):
    out = tmp_path / "run"
    collect_rollouts(ScriptedPolicy(problems), _config(problems[:2], problem_ids=None, limit=2, n=1), out)
    policy = ScriptedPolicy(problems)
    trajs = collect_rollouts(policy, _config(problems, problem_ids=None, limit=3, n=1), out)
    assert [t.problem_id for t in trajs] == [p.id for p in problems[:3]]
    assert len(policy.calls[0]) == 1  # only the new problem was started


def test_resume_refuses_a_different_configuration(problems, tmp_path):
    out = tmp_path / "run"
    collect_rollouts(ScriptedPolicy(problems), _config(problems[:1], n=1), out)
    with pytest.raises(ValueError, match="different configuration .*max_turns"):
        collect_rollouts(ScriptedPolicy(problems), _config(problems[:1], n=1, max_turns=2), out)


def test_bad_configs_fail_early(problems):
    with pytest.raises(ValueError, match="RolloutConfig.n"):
        RolloutConfig(ENV, sampling=SamplingParams(n=2))
    with pytest.raises(ValueError, match="max_turns"):
        RolloutConfig(ENV, env_kwargs={"max_turns": 2})
    with pytest.raises(UnknownEnvError, match="MuCode-HumanEval-v0"):
        collect_rollouts(ScriptedPolicy(problems), RolloutConfig("MuCode-HumanEvl-v0"))
    with pytest.raises(UnknownProblemError):
        collect_rollouts(ScriptedPolicy(problems), RolloutConfig(ENV, problem_ids=("HumanEval/9999",), progress=False))


def test_policy_returning_the_wrong_shape_is_an_error(problems):
    class Broken:
        def generate(self, chats, params):
            return [[Generation("x"), Generation("y")] for _ in chats]

    with pytest.raises(ValueError, match="returned"):
        collect_rollouts(Broken(), _config(problems[:1], n=1))


def test_env_helpers_are_the_public_api():
    # the rollout relies only on these public names of the environment package
    assert callable(mucode_env.step_batch) and callable(mucode_env.to_messages)
