"""The problem record every benchmark loader produces, and its test cases.

A test never carries its expected answer into the sandbox: the child evaluates only the
expressions in ``TestCase.exprs`` (or runs the program on ``stdin``) and returns plain values or
captured stdout; the verdict is computed in the host from ``check`` / ``expected_stdout``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class IOStyle(str, enum.Enum):
    """How a problem's tests talk to the program."""

    FUNCTION = "function"  # call expressions evaluated after the program is loaded (MBPP, HumanEval)
    STDIO = "stdio"  # the program reads stdin and writes stdout (CodeContests, APPS)


@dataclass(frozen=True)
class TestCase:
    """One test of a problem.

    Attributes:
        display: how the test is shown to the model (an ``assert`` line, or input/output text).
            Only public tests are ever shown.
        exprs: FUNCTION style: Python expressions the sandbox child evaluates after running the
            program and the problem's ``test_setup``; each must return plain builtin data.
        check: FUNCTION style: host-side Python statements, written by the dataset (trusted), run
            with the names ``_0``, ``_1``, ... bound to the child's values for ``exprs``. The test
            passes iff ``check`` runs without raising. Example: ``assert _0 == [85, 75]``.
        stdin: STDIO style: the program's standard input.
        expected_stdout: STDIO style: the expected standard output (compared token-wise on the
            host, floats with tolerance).
    """

    __test__ = False  # not a pytest class

    display: str
    exprs: tuple[str, ...] = ()
    check: str = ""
    stdin: str = ""
    expected_stdout: str = ""

    @property
    def is_stdio(self) -> bool:
        return not self.exprs and not self.check

    @classmethod
    def equals(cls, call: str, expected: str) -> "TestCase":
        """A FUNCTION-style test ``assert <call> == <expected>`` (``expected``: Python source).

        >>> TestCase.equals("f(1)", "2").check
        'assert _0 == 2'
        """
        return cls(f"assert {call} == {expected}", (call,), f"assert _0 == {expected}")


@dataclass(frozen=True)
class Problem:
    """One benchmark problem with the paper's public/private test split.

    Attributes:
        id: unique within its benchmark, e.g. ``"MBPP/11"``, ``"HumanEval/0"``.
        prompt: the natural-language task (for HumanEval, the signature and docstring).
        io_style: FUNCTION or STDIO.
        entry_point: the function the tests call (FUNCTION style), else None.
        public_tests: shown to the model and used for feedback and early termination.
        private_tests: hidden; their text and results never reach an observation.
        reference_solution: a program that passes every test (used by ``mucode doctor``).
        time_limit_s: per-test time limit, calibrated from the reference solution with a floor.
        test_setup: code run after the program and before the tests (MBPP ``test_setup_code``).
        source: benchmark name, e.g. ``"mbpp"``.
        license: the dataset's license.
        split: the split this problem was loaded from.
    """

    id: str
    prompt: str
    io_style: IOStyle
    entry_point: str | None
    public_tests: tuple[TestCase, ...]
    private_tests: tuple[TestCase, ...]
    reference_solution: str
    time_limit_s: float = 2.0
    test_setup: str = ""
    source: str = ""
    license: str = ""
    split: str = ""
    metadata: dict = field(default_factory=dict, compare=False, hash=False)
