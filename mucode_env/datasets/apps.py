"""APPS (Hendrycks et al. 2021): the 150-problem selection used by MapCoder ("APPS-150").

Offline file ``apps/selected150.jsonl`` (split ``"test"``): fields ``id, description,
difficulty, sample_io, test_list, starter_code``. It holds 150 rows but only 128 distinct
problems (22 rows repeat another row exactly); repeats are dropped, first row kept. Public tests
are the statement's ``sample_io`` (the first ``test_list`` entry when it is empty); private
tests are the ``test_list`` entries whose input is not already public. There are no reference
solutions (``reference_solution = ""``).

Standard-input problems (no starter code) are STDIO tests (``output[0]`` is the expected
stdout). Call-based problems (with ``starter_code``) are FUNCTION tests of the starter's
function: MapCoder flattened each call's arguments into one line each, so arguments are read
back per position: a position whose values all parse as Python literals is parsed, otherwise
it is taken as raw strings; surplus lines are joined into the first argument (a string that
contained newlines). This is a heuristic: an argument that was a digit string (e.g. a PIN)
comes back as an int. ``metadata["call_based"]`` marks these problems. The hub source
(``codeparrot/apps``) has exact JSON arguments and needs no such guess.
"""

from __future__ import annotations

import ast
import json
import os
from typing import Any

from mucode_env.datasets.codecontests import stdio_test
from mucode_env.datasets.literals import literal_source
from mucode_env.datasets.source import Record, check_choice, load_hub, load_records
from mucode_env.datasets.time_limits import (
    DEFAULT_FUNCTION_TIME_LIMIT_S,
    DEFAULT_STDIO_TIME_LIMIT_S,
    time_limit_for,
)
from mucode_env.problem import IOStyle, Problem, TestCase

HUB_NAME = "codeparrot/apps"
LOCAL_FILE = "apps/selected150.jsonl"
LICENSE = "MIT"
SPLITS = ("test", "train")

_CHECK_HELPER = '''\
import math
def _same(a, b):
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, float) or isinstance(b, float):
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)
    return a == b
'''


def _function_name(starter_code: str) -> str | None:
    try:
        tree = ast.parse(starter_code.strip() + "\n    pass")
    except SyntaxError:
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            return node.name
    return None


def _arity(starter_code: str) -> int:
    tree = ast.parse(starter_code.strip() + "\n    pass")
    function = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef))
    return len(function.args.args)


def _literal(text: str) -> tuple[bool, Any]:
    try:
        return True, ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False, text


def _split_lines(text: str, arity: int) -> list[str]:
    lines = text.split("\n")
    if arity and len(lines) > arity:  # a first argument that itself contained newlines
        extra = len(lines) - arity
        lines = ["\n".join(lines[: extra + 1]), *lines[extra + 1 :]]
    return lines


def call_test(function: str, args: list[Any], expected: Any) -> TestCase:
    """A FUNCTION test: ``function(*args)`` in the sandbox, compared on the host."""
    call = f"{function}({', '.join(literal_source(a) for a in args)})"
    expected_source = literal_source(expected)
    return TestCase(
        display=f"assert {call} == {expected_source}",
        exprs=(call,),
        check=_CHECK_HELPER + f"assert _same(_0, {expected_source})",
    )


def _call_based_tests(record: Record, entries: list[dict[str, Any]]) -> list[TestCase]:
    function = _function_name(record["starter_code"]) or "solution"
    arity = _arity(record["starter_code"])
    rows = [_split_lines(e["input"], arity) for e in entries]
    width = max((len(r) for r in rows), default=0)
    parse_position = [
        all(_literal(row[i])[0] for row in rows if i < len(row)) for i in range(width)
    ]
    tests = []
    for row, entry in zip(rows, entries):
        args = [_literal(v)[1] if parse_position[i] else v for i, v in enumerate(row)]
        tests.append(call_test(function, args, entry["output"][0]))
    return tests


def _split_entries(record: Record) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    public = list(record.get("sample_io") or []) or list(record["test_list"][:1])
    public_inputs = {e["input"] for e in public}
    private = [e for e in record["test_list"] if e["input"] not in public_inputs]
    return public, private


def _local_problem(record: Record) -> Problem:
    public, private = _split_entries(record)
    problem_id = f"APPS/{record['id']}"
    starter = (record.get("starter_code") or "").strip()
    prompt = record["description"].strip()
    if starter:
        tests = _call_based_tests(record, public + private)
        entry_point = _function_name(starter)
        prompt += f"\n\nUse this starter code:\n{starter}"
        default_s = DEFAULT_FUNCTION_TIME_LIMIT_S
    else:
        tests = [stdio_test(e["input"], e["output"][0]) for e in public + private]
        entry_point = None
        default_s = DEFAULT_STDIO_TIME_LIMIT_S
    return Problem(
        id=problem_id,
        prompt=prompt,
        io_style=IOStyle.FUNCTION if starter else IOStyle.STDIO,
        entry_point=entry_point,
        public_tests=tuple(tests[: len(public)]),
        private_tests=tuple(tests[len(public) :]),
        reference_solution="",
        time_limit_s=time_limit_for(problem_id, default_s),
        source="apps",
        license=LICENSE,
        split="test",
        metadata={
            "apps_id": int(record["id"]),
            "difficulty": record.get("difficulty", ""),
            "call_based": bool(starter),
            "starter_code": starter,
        },
    )


def _hub_problem(record: Record, split: str) -> Problem | None:
    """A ``codeparrot/apps`` row; None when it has no tests. First test public, rest private."""
    io = json.loads(record["input_output"]) if record.get("input_output") else {}
    inputs, outputs = io.get("inputs") or [], io.get("outputs") or []
    if not inputs:
        return None
    function = io.get("fn_name")
    if function:
        tests = [
            call_test(function, list(i), o[0] if isinstance(o, list) and len(o) == 1 else o)
            for i, o in zip(inputs, outputs)
        ]
    else:
        tests = [stdio_test(i, o if isinstance(o, str) else "\n".join(o))
                 for i, o in zip(inputs, outputs)]
    solutions = json.loads(record["solutions"]) if record.get("solutions") else []
    starter = (record.get("starter_code") or "").strip()
    prompt = record["question"].strip() + (f"\n\nUse this starter code:\n{starter}" if starter else "")
    problem_id = f"APPS/{record['problem_id']}"
    default_s = DEFAULT_FUNCTION_TIME_LIMIT_S if function else DEFAULT_STDIO_TIME_LIMIT_S
    return Problem(
        id=problem_id,
        prompt=prompt,
        io_style=IOStyle.FUNCTION if function else IOStyle.STDIO,
        entry_point=function,
        public_tests=tuple(tests[:1]),
        private_tests=tuple(tests[1:]),
        reference_solution=solutions[0] if solutions else "",
        time_limit_s=time_limit_for(problem_id, default_s),
        source="apps",
        license=LICENSE,
        split=split,
        metadata={"apps_id": int(record["problem_id"]), "difficulty": record.get("difficulty", ""),
                  "call_based": bool(function), "starter_code": starter},
    )


def load_apps(
    split: str = "test", data_dir: str | os.PathLike[str] | None = None, source: str = "auto"
) -> list[Problem]:
    """APPS problems: the offline APPS-150 selection (split ``"test"``) or the hub's splits.

    Args:
        split: ``"test"`` (offline APPS-150, or the hub's test split) or ``"train"`` (hub).
        data_dir: folder holding ``apps/selected150.jsonl`` (default: ``$MUCODE_DATA_DIR``).
        source: ``"auto"``, ``"local"`` or ``"hub"``.

    Returns:
        The problems in file order without repeats (offline), or by hub order.

    Raises:
        DatasetError: unknown split/source, or no data available.
    """
    check_choice("split", split, SPLITS)
    records, origin = load_records(
        "apps", LOCAL_FILE, data_dir, source if split == "test" else "hub",
        lambda: [dict(r) for r in load_hub(HUB_NAME, split=split)],
    )
    if origin == "hub":
        problems = (_hub_problem(r, split) for r in records)
        return [p for p in problems if p is not None]
    seen: set[int] = set()
    unique = []
    for record in records:
        if int(record["id"]) not in seen:
            seen.add(int(record["id"]))
            unique.append(record)
    return [_local_problem(r) for r in unique]
