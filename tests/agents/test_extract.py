"""Code extraction (paper rule) on messy outputs of the kind small instruct models produce."""

from __future__ import annotations

import pytest

from mucode_env.extract import extract_code

QWEN_WITH_EXAMPLE = '''To solve this problem, we need to check every pair of numbers.

```python
from typing import List


def has_close_elements(numbers: List[float], threshold: float) -> bool:
    for i in range(len(numbers)):
        for j in range(i + 1, len(numbers)):
            if abs(numbers[i] - numbers[j]) < threshold:
                return True
    return False
```

### Explanation
1. We loop over all pairs.

Example usage:
```python
print(has_close_elements([1.0, 2.0, 3.0], 0.5))  # False
```
'''

TRUNCATED_AT_MAX_TOKENS = """Here is the implementation:
```python
def remove_Occ(s, ch):
    first = s.find(ch)
    if first == -1:
        return s
    s = s[:first] + s[first + 1:]
    last = s.rfind("""

LIST_ITEM = """1. Reason about the base cases: an empty list returns 0.
2. Implementation:

   ```python
   def total(xs):
       if not xs:
           return 0
       return sum(xs)
   ```
"""

SHELL_THEN_PYTHON = """First install nothing:
```bash
pip install nothing
```
Then:
```py
def f(x):
    return x + 1
```"""

NO_FENCE = "def f(x):\n    return x * 2\n"

CRLF = "Solution:\r\n```python\r\ndef f():\r\n    return 1\r\n```\r\nDone.\r\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (QWEN_WITH_EXAMPLE, QWEN_WITH_EXAMPLE.split("```python\n")[1].split("\n```")[0]),
        (TRUNCATED_AT_MAX_TOKENS, TRUNCATED_AT_MAX_TOKENS.split("```python\n")[1]),
        (SHELL_THEN_PYTHON, "def f(x):\n    return x + 1"),
        (NO_FENCE, "def f(x):\n    return x * 2"),
        ("```\ndef g():\n    pass\n```\ntext", "def g():\n    pass"),
        ("```Python3\nx = 1\n```", "x = 1"),
        ("```python\ndef f():\n    return 1```", "def f():\n    return 1"),  # fence closed on the code line
        ("```python\n```\n", ""),
    ],
    ids=["explanation-and-example", "truncated", "bash-then-py", "no-fence", "untagged", "tag-case",
         "inline-close", "empty"],
)
def test_paper_rule_on_messy_outputs(text, expected):
    assert extract_code(text) == expected


def test_block_inside_a_markdown_list_is_dedented_and_compiles():
    code = extract_code(LIST_ITEM)
    assert code.startswith("def total(xs):")
    compile(code, "<extracted>", "exec")


def test_crlf_output_compiles():
    code = extract_code(CRLF)
    assert code.replace("\r\n", "\n") == "def f():\n    return 1"
    compile(code, "<extracted>", "exec")


def test_docstrings_with_double_backticks_are_kept():
    text = '```python\ndef f():\n    """Use ``f``."""\n    return 1\n```'
    assert extract_code(text) == 'def f():\n    """Use ``f``."""\n    return 1'


def test_non_text_is_a_type_error():
    with pytest.raises(TypeError, match="str"):
        extract_code(None)  # type: ignore[arg-type]
