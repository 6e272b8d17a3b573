"""Python source for plain data values, and a trusted in-process runner for dataset code.

The sandbox returns only plain builtin values (None, bool, int, float, complex, str, bytes,
list, tuple, set, frozenset, dict). ``literal_source`` writes such a value as source that
evaluates back to an equal value (``float('inf')``/``float('nan')`` included), so recorded
arguments can be put into test expressions. ``run_trusted_test`` evaluates a test against a
*reference* solution in this process; it is only ever used on dataset code (trusted), at load
time, to check docstring examples and recorded check suites.
"""

from __future__ import annotations

import math
from typing import Any

from mucode_env.problem import TestCase

_SCALARS = (type(None), bool, int, str, bytes)
_EVAL_GLOBALS = {"__builtins__": {}, "float": float, "complex": complex}


class NotPlainError(TypeError):
    """A value that is not plain builtin data (it cannot cross the sandbox boundary)."""


def literal_source(value: Any) -> str:
    """Source text that evaluates (with only ``float``/``complex`` available) to ``value``.

    Raises:
        NotPlainError: for values of other types (objects, functions, subclasses).
    """
    kind = type(value)
    if kind in _SCALARS:
        return repr(value)
    if kind is float:
        return repr(value) if math.isfinite(value) else f"float({repr(value)!r})"
    if kind is complex:
        if not (math.isfinite(value.real) and math.isfinite(value.imag)):
            return f"complex({literal_source(value.real)}, {literal_source(value.imag)})"
        return repr(value)
    if kind is list:
        return "[" + ", ".join(literal_source(v) for v in value) + "]"
    if kind is tuple:
        items = [literal_source(v) for v in value]
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    if kind in (set, frozenset):
        inner = "[" + ", ".join(literal_source(v) for v in value) + "]"
        return f"{kind.__name__}({inner})"  # needs the builtin; only used for return values
    if kind is dict:
        pairs = (f"{literal_source(k)}: {literal_source(v)}" for k, v in value.items())
        return "{" + ", ".join(pairs) + "}"
    raise NotPlainError(f"{kind.__name__} is not plain builtin data")


def same_value(a: Any, b: Any) -> bool:
    """Equality that treats NaN as equal to NaN (for round-trip checks)."""
    return repr(a) == repr(b) or a == b


def from_source(source: str) -> Any:
    """Evaluate text produced by :func:`literal_source` (trusted, our own output)."""
    return eval(source, {**_EVAL_GLOBALS, "set": set, "frozenset": frozenset})  # noqa: S307


def run_check(check: str, values: list[Any]) -> None:
    """Run a host-side ``check`` with ``_0, _1, ...`` bound to ``values``; raises on failure."""
    namespace: dict[str, Any] = {f"_{i}": v for i, v in enumerate(values)}
    exec(compile(check, "<check>", "exec"), namespace)  # noqa: S102 - dataset code


def run_trusted_test(namespace: dict[str, Any], test: TestCase) -> None:
    """Evaluate ``test`` against a reference solution already executed into ``namespace``.

    Values cross a plain-data boundary (``literal_source`` then ``from_source``), as they would
    from the sandbox. Raises whatever the expressions or the check raise.
    """
    values = [from_source(literal_source(eval(src, namespace))) for src in test.exprs]  # noqa: S307
    run_check(test.check, values)
