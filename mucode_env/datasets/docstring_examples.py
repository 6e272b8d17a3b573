"""Find the input/output examples in a HumanEval docstring.

HumanEval docstrings write their examples in many ways. The rule, applied to the raw source
text of the entry point's docstring (escapes such as ``\\n`` stay as written), in order:

1. doctest blocks: ``>>> expr`` (with ``...`` continuation lines), the expected value being the
   following lines up to a blank line or the next ``>>>`` (so multi-line outputs work);
2. ``Input: <args>`` followed by ``Output: <value>`` (``args`` may be ``name = value`` pairs);
3. ``For <name> = <value>[, <name> = <value>] the output (or result) should be <value>``;
4. inline calls at the start of a line (after a bullet, ``for``, ``assert``, ``>>>``), the call
   spanning lines until its parentheses balance, then a separator (``==>``, ``=>``, ``==``,
   ``->``, ``➞``, ``=``, ``:``, ``returns``, ``should return``, ``# returns``, ...) and a value.

A value is the first of these that parses as a Python literal (``true``/``false``/``none`` are
accepted in any case): the text after the last ``=`` (``f(x) -> 1 + 2 = 3``), then the longest
prefix of the text ending at a space. Each example keeps every readable value, in that order;
the loader keeps the first one the canonical solution agrees with, and drops the example if
there is none. A call to another, undefined name (a docstring that misnames the function, e.g.
``grade_equation`` for ``numerical_letter_grade``) is renamed to the entry point. Keyword
arguments that name the signature's parameters are made positional.
"""

from __future__ import annotations

import ast
import builtins
import re
from dataclasses import dataclass

_SEPARATOR = re.compile(
    r"^\s*(?:#\s*)?(?:==>|=>|==|->|➞|=|:|,)?\s*"
    r"(?:(?:it\s+)?(?:should\s+)?returns?:?|the\s+output\s+should\s+be|output:?|result:?)?\s*",
    re.IGNORECASE,
)
_LINE_PREFIX = re.compile(r"^\s*(?:[*\-•]\s*|for\s+|assert\s+|>>>\s*|example\s*\d*:\s*)*", re.I)
_WORDS = {"true": "True", "false": "False", "none": "None"}


@dataclass(frozen=True)
class DocExample:
    """One docstring example: a call expression and the values its text may mean.

    Attributes:
        call: Python source of the call (positional arguments where possible).
        expected: candidate expected values (source text of literals), most likely first.
    """

    call: str
    expected: tuple[str, ...]


def docstring_source(prompt: str, entry_point: str) -> str:
    """The raw text of ``entry_point``'s docstring in ``prompt`` (no quotes, escapes kept)."""
    tree = ast.parse(prompt)
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == entry_point:
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                segment = ast.get_source_segment(prompt, first.value) or ""
                return re.sub(r"^[rRuU]?('''|\"\"\"|'|\")|('''|\"\"\"|'|\")$", "", segment)
    return ""


def _parse_literal(text: str) -> str | None:
    """Canonical source of ``text`` if it is a Python literal, else None."""
    text = text.strip().rstrip(".,;")
    if not text:
        return None
    text = _WORDS.get(text.lower(), text)
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    return repr(value)


def value_candidates(text: str) -> tuple[str, ...]:
    """Literal readings of an expected-value text, most likely first (see module docstring)."""
    text = text.strip()
    found: list[str] = []
    pieces = [text.rsplit("=", 1)[1]] if "=" in text else []
    cut = [m.start() for m in re.finditer(r"\s", text)] + [len(text)]
    pieces += [text[:i] for i in sorted(set(cut), reverse=True)]
    for piece in pieces:
        literal = _parse_literal(piece)
        if literal is not None and literal not in found:
            found.append(literal)
    return tuple(found)


def _balanced_call(text: str, start: int) -> int | None:
    """Index just past the parenthesis that closes the one at ``start``, or None."""
    depth, quote, i = 0, "", start
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


def normalise_call(call: str, entry_point: str, params: list[str], known: set[str]) -> str | None:
    """``call`` as a call of ``entry_point`` with positional arguments, or None if it is not one.

    An expression that contains a call of ``entry_point`` (``round(find_zero(xs), 2)``) is kept
    as it is: the loader lifts the call and leaves the rest to the host-side check.

    Args:
        call: source of a call expression.
        entry_point: the function under test.
        params: its parameter names, in order.
        known: names defined in the prompt (a call to one of these is not renamed).
    """
    try:
        node = ast.parse(call.strip(), mode="eval").body
    except SyntaxError:
        return None
    calls_entry = any(
        isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name) and sub.func.id == entry_point
        for sub in ast.walk(node)
    )
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        return ast.unparse(node) if calls_entry else None  # e.g. round(find_zero(xs), 2)
    if node.func.id != entry_point:
        if calls_entry:
            return ast.unparse(node)
        if node.func.id in known or hasattr(builtins, node.func.id):
            return None
        node.func.id = entry_point
    if node.keywords and all(k.arg in params for k in node.keywords):
        by_name = {k.arg: k.value for k in node.keywords}
        ordered = params[len(node.args) : len(node.args) + len(by_name)]
        if set(ordered) == set(by_name):
            node.args = [*node.args, *(by_name[name] for name in ordered)]
            node.keywords = []
    return ast.unparse(node)


def _doctest_examples(lines: list[str]) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if not line.startswith(">>>"):
            i += 1
            continue
        source = [line[3:].strip()]
        i += 1
        while i < len(lines) and lines[i].strip().startswith("..."):
            source.append(lines[i].strip()[3:].strip())
            i += 1
        output = []
        while i < len(lines) and lines[i].strip() and not lines[i].strip().startswith(">>>"):
            output.append(lines[i].strip())
            i += 1
        if output:
            pairs.append((" ".join(source), " ".join(output)))
    return pairs


def _io_block_examples(lines: list[str], entry_point: str) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for i, line in enumerate(lines):
        match = re.match(r"^\s*Input\s*:\s*(.+)$", line)
        if not match:
            continue
        for following in lines[i + 1 : i + 4]:
            out = re.match(r"^\s*Output\s*:\s*(.+)$", following)
            if out:
                pairs.append((f"{entry_point}({match.group(1).strip()})", out.group(1)))
                break
    return pairs


def _for_output_examples(lines: list[str], entry_point: str) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    pattern = re.compile(r"For\s+(.+?),?\s+the (?:output|result) should be\s+(.+)$", re.I)
    for line in lines:
        match = pattern.search(line)
        if not match:
            continue
        assignments, value = match.group(1), match.group(2)
        call = f"{entry_point}({assignments})"
        try:
            ast.parse(call, mode="eval")
        except SyntaxError:  # "N = 1000, the sum of digits will be 1": keep the first value
            first = re.match(r"\w+\s*=\s*(.+)$", assignments)
            readings = value_candidates(first.group(1)) if first else ()
            if not readings:
                continue
            call = f"{entry_point}({readings[0]})"
        pairs.append((call, value))
    return pairs


def _inline_examples(text: str) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for line_match in re.finditer(r"^.*$", text, re.M):
        line_start = line_match.start()
        prefix = _LINE_PREFIX.match(line_match.group(0))
        start = line_start + (prefix.end() if prefix else 0)
        call = re.match(r"[A-Za-z_]\w*\s*\(", text[start:])
        if not call:
            continue
        end = _balanced_call(text, start + call.end() - 1)
        if end is None:
            continue
        rest = text[end:].split("\n", 1)[0]
        separator = _SEPARATOR.match(rest)
        value = rest[separator.end() :] if separator and separator.end() else ""
        if value.strip():
            pairs.append((text[start:end].replace("\n", " "), value))
    return pairs


def extract_examples(prompt: str, entry_point: str) -> list[DocExample]:
    """The examples of ``entry_point``'s docstring, in order of appearance, deduplicated.

    Args:
        prompt: the HumanEval prompt (imports, helpers, signature and docstring).
        entry_point: the function under test.

    Returns:
        Examples whose call is a call of ``entry_point`` and whose value text has at least one
        literal reading. Not yet checked against the canonical solution.
    """
    doc = docstring_source(prompt, entry_point)
    tree = ast.parse(prompt)
    known = {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
    }
    params: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == entry_point:
            params = [a.arg for a in node.args.posonlyargs + node.args.args]
    lines = doc.splitlines()
    raw = _doctest_examples(lines)
    if not raw:
        raw = _io_block_examples(lines, entry_point) + _for_output_examples(lines, entry_point)
        raw += _inline_examples(doc)
    examples: list[DocExample] = []
    seen: set[str] = set()
    for call_text, value_text in raw:
        call = normalise_call(call_text, entry_point, params, known - {entry_point})
        values = value_candidates(value_text)
        if call is None or not values or call in seen:
            continue
        seen.add(call)
        examples.append(DocExample(call=call, expected=values))
    return examples
