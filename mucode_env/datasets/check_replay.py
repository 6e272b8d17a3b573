"""Record/replay of HumanEval's official ``check(candidate)`` suite as one host-checked test.

The suite has loops, random inputs and helper calls, so it cannot be split into asserts
statically. Instead it is run once on the host (trusted dataset code) with ``candidate`` bound
to a recorder around the canonical solution, with ``random`` seeded to ``CHECK_SEED`` (the
global state is restored afterwards). Every distinct argument tuple becomes one expression
``entry_point(*args)`` for the sandbox child. The ``check`` is a host program that re-seeds
``random`` identically, defines the prompt's helper code (trusted dataset text) and the suite,
binds ``candidate`` to a function that returns the child's value for those arguments (a deep
copy; arguments it never saw raise ``AssertionError``) and calls ``check(candidate)``. As in
the official harness, the entry point's own name also means the candidate (HumanEval/33's
suite calls ``sort_third`` directly), both when recording and when replaying.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from typing import Any

from mucode_env.datasets.literals import (
    NotPlainError,
    from_source,
    literal_source,
    run_trusted_test,
    same_value,
)
from mucode_env.errors import DatasetError
from mucode_env.problem import TestCase

CHECK_SEED = 1234
CHECK_DISPLAY = "official check suite (hidden)"
MAX_RECORDED_CALLS = 500

_REPLAY_TEMPLATE = '''\
import copy as _mucode_copy
import random as _mucode_random
_mucode_state = _mucode_random.getstate()
_mucode_random.seed({seed})
try:
{body}
    _MUCODE_INDEX = {index}
    _MUCODE_VALUES = [{values}]

    def _mucode_candidate(*args):
        position = _MUCODE_INDEX.get(repr(args))
        if position is None:
            raise AssertionError("candidate called with unexpected arguments")
        return _mucode_copy.deepcopy(_MUCODE_VALUES[position])

    {entry_point} = _mucode_candidate
    check(_mucode_candidate)
finally:
    _mucode_random.setstate(_mucode_state)
'''


def _indent(code: str) -> str:
    return "\n".join(("    " + line) if line.strip() else "" for line in code.splitlines())


def _with_seed(seed: int, action: Callable[[], None]) -> None:
    state = random.getstate()
    random.seed(seed)
    try:
        action()
    finally:
        random.setstate(state)


def record_calls(
    program: str, check_code: str, entry_point: str, seed: int = CHECK_SEED
) -> tuple[dict[str, Any], list[tuple[Any, ...]]]:
    """Run ``check(candidate)`` with the reference and record each distinct argument tuple.

    Args:
        program: the reference solution (HumanEval prompt + canonical solution).
        check_code: the official test code defining ``check(candidate)``.
        entry_point: the function under test.
        seed: the seed of the global ``random`` module during the run.

    Returns:
        The namespace the reference ran in, and the argument tuples in first-call order.

    Raises:
        DatasetError: if the reference fails its own suite, or a call uses keyword arguments.
    """
    namespace: dict[str, Any] = {"__name__": "__mucode_reference__"}
    exec(compile(program, "<reference>", "exec"), namespace)  # noqa: S102 - dataset code
    reference = namespace[entry_point]
    calls: list[tuple[Any, ...]] = []
    seen: set[str] = set()

    def recorder(*args: Any, **kwargs: Any) -> Any:
        if kwargs:
            raise DatasetError(f"{entry_point}: the check suite passes keyword arguments")
        key = repr(args)
        if key not in seen:
            seen.add(key)
            calls.append(copy.deepcopy(args))
        return reference(*args)

    suite: dict[str, Any] = dict(namespace)
    exec(compile(check_code, "<check>", "exec"), suite)  # noqa: S102 - dataset code
    suite[entry_point] = recorder  # as in the official harness, the name is the candidate's
    try:
        _with_seed(seed, lambda: suite["check"](recorder))
    except AssertionError as exc:
        raise DatasetError(f"{entry_point}: the canonical solution fails its check suite") from exc
    return namespace, calls


def check_suite_test(
    prompt: str, canonical: str, check_code: str, entry_point: str, seed: int = CHECK_SEED
) -> TestCase:
    """The official check suite as one FUNCTION-style test (see module docstring).

    Args:
        prompt: the HumanEval prompt (helpers such as ``poly`` live here).
        canonical: the canonical solution body.
        check_code: the official test code defining ``check(candidate)``.
        entry_point: the function under test.
        seed: the seed of ``random`` for recording and replaying.

    Returns:
        A test with one expression per distinct recorded call and the replay program as
        ``check``; it has been verified to pass on the canonical solution.

    Raises:
        DatasetError: if arguments are not plain data, the suite records too many calls, or
            the replay does not pass on the canonical solution.
    """
    namespace, calls = record_calls(prompt + canonical, check_code, entry_point, seed)
    if not calls:
        raise DatasetError(f"{entry_point}: the check suite never calls candidate")
    if len(calls) > MAX_RECORDED_CALLS:
        raise DatasetError(
            f"{entry_point}: the check suite makes {len(calls)} distinct calls "
            f"(limit {MAX_RECORDED_CALLS})"
        )
    exprs = []
    for args in calls:
        try:
            source = literal_source(args)
        except NotPlainError as exc:
            raise DatasetError(f"{entry_point}: recorded arguments are not plain: {exc}") from exc
        if not same_value(from_source(source), args):
            raise DatasetError(f"{entry_point}: arguments {args!r} do not round-trip as source")
        exprs.append(f"{entry_point}(*{source})")
    index = "{" + ", ".join(f"{repr(args)!r}: {i}" for i, args in enumerate(calls)) + "}"
    values = ", ".join(f"_{i}" for i in range(len(calls)))
    body = _indent(prompt.rstrip() + "\n\n" + check_code.strip())
    check = _REPLAY_TEMPLATE.format(
        seed=seed, body=body, index=index, values=values, entry_point=entry_point
    )
    test = TestCase(display=CHECK_DISPLAY, exprs=tuple(exprs), check=check)
    try:
        run_trusted_test(namespace, test)
    except Exception as exc:
        raise DatasetError(
            f"{entry_point}: the replayed check suite fails on the canonical solution ({exc!r})"
        ) from exc
    return test
