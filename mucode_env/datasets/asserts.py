"""Turn a dataset ``assert`` line into a host-checked FUNCTION-style ``TestCase``.

The verdict must never be decided inside the untrusted program. So every *outermost* call of a
function the reference solution defines is lifted out of the assertion into ``exprs`` (the
sandbox child evaluates it and returns a plain value), and replaced by the name ``_i`` in
``check``, which the host runs with ``_0, _1, ...`` bound to those values:

    assert set(f(x)) == set([1, 2])   ->   exprs=("f(x)",), check="assert set(_0) == set([1, 2])"

Calls nested inside a lifted call stay inside it (``f(g(x))`` is one expression). When an
assertion calls none of the solution's names, the whole test expression is lifted instead.
Standard-library modules the remaining check uses (``sys.getsizeof`` in MBPP/596) are imported
at the top of ``check``, since the host runs it in an empty namespace.
"""

from __future__ import annotations

import ast
import builtins
import sys
import warnings
from collections.abc import Collection

from mucode_env.errors import DatasetError
from mucode_env.problem import TestCase


def parse_quietly(source: str) -> ast.Module:
    """``ast.parse`` without the warnings dataset text triggers (``"\\d"`` escape sequences)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (SyntaxWarning, DeprecationWarning))
        return ast.parse(source)


def top_level_names(code: str) -> frozenset[str]:
    """Names of the functions and classes a program defines at module level.

    Args:
        code: Python source (a reference solution).

    Returns:
        The set of top-level ``def``/``async def``/``class`` names; empty if the code does not
        parse.
    """
    try:
        tree = parse_quietly(code)
    except SyntaxError:
        return frozenset()
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return frozenset(node.name for node in tree.body if isinstance(node, kinds))


class _Lifter(ast.NodeTransformer):
    """Replaces each outermost call of a callee by ``Name('_i')`` and collects its source."""

    def __init__(self, callee_names: Collection[str]) -> None:
        self.callee_names = frozenset(callee_names)
        self.exprs: list[str] = []

    def visit_Call(self, node: ast.Call) -> ast.AST:
        if isinstance(node.func, ast.Name) and node.func.id in self.callee_names:
            return self._lift(node)
        return self.generic_visit(node)

    def visit_Lambda(self, node: ast.Lambda) -> ast.AST:
        return node  # a call inside a lambda body may use the lambda's parameters: leave it

    def _lift(self, node: ast.expr) -> ast.Name:
        name = ast.Name(id=f"_{len(self.exprs)}", ctx=ast.Load())
        self.exprs.append(ast.unparse(node))
        return ast.copy_location(name, node)


def assert_to_test(
    assert_source: str, callee_names: Collection[str], display: str | None = None
) -> TestCase:
    """Split one ``assert`` statement into child expressions and a host-side check.

    Args:
        assert_source: a single ``assert`` statement, e.g. ``"assert f(1) == 2"``.
        callee_names: the functions/classes the reference solution defines at top level
            (see :func:`top_level_names`); their outermost calls are lifted.
        display: the text shown to the model; defaults to ``assert_source`` stripped.

    Returns:
        A FUNCTION-style ``TestCase`` whose ``exprs`` are evaluated in the sandbox and whose
        ``check`` is run on the host with ``_0, _1, ...`` bound to their values.

    Raises:
        DatasetError: if the source is not exactly one ``assert`` statement.

    >>> assert_to_test("assert set(f(x)) == set([1,2])", {"f"}).check
    'assert set(_0) == set([1, 2])'
    """
    source = assert_source.strip()
    try:
        tree = parse_quietly(source)
    except SyntaxError as exc:
        raise DatasetError(
            f"cannot parse test {source!r}: {exc.msg}; expected one Python `assert` statement"
        ) from exc
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assert):
        raise DatasetError(
            f"test {source!r} is not a single `assert` statement; fix the dataset record"
        )
    stmt = tree.body[0]
    lifter = _Lifter(callee_names)
    test = lifter.visit(stmt.test)
    if not lifter.exprs:  # nothing of the solution's is called: evaluate the whole condition
        lifter.exprs.append(ast.unparse(stmt.test))
        test = ast.Name(id="_0", ctx=ast.Load())
    check = ast.Assert(test=test, msg=stmt.msg)
    imports = "".join(f"import {name}\n" for name in _stdlib_modules_used(check))
    return TestCase(
        display=source if display is None else display,
        exprs=tuple(lifter.exprs),
        check=imports + ast.unparse(ast.fix_missing_locations(check)),
    )


def _stdlib_modules_used(node: ast.AST) -> list[str]:
    """Free names of ``node`` that are standard-library modules (not builtins), sorted."""
    names = {
        sub.id
        for sub in ast.walk(node)
        if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load)
    }
    return sorted(
        name for name in names
        if name in sys.stdlib_module_names and not hasattr(builtins, name)
    )
