"""MBPP (Austin et al. 2021), full version: 974 Python tasks with three ``assert`` tests each.

Splits by ``task_id``: prompt 1-10, test 11-510, validation 511-600, train 601-974. The paper's
split of tests (section 2): on evaluation splits (test, validation, prompt) the first official
test is public (the only one shown) and the other two, plus ``challenge_test_list``, are
private; on the train split all three official tests are public and the challenge tests (if
any) private. Tests run as code, then ``test_setup_code``, then the asserts (tasks 367 and 927
build trees in their setup with a class from the solution).
"""

from __future__ import annotations

import ast
import os

from mucode_env.datasets.asserts import assert_to_test, parse_quietly, top_level_names
from mucode_env.datasets.source import Record, check_choice, load_hub, load_records
from mucode_env.datasets.time_limits import DEFAULT_FUNCTION_TIME_LIMIT_S, time_limit_for
from mucode_env.errors import DatasetError
from mucode_env.problem import IOStyle, Problem

HUB_NAME = "google-research-datasets/mbpp"
HUB_CONFIG = "full"
LOCAL_FILE = "mbpp.jsonl"
LICENSE = "CC BY 4.0"
SPLIT_TASK_IDS: dict[str, range] = {
    "prompt": range(1, 11),
    "test": range(11, 511),
    "validation": range(511, 601),
    "train": range(601, 975),
}
SPLITS = tuple(SPLIT_TASK_IDS)


def _normalise(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _entry_point(first_test: str, names: frozenset[str]) -> str | None:
    """The function the first test calls: the first solution name called, else any call."""
    tree = parse_quietly(first_test.strip())
    calls = [
        node.func.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    ]
    for name in calls:
        if name in names:
            return name
    return calls[0] if calls else None


def record_to_problem(record: Record, split: str) -> Problem:
    """One MBPP record (local or hub format; same fields) as a ``Problem``.

    Raises:
        DatasetError: if a test is not a single ``assert`` statement.
    """
    task_id = int(record["task_id"])
    code = _normalise(record["code"])
    names = top_level_names(code)
    official = [_normalise(t).strip() for t in record["test_list"]]
    challenge = [_normalise(t).strip() for t in record.get("challenge_test_list") or []]
    n_public = len(official) if split == "train" else 1
    tests = [assert_to_test(t, names) for t in official + challenge]
    problem_id = f"MBPP/{task_id}"
    return Problem(
        id=problem_id,
        prompt=_normalise(record["text"]).strip(),
        io_style=IOStyle.FUNCTION,
        entry_point=_entry_point(official[0], names) if official else None,
        public_tests=tuple(tests[:n_public]),
        private_tests=tuple(tests[n_public:]),
        reference_solution=code,
        time_limit_s=time_limit_for(problem_id, DEFAULT_FUNCTION_TIME_LIMIT_S),
        test_setup=_normalise(record.get("test_setup_code") or ""),
        source="mbpp",
        license=LICENSE,
        split=split,
        metadata={"task_id": task_id, "n_challenge_tests": len(challenge)},
    )


def _hub_records(split: str) -> list[Record]:
    dataset = load_hub(HUB_NAME, HUB_CONFIG, split=split)
    return [dict(row) for row in dataset]


def load_mbpp(
    split: str = "test", data_dir: str | os.PathLike[str] | None = None, source: str = "auto"
) -> list[Problem]:
    """The MBPP problems of one split, ordered by task id.

    Args:
        split: ``"test"`` (11-510), ``"validation"`` (511-600), ``"prompt"`` (1-10) or
            ``"train"`` (601-974).
        data_dir: folder holding ``mbpp.jsonl`` (default: ``$MUCODE_DATA_DIR``).
        source: ``"auto"``, ``"local"`` or ``"hub"``.

    Returns:
        The split's problems.

    Raises:
        DatasetError: unknown split/source, or no data available.
    """
    check_choice("split", split, SPLITS)
    records, _ = load_records("mbpp", LOCAL_FILE, data_dir, source, lambda: _hub_records(split))
    wanted = SPLIT_TASK_IDS[split]
    problems = [record_to_problem(r, split) for r in records if int(r["task_id"]) in wanted]
    problems.sort(key=lambda p: p.metadata["task_id"])
    if not problems:
        raise DatasetError(f"MBPP split {split!r} is empty in the loaded data; re-copy mbpp.jsonl")
    return problems
