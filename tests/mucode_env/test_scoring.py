"""Scoring outside an episode judges exactly like the environment's oracle."""

from __future__ import annotations

import gymnasium as gym
import pytest

from mucode_env.errors import UnknownProblemError
from mucode_env.problem import IOStyle, Problem, TestCase
from mucode_env.sandbox import Sandbox, SandboxConfig
from mucode_env.scoring import ProblemRef, ProblemStore, score_solutions


def test_problem_references_round_trip_and_name_the_format():
    ref = ProblemRef.parse("mbpp/test/MBPP/11")
    assert ref == ProblemRef("mbpp", "test", "MBPP/11")
    assert str(ref) == "mbpp/test/MBPP/11"
    assert ProblemRef.parse("codecontests/train/CodeContests/x/y").problem_id == "CodeContests/x/y"
    for bad in ("mbpp/test", "mbpp//MBPP/11", "", None):
        with pytest.raises(ValueError, match="benchmark/split/problem_id"):
            ProblemRef.parse(bad)


def test_store_loads_once_and_suggests_close_ids(data_dir):
    store = ProblemStore(data_dir)
    assert store.problems("mbpp", "test") is store.problems("mbpp", "test")
    assert store.get("mbpp/test/MBPP/11").id == "MBPP/11"
    with pytest.raises(UnknownProblemError, match="Did you mean"):
        store.get("mbpp/test/MBPP/1l")


def test_custom_problems_can_be_added():
    problem = Problem("C/1", "double x", IOStyle.FUNCTION, "f", (TestCase("f(1)", ("f(1)",), "assert _0 == 2"),),
                      (TestCase("f(2)", ("f(2)",), "assert _0 == 4"),), "def f(x):\n    return 2 * x\n")
    store = ProblemStore()
    store.add("custom", "test", [problem])
    assert store.get(ProblemRef("custom", "test", "C/1")) is problem


def test_scores_equal_the_environment_oracle(data_dir, sandbox):
    store = ProblemStore(data_dir)
    problems = store.problems("mbpp", "test")[:4]
    solutions = [f"```python\n{p.reference_solution}\n```" for p in problems]
    solutions[1] = "```python\ndef nothing():\n    pass\n```"  # fails its tests
    solutions[2] = "I cannot solve this."  # no code block: the whole text is the program
    with Sandbox(SandboxConfig(cache_size=0, n_workers=1)) as own:  # executions of its own, no shared cache
        scores = score_solutions(own, list(zip(problems, solutions)))
    env = gym.make("MuCode-MBPP-v0", problems=problems, sandbox=sandbox, max_turns=1)
    for problem, solution, score in zip(problems, solutions, scores):
        env.reset(options={"problem_id": problem.id})
        _, reward, _, _, info = env.step(solution)
        assert (score.score, score.public_passed, score.private_passed) == \
            (reward, info["public_passed"], info["private_passed"])
        assert score.public.status.value == info["status"]
    assert [s.score for s in scores] == [1.0, 0.0, 0.0, 1.0]
