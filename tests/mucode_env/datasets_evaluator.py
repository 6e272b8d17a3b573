"""A small trusted evaluator for the dataset tests (not the sandbox: no isolation).

It runs ``code``, then ``test_setup``, then each test's ``exprs`` in a fresh subprocess, sends
the values back as ``repr`` text (only plain builtin types, as in the sandbox; subclasses of
the containers such as ``Counter`` are converted to their base type),
and applies each test's ``check`` on the host with ``_0, _1, ...`` bound to the parsed values.
STDIO tests are compared token by token, floats with tolerance 1e-6.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Sequence

from mucode_env.problem import Problem, TestCase

_CHILD = r'''
import json, sys
PLAIN = (type(None), bool, int, float, complex, str, bytes)
def to_plain(v):
    if type(v) in PLAIN:
        return v
    for base in (dict, list, tuple, set, frozenset):  # Counter, defaultdict, namedtuple...
        if isinstance(v, base):
            if base is dict:
                return {to_plain(k): to_plain(x) for k, x in v.items()}
            return base(to_plain(x) for x in v)
    raise TypeError(f"not a plain value: {type(v).__name__}")
job = json.loads(sys.stdin.read())
sys.setrecursionlimit(10000)
out = []
ns = {"__name__": "__main__"}
try:
    exec(compile(job["code"], "<solution>", "exec"), ns)
    exec(compile(job["setup"], "<setup>", "exec"), ns)
except BaseException as exc:
    print(json.dumps({"load_error": repr(exc)}))
    sys.exit(0)
for exprs in job["tests"]:
    values = []
    try:
        for src in exprs:
            values.append(repr(to_plain(eval(src, ns))))
        out.append({"values": values})
    except BaseException as exc:
        out.append({"error": repr(exc)})
print(json.dumps({"results": out}))
'''

_LITERAL_NAMES = {"__builtins__": {}, "inf": math.inf, "nan": math.nan}


def parse_value(text: str) -> object:
    """The value of a plain-data ``repr`` (``inf``/``nan`` floats included)."""
    return eval(text, dict(_LITERAL_NAMES))  # trusted: produced by our own child, plain types


def run_check(check: str, values: Sequence[object]) -> bool:
    """Run a host-side ``check`` with ``_0, _1, ...`` bound; True iff it raises nothing."""
    namespace = {f"_{i}": v for i, v in enumerate(values)}
    try:
        exec(compile(check, "<check>", "exec"), namespace)
    except Exception:
        return False
    return True


def evaluate_function(
    code: str, setup: str, tests: Sequence[TestCase], timeout_s: float = 60.0
) -> list[bool]:
    """Pass/fail of each FUNCTION test for ``code`` (one subprocess for all tests)."""
    job = json.dumps({"code": code, "setup": setup, "tests": [list(t.exprs) for t in tests]})
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD], input=job, capture_output=True, text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        return [False] * len(tests)
    lines = proc.stdout.strip().splitlines()
    report = json.loads(lines[-1]) if lines else {"load_error": proc.stderr}
    if "results" not in report:
        return [False] * len(tests)
    verdicts = []
    for test, result in zip(tests, report["results"]):
        if "error" in result:
            verdicts.append(False)
        else:
            verdicts.append(run_check(test.check, [parse_value(v) for v in result["values"]]))
    return verdicts


def _tokens_match(got: str, want: str) -> bool:
    a, b = got.split(), want.split()
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x == y:
            continue
        try:
            fx, fy = float(x), float(y)
        except ValueError:
            return False
        if not math.isclose(fx, fy, rel_tol=1e-6, abs_tol=1e-6):
            return False
    return True


def evaluate_stdio(code: str, tests: Sequence[TestCase], timeout_s: float = 10.0) -> list[bool]:
    """Pass/fail of each STDIO test for ``code`` (one subprocess per test)."""
    verdicts = []
    for test in tests:
        try:
            proc = subprocess.run(
                [sys.executable, "-c", code], input=test.stdin, capture_output=True, text=True,
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired:
            verdicts.append(False)
            continue
        verdicts.append(proc.returncode == 0 and _tokens_match(proc.stdout, test.expected_stdout))
    return verdicts


def evaluate_problem(problem: Problem, code: str, timeout_s: float = 60.0) -> list[bool]:
    """Pass/fail of every public then private test of ``problem`` for ``code``."""
    tests = list(problem.public_tests) + list(problem.private_tests)
    if all(t.is_stdio for t in tests):
        return evaluate_stdio(code, tests)
    return evaluate_function(code, problem.test_setup, tests, timeout_s)
