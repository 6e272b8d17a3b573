"""CodeContests (Li et al. 2022): competitive-programming problems with stdin/stdout tests.

Offline (``codecontests/train_subset300.jsonl``, split ``"train"``): 300 train problems with
10 unmarked tests each, no time limits and no solutions. A test is public when its input is,
up to whitespace, the input of one of the examples written in the statement (the ``Input`` /
``Output`` blocks after the statement's ``Example(s)`` heading); when none matches, the first
test is public. The rest are private. The prompt is the title and the statement (the file's
repacked ``## Examples`` section, which shows the first three tests whatever their status, and
its ``## Testing`` section are left out). The time limit is 2 s per test unless calibrated.
The subset has no reference solutions: ``reference_solution`` is ``""``, so ``mucode doctor``
cannot self-check these problems. Output is compared token by token, so problems that accept
several correct outputs (special judges) can reject a right answer.

Hub (``deepmind/code_contests``): public_tests are public, private_tests (plus generated_tests
with ``include_generated=True``) private, the record's time limit is used, and evaluation
splits keep only problems with at least one public test (the paper's 165 test problems). The
first correct Python 3 solution, if any, becomes the reference solution.
"""

from __future__ import annotations

import os
import re
from typing import Any

from mucode_env.datasets.source import SOURCES, Record, check_choice, load_hub, load_records
from mucode_env.datasets.time_limits import DEFAULT_STDIO_TIME_LIMIT_S, time_limit_for
from mucode_env.errors import DatasetError
from mucode_env.problem import IOStyle, Problem, TestCase

HUB_NAME = "deepmind/code_contests"
LOCAL_FILE = "codecontests/train_subset300.jsonl"
LICENSE = "CC BY 4.0"
SPLITS = ("train", "test", "valid")
PYTHON3 = 3  # the hub's `solutions.language` code for Python 3


def stdio_test(stdin: str, expected_stdout: str) -> TestCase:
    """A STDIO test, displayed as its input and expected output."""
    display = f"Input:\n{stdin.rstrip()}\nExpected output:\n{expected_stdout.rstrip()}"
    return TestCase(display=display, stdin=stdin, expected_stdout=expected_stdout)


def _squash(text: str) -> str:
    return " ".join(text.split())


def _statement(problem_md: str) -> str:
    """Title and statement of a repacked record (``# title`` + ``## Description`` text)."""
    title = re.search(r"^# (.+)$", problem_md, re.M)
    match = re.search(r"^## Description\s*\n(.*?)(?=^## |\Z)", problem_md, re.M | re.S)
    body = match.group(1).strip() if match else problem_md.strip()
    return f"{title.group(1).strip()}\n\n{body}" if title else body


def statement_example_inputs(statement: str) -> set[str]:
    """Whitespace-squashed inputs of the ``Input`` blocks after the last ``Example(s)`` line."""
    headings = list(re.finditer(r"^Examples?\s*$", statement, re.M))
    if not headings:
        return set()
    tail = statement[headings[-1].end() :]
    blocks = re.findall(r"^Input\s*\n(.*?)\n\s*Output\s*\n", tail, re.M | re.S)
    return {_squash(block) for block in blocks if block.strip()}


def _local_problem(record: Record, index: int) -> Problem:
    name = record["dir"].rstrip("/").rsplit("/", 1)[-1]
    statement = _statement(record["problem_md"])
    examples = statement_example_inputs(statement)
    tests = [stdio_test(t["input"], t["output"]) for t in record["tests"]]
    is_public = [_squash(t.stdin) in examples for t in tests]
    if not any(is_public):
        is_public = [i == 0 for i in range(len(tests))]
    problem_id = f"CodeContests/{name}"
    return Problem(
        id=problem_id,
        prompt=statement,
        io_style=IOStyle.STDIO,
        entry_point=None,
        public_tests=tuple(t for t, p in zip(tests, is_public) if p),
        private_tests=tuple(t for t, p in zip(tests, is_public) if not p),
        reference_solution="",
        time_limit_s=time_limit_for(problem_id, DEFAULT_STDIO_TIME_LIMIT_S),
        source="codecontests",
        license=LICENSE,
        split="train",
        metadata={"index": index, "dir": record["dir"], "tags": record.get("tags", "")},
    )


def _hub_tests(block: dict[str, Any] | None) -> list[TestCase]:
    block = block or {}
    return [stdio_test(i, o) for i, o in zip(block.get("input", []), block.get("output", []))]


def _hub_problem(record: Record, split: str, index: int, include_generated: bool) -> Problem:
    public = _hub_tests(record.get("public_tests"))
    private = _hub_tests(record.get("private_tests"))
    if include_generated:
        private += _hub_tests(record.get("generated_tests"))
    limit = record.get("time_limit") or {}
    seconds = float(limit.get("seconds") or 0) + float(limit.get("nanos") or 0) / 1e9
    solutions = record.get("solutions") or {}
    python = [s for lang, s in zip(solutions.get("language", []), solutions.get("solution", []))
              if lang == PYTHON3]
    problem_id = f"CodeContests/{record.get('name') or index}"
    return Problem(
        id=problem_id,
        prompt=record["description"].strip(),
        io_style=IOStyle.STDIO,
        entry_point=None,
        public_tests=tuple(public),
        private_tests=tuple(private),
        reference_solution=python[0] if python else "",
        time_limit_s=time_limit_for(problem_id, seconds or DEFAULT_STDIO_TIME_LIMIT_S),
        source="codecontests",
        license=LICENSE,
        split=split,
        metadata={"index": index, "difficulty": record.get("difficulty")},
    )


def load_codecontests(
    split: str = "test",
    data_dir: str | os.PathLike[str] | None = None,
    source: str = "auto",
    include_generated: bool = False,
) -> list[Problem]:
    """CodeContests problems of one split.

    Args:
        split: ``"train"`` (offline subset or hub), ``"test"``/``"valid"`` (hub only).
        data_dir: folder holding ``codecontests/train_subset300.jsonl`` (default:
            ``$MUCODE_DATA_DIR``).
        source: ``"auto"``, ``"local"`` or ``"hub"``.
        include_generated: hub only: add ``generated_tests`` to the private tests.

    Returns:
        The problems in file (or hub) order; hub evaluation splits keep only problems with a
        public test.

    Raises:
        DatasetError: unknown split/source, or the split has no available data (the offline
            subset only has ``"train"``).
    """
    check_choice("split", split, SPLITS)
    if split != "train" and source == "local":
        raise DatasetError(
            f"CodeContests split {split!r} has no offline copy (the data directory holds only "
            "the 300-problem train subset); use split='train' or source='hub'"
        )
    check_choice("source", source, SOURCES)
    records, origin = load_records(
        "codecontests", LOCAL_FILE, data_dir, source if split == "train" else "hub",
        lambda: [dict(r) for r in load_hub(HUB_NAME, split=split)],
    )
    if origin == "local":
        return [_local_problem(r, i) for i, r in enumerate(records)]
    problems = [_hub_problem(r, split, i, include_generated) for i, r in enumerate(records)]
    if split != "train":
        problems = [p for p in problems if p.public_tests]
    return problems
