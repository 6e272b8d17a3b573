"""Loaders: API, errors, data-directory setting, MBPP/CodeContests/APPS structure."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mucode_env.datasets import load_problems, time_limits
from mucode_env.datasets import mbpp as mbpp_module
from mucode_env.datasets.asserts import assert_to_test, top_level_names
from mucode_env.datasets.literals import run_check
from mucode_env.errors import DatasetError
from mucode_env.problem import IOStyle


@pytest.fixture(autouse=True)
def _offline_data(monkeypatch: pytest.MonkeyPatch, data_dir: Path) -> None:
    monkeypatch.setenv("MUCODE_DATA_DIR", str(data_dir))


def test_assert_to_test_lifts_outermost_solution_calls() -> None:
    test = assert_to_test("assert set(f(x)) == set([1,2])", {"f"})
    assert test.exprs == ("f(x)",)
    assert test.check == "assert set(_0) == set([1, 2])"
    assert test.display == "assert set(f(x)) == set([1,2])"
    nested = assert_to_test("assert f(g(1)) + g(2) == h(3)", {"f", "g"})
    assert nested.exprs == ("f(g(1))", "g(2)")
    assert nested.check == "assert _0 + _1 == h(3)"


def test_assert_to_test_lifts_whole_condition_without_solution_calls() -> None:
    test = assert_to_test("assert math.isclose(area(2), 4.0)", {"other"})
    assert test.exprs == ("math.isclose(area(2), 4.0)",)
    assert test.check == "assert _0"


def test_assert_to_test_imports_stdlib_modules_the_check_uses() -> None:
    test = assert_to_test("assert size((1, 2)) == sys.getsizeof((1, 2))", {"size"})
    assert test.check.splitlines()[0] == "import sys"


def test_assert_to_test_rejects_non_assert() -> None:
    with pytest.raises(DatasetError, match="single `assert`"):
        assert_to_test("x = f(1)", {"f"})


def test_top_level_names() -> None:
    code = "import math\nclass Node: pass\ndef f():\n    def inner(): pass\nasync def g(): pass"
    assert top_level_names(code) == {"Node", "f", "g"}


def test_unknown_benchmark_split_source_name_allowed_values() -> None:
    with pytest.raises(DatasetError, match=r"'mbp'.*mbpp, humaneval.*Did you mean: `mbpp`"):
        load_problems("mbp")
    with pytest.raises(DatasetError, match=r"'tset'.*Did you mean: `test`"):
        load_problems("mbpp", split="tset")
    with pytest.raises(DatasetError, match=r"'hubb'.*auto, local, hub"):
        load_problems("mbpp", source="hubb")


def test_missing_data_says_to_set_env_var(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MUCODE_DATA_DIR")
    with pytest.raises(DatasetError, match="MUCODE_DATA_DIR"):
        load_problems("mbpp", source="local")

    def offline(*args: object, **kwargs: object) -> None:
        raise DatasetError("no network")

    monkeypatch.setattr(mbpp_module, "load_hub", offline)
    with pytest.raises(DatasetError, match="MUCODE_DATA_DIR"):
        load_problems("mbpp", data_dir=tmp_path)


def test_data_dir_argument_beats_env_var(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, data_dir: Path) -> None:
    monkeypatch.setenv("MUCODE_DATA_DIR", str(tmp_path))
    assert len(load_problems("mbpp", "prompt", data_dir=data_dir, source="local")) == 10
    with pytest.raises(DatasetError, match=str(tmp_path)):
        load_problems("mbpp", "prompt", source="local")


def test_import_reads_and_downloads_nothing() -> None:
    code = (
        "import sys, mucode_env.datasets\n"
        "assert 'datasets' not in sys.modules, 'HF datasets imported at import time'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={"MUCODE_DATA_DIR": "/nonexistent"})


@pytest.mark.parametrize(
    ("split", "count", "first", "last"),
    [("prompt", 10, 1, 10), ("test", 500, 11, 510), ("validation", 90, 511, 600),
     ("train", 374, 601, 974)],
)
def test_mbpp_splits(split: str, count: int, first: int, last: int) -> None:
    problems = load_problems("mbpp", split)
    assert len(problems) == count
    assert problems[0].id == f"MBPP/{first}" and problems[-1].id == f"MBPP/{last}"
    assert all(p.split == split and p.io_style is IOStyle.FUNCTION for p in problems)
    assert [p.id for p in problems] == [p.id for p in load_problems("mbpp", split)]


def test_mbpp_public_private_split() -> None:
    problem = {p.id: p for p in load_problems("mbpp", "test")}["MBPP/11"]
    assert problem.entry_point == "remove_Occ"
    assert [t.display for t in problem.public_tests] == ['assert remove_Occ("hello","l") == "heo"']
    assert problem.public_tests[0].exprs == ("remove_Occ('hello', 'l')",)
    assert problem.public_tests[0].check == "assert _0 == 'heo'"
    assert len(problem.private_tests) == 2 + 2  # two official + two challenge tests
    assert "\r" not in problem.reference_solution
    assert problem.source == "mbpp" and problem.license == "CC BY 4.0"
    train = load_problems("mbpp", "train")
    assert all(len(p.public_tests) == 3 for p in train)


def test_mbpp_setup_code_tasks() -> None:
    problems = {p.id: p for p in load_problems("mbpp", "train")}
    problem = problems["MBPP/927"]
    assert "root = Node(1)" in problem.test_setup
    assert all(t.exprs[0].startswith("max_height(") for t in problem.public_tests)


def test_codecontests_train_subset() -> None:
    problems = load_problems("codecontests", "train")
    assert len(problems) == 300 and len({p.id for p in problems}) == 300
    for problem in problems:
        assert problem.io_style is IOStyle.STDIO and problem.public_tests
        assert len(problem.public_tests) + len(problem.private_tests) in (9, 10)
        assert "## Testing" not in problem.prompt and "run.sh" not in problem.prompt
        assert problem.reference_solution == "" and problem.time_limit_s == 2.0
        for test in problem.public_tests:  # public tests are the statement's examples
            assert " ".join(test.stdin.split()) in " ".join(problem.prompt.split())
    first = problems[0]
    assert first.id == "CodeContests/1041_e_tree_reconstruction_8858"
    assert first.public_tests[0].display == "Input:\n3\n1 2\n2 3\nExpected output:\nNO"
    assert first.public_tests[0].is_stdio


def test_codecontests_test_split_is_hub_only() -> None:
    with pytest.raises(DatasetError, match="no offline copy"):
        load_problems("codecontests", "test", source="local")


def test_apps_selection() -> None:
    problems = load_problems("apps", "test")
    assert len(problems) == 128  # 150 rows, 22 exact repeats
    assert len({p.id for p in problems}) == 128
    by_id = {p.id: p for p in problems}
    stdio = by_id["APPS/1604"]
    assert stdio.io_style is IOStyle.STDIO and stdio.public_tests[0].stdin == "1 1\n.\n"
    call = by_id["APPS/3554"]
    assert call.io_style is IOStyle.FUNCTION and call.entry_point == "get_score"
    assert call.public_tests[0].exprs == ("get_score([1, 2, 3])",)
    assert call.metadata["call_based"] and "def get_score" in call.prompt
    multiline = by_id["APPS/1613"].public_tests[0]
    assert multiline.exprs[0].startswith("solution('apples, pears # and bananas\\ngrapes")


def test_apps_call_check_compares_on_host() -> None:
    check = {p.id: p for p in load_problems("apps")}["APPS/3554"].public_tests[0].check
    run_check(check, [100])
    run_check(check, [100.0000000001])
    for wrong in (99, "100", None):
        with pytest.raises(AssertionError):
            run_check(check, [wrong])


def test_calibrated_time_limits(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "time_limits.json"
    path.write_text('{"MBPP/11": 3.5}')
    monkeypatch.setattr(time_limits, "TIME_LIMITS_PATH", path)
    time_limits.calibrated_time_limits.cache_clear()
    try:
        problems = load_problems("mbpp", "test")
        assert problems[0].time_limit_s == 3.5 and problems[1].time_limit_s == 2.0
        path.write_text('{"MBPP/11": -1}')
        with pytest.raises(DatasetError, match="positive"):
            time_limits.calibrated_time_limits(path)
    finally:
        time_limits.calibrated_time_limits.cache_clear()
