"""Make program output safe to show a model: no control characters, bounded repetition."""

from __future__ import annotations

import re

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
MAX_REPEATED_LINES = 20


def sanitize_output(text: str) -> str:
    """Strip ANSI escapes, C0/C1 controls (except newline and tab) and lone surrogates;
    collapse runs of more than ``MAX_REPEATED_LINES`` identical lines; hide sandbox paths."""
    if not text:
        return ""
    text = _ANSI.sub("", text.replace("\r\n", "\n"))
    text = _SURROGATE.sub("\ufffd", _CONTROL.sub("", text))
    text = text.replace("/opt/py/", "<python>/").replace("/opt/zygote.py", "<sandbox>")
    lines = text.split("\n")
    out: list[str] = []
    run = 0
    for i, line in enumerate(lines):
        run = run + 1 if i and line == lines[i - 1] else 1
        if run <= MAX_REPEATED_LINES:
            out.append(line)
        elif run == MAX_REPEATED_LINES + 1:
            out.append("... [repeated lines omitted] ...")
    return "\n".join(out)
