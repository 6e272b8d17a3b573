"""mucode_env.feedback: the text the model sees after a turn, from public-test results only."""

from __future__ import annotations

import pytest

from mucode_env.feedback import PASSED_TEXT, TIMEOUT_TEXT, render_feedback
from mucode_env.problem import TestCase
from mucode_env.sandbox import ExecResult, Status, TestOutcome


def test_feedback_renders_each_kind_of_failure():
    tests = [TestCase.equals("f(1)", "2"), TestCase.equals("f(2)", "3")]
    assert render_feedback(ExecResult(Status.PASSED), tests) == PASSED_TEXT
    wrong = ExecResult(Status.WRONG_ANSWER, (TestOutcome(Status.PASSED, got="2"),
                                             TestOutcome(Status.WRONG_ANSWER, got="4", message="")),
                       output="debug line\n")
    text = render_feedback(wrong, tests)
    assert "Test failed: assert f(2) == 3" in text and "Your code returned: 4" in text
    assert "assert f(1) == 2" not in text and "debug line" in text
    timeout = ExecResult(Status.TIMEOUT, (TestOutcome(Status.TIMEOUT), TestOutcome(Status.NOT_RUN)))
    assert render_feedback(timeout, tests) == TIMEOUT_TEXT + " on test: assert f(1) == 2"
    compile_error = ExecResult(Status.COMPILE_ERROR, (TestOutcome(Status.NOT_RUN),) * 2, message="SyntaxError: x",
                               extra={"traceback": "SyntaxError: invalid syntax"})
    assert render_feedback(compile_error, tests) == "SyntaxError: invalid syntax"
    error = ExecResult(Status.RUNTIME_ERROR, (TestOutcome(Status.RUNTIME_ERROR, message="ZeroDivisionError: x",
                                                          traceback="Traceback...\nZeroDivisionError: x"),
                                              TestOutcome(Status.PASSED)))
    assert "ZeroDivisionError" in render_feedback(error, tests)


def test_feedback_is_bounded_and_refuses_sandbox_errors():
    tests = [TestCase.equals(f"f({i})", "0") for i in range(100)]
    result = ExecResult(Status.WRONG_ANSWER, tuple(TestOutcome(Status.WRONG_ANSWER, got="x" * 200) for _ in tests),
                        output="y" * 10000)
    text = render_feedback(result, tests, max_chars=500)
    assert len(text) <= 500 and text.endswith("[truncated]")
    with pytest.raises(ValueError):
        render_feedback(ExecResult(Status.SANDBOX_ERROR), tests)
    with pytest.raises(ValueError):
        render_feedback(result, tests, max_chars=10)
