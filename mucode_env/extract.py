"""Code extraction from a model's response, as the paper does it.

Rule (paper, section 1): the first fenced ```python block; else an unterminated ```python block
running to the end of the text; else the first fenced block of any language tag; else the whole
text.
A block whose fence is indented (inside a markdown list item) is dedented, since Python would
reject the indented program; no other text is changed.
"""

from __future__ import annotations

import re
import textwrap

_PY_FENCE = re.compile(r"```[ \t]*(?:python3?|py)[ \t]*\r?\n(.*?)(?:\r?\n)?[ \t]*```", re.DOTALL | re.IGNORECASE)
_PY_OPEN = re.compile(r"```[ \t]*(?:python3?|py)[ \t]*\r?\n(.*)\Z", re.DOTALL | re.IGNORECASE)
_ANY_FENCE = re.compile(r"```[^\n`]*\r?\n(.*?)(?:\r?\n)?[ \t]*```", re.DOTALL)


def extract_code(text: str) -> str:
    """Return the program contained in ``text`` (see the module docstring for the rule).

    >>> extract_code("Here:\\n```python\\nx = 1\\n```\\nDone")
    'x = 1'
    """
    if not isinstance(text, str):
        raise TypeError(f"extract_code expects a str, got {type(text).__name__}")
    for pattern in (_PY_FENCE, _PY_OPEN, _ANY_FENCE):
        match = pattern.search(text)
        if match:
            return textwrap.dedent(match.group(1)).strip("\n")
    return text.strip("\n")
