"""The feedback text the model sees after a turn: public-test outcomes only."""

from __future__ import annotations

from collections.abc import Sequence

from mucode_env.problem import TestCase
from mucode_env.sandbox.results import ExecResult, Status

PASSED_TEXT = "Code passed all tests"
TIMEOUT_TEXT = "Code execution timed out"
DEFAULT_FEEDBACK_CHARS = 3000
MAX_OUTPUT_CHARS = 800


def render_feedback(result: ExecResult, tests: Sequence[TestCase], max_chars: int = DEFAULT_FEEDBACK_CHARS) -> str:
    """Render a PUBLIC-test result as the paper's feedback text.

    "Code passed all tests"; a compile/load error with its trimmed traceback; "Code execution
    timed out"; or, per failing test, the test as shown in the prompt with what the program
    returned or raised. Never call this with private tests.

    >>> render_feedback(ExecResult(Status.PASSED), [])
    'Code passed all tests'
    """
    if max_chars < 40:
        raise ValueError(f"max_chars must be at least 40, got {max_chars}")
    if result.passed:
        return PASSED_TEXT
    if result.status is Status.SANDBOX_ERROR:
        raise ValueError("a sandbox error is not model feedback; retry the execution instead")
    parts: list[str] = []
    if result.status is Status.COMPILE_ERROR or all(t.status is Status.NOT_RUN for t in result.tests) and result.message:
        traceback = str(result.extra.get("traceback", "")).strip()
        parts.append(traceback or result.message)
    elif result.status is Status.TIMEOUT and not any(t.status is Status.WRONG_ANSWER for t in result.tests):
        failing = next((tests[i].display for i, t in enumerate(result.tests) if t.status is Status.TIMEOUT), "")
        parts.append(TIMEOUT_TEXT + (f" on test: {failing}" if failing else ""))
    else:
        for test, outcome in zip(tests, result.tests):
            if outcome.passed:
                continue
            lines = [f"Test failed: {test.display.strip()}"]
            if outcome.status is Status.WRONG_ANSWER:
                if outcome.got is not None:
                    lines.append(f"Your code {'printed' if test.is_stdio else 'returned'}: {outcome.got}")
                if outcome.message and outcome.message not in ("wrong output",):
                    lines.append(outcome.message)
            elif outcome.status is Status.TIMEOUT:
                lines.append(TIMEOUT_TEXT)
            else:
                lines.append(outcome.traceback.strip() or outcome.message)
            parts.append("\n".join(lines))
    if result.output.strip():
        output = result.output.strip()
        if len(output) > MAX_OUTPUT_CHARS:
            output = output[: MAX_OUTPUT_CHARS // 2] + "\n...\n" + output[-MAX_OUTPUT_CHARS // 2:]
        parts.append("Program output:\n" + output)
    text = "\n\n".join(p for p in parts if p)
    if len(text) > max_chars:
        text = text[: max_chars - 20].rstrip() + "\n... [truncated]"
    return text
