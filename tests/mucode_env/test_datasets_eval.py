"""Reference solutions pass their own tests and wrong ones fail (trusted local evaluator)."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import pytest

from mucode_env.datasets import load_problems
from mucode_env.datasets.check_replay import CHECK_DISPLAY
from mucode_env.datasets.literals import run_check

_spec = importlib.util.spec_from_file_location(
    "datasets_evaluator", Path(__file__).with_name("datasets_evaluator.py")
)
evaluator = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(evaluator)


@pytest.fixture(autouse=True)
def _offline_data(monkeypatch: pytest.MonkeyPatch, data_dir: Path) -> None:
    monkeypatch.setenv("MUCODE_DATA_DIR", str(data_dir))


def _mbpp_all() -> dict[str, object]:
    return {p.id: p for s in ("prompt", "test", "validation", "train") for p in load_problems("mbpp", s)}


def test_mbpp_reference_sample_passes() -> None:
    problems = _mbpp_all()
    # setup-code tasks, dict-subclass returns, a host-side `sys` check, challenge tests
    sample = ["MBPP/1", "MBPP/11", "MBPP/16", "MBPP/40", "MBPP/367", "MBPP/596", "MBPP/927"]
    for problem_id in sample:
        problem = problems[problem_id]
        assert all(evaluator.evaluate_problem(problem, problem.reference_solution)), problem_id


def test_mbpp_wrong_solution_fails() -> None:
    problem = _mbpp_all()["MBPP/11"]
    wrong = "def remove_Occ(s, ch):\n    return s\n"
    assert evaluator.evaluate_problem(problem, wrong) == [False, False, False, False, True]
    always_equal = (
        "class Any:\n    def __eq__(self, other): return True\n"
        "def remove_Occ(s, ch):\n    return Any()\n"
    )
    assert not any(evaluator.evaluate_problem(problem, always_equal))


@pytest.mark.slow
def test_mbpp_all_references_pass() -> None:
    failures = []
    for problem in _mbpp_all().values():
        timeout = 120.0 if problem.id == "MBPP/123" else 30.0  # task 123 takes > 10 s
        if not all(evaluator.evaluate_problem(problem, problem.reference_solution, timeout)):
            failures.append(problem.id)
    assert failures == []


def test_humaneval_structure() -> None:
    problems = load_problems("humaneval")
    assert len(problems) == 164
    assert [p.id for p in problems] == [f"HumanEval/{i}" for i in range(164)]
    for problem in problems:
        assert len(problem.public_tests) == 1 and len(problem.private_tests) >= 1
        assert problem.private_tests[-1].display == CHECK_DISPLAY
        assert problem.reference_solution.startswith(problem.prompt)
        assert len(problem.private_tests[-1].exprs) <= 500
    with_examples = sum(p.metadata["n_docstring_examples"] >= 1 for p in problems)
    assert with_examples == 155
    origins = {p.metadata["public_origin"] for p in problems}
    assert origins == {"docstring", "check_assert", "check_call"}
    first = problems[0].public_tests[0]
    assert first.display == "assert has_close_elements([1.0, 2.0, 3.0], 0.5) == False"
    assert first.exprs == ("has_close_elements([1.0, 2.0, 3.0], 0.5)",)


def test_humaneval_wrong_docstring_examples_are_dropped() -> None:
    problems = {p.id: p for p in load_problems("humaneval")}
    assert "median([-10, 4, 6, 1000, 10, 20])" in problems["HumanEval/47"].metadata["dropped_examples"]
    float_check = problems["HumanEval/2"].public_tests[0]
    assert float_check.exprs == ("truncate_number(3.5)",)
    run_check(float_check.check, [0.5 + 1e-9])


def test_humaneval_all_references_pass() -> None:
    failures = [
        p.id for p in load_problems("humaneval")
        if not all(evaluator.evaluate_problem(p, p.reference_solution))
    ]
    assert failures == []


def test_humaneval_none_returning_solution_fails() -> None:
    for problem in load_problems("humaneval"):
        for test in (*problem.public_tests, *problem.private_tests):
            if test.display.endswith("== None"):  # an example whose answer is None
                continue
            with pytest.raises(Exception):
                run_check(test.check, [None] * len(test.exprs))


def test_humaneval_replay_rejects_unexpected_calls_and_keeps_random_state() -> None:
    problem = {p.id: p for p in load_problems("humaneval")}["HumanEval/53"]
    suite = problem.private_tests[-1]
    random.seed(99)
    before = random.getstate()
    with pytest.raises(AssertionError):
        run_check(suite.check, [0] * len(suite.exprs))
    assert random.getstate() == before
    shifted = suite.check.replace("_MUCODE_INDEX.get(repr(args))", "_MUCODE_INDEX.get(repr(args) + ' ')")
    with pytest.raises(AssertionError, match="unexpected arguments"):
        run_check(shifted, [0] * len(suite.exprs))
