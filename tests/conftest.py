"""Shared fixtures, and the rule that a green CI means the whole suite ran.

- ``data_dir``: the offline datasets, from ``MUCODE_DATA_DIR`` or ``../shared/data`` beside the
  repository; ``sandbox``: one sandbox per test process; ``toy_problems``: two tiny problems
  (function and stdin/stdout) with a secret in their private tests; ``tiny_model_dir``: a
  tiny random Qwen2 causal LM with a tokenizer and a chat template.
- Under ``CI=true`` a test (or a test module) that skips because data, a tool or a model is
  missing FAILS instead: only skips whose reason starts with ``"not applicable:"`` (a test that
  is meaningless on this platform or configuration, on every machine) stay skips.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mucode_env import IOStyle, Problem, TestCase

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data"
NOT_APPLICABLE = "not applicable:"

# Tests read the offline datasets through the data-directory setting, like users do.
if "MUCODE_DATA_DIR" not in os.environ and DEFAULT_DATA_DIR.is_dir():
    os.environ["MUCODE_DATA_DIR"] = str(DEFAULT_DATA_DIR)


def strict() -> bool:
    """Whether skips for missing dependencies are failures (CI)."""
    return os.environ.get("CI", "").strip().lower() == "true"


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


def _fail_skip(report) -> None:
    reason = _skip_reason(report)
    if strict() and report.skipped and not hasattr(report, "wasxfail") and NOT_APPLICABLE not in reason:
        report.outcome = "failed"
        report.longrepr = (f"skipped under CI=true, where every test must run (a missing dependency would hide a "
                           f"gap): {reason}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _fail_skip(outcome.get_result())


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ.get("MUCODE_DATA_DIR", DEFAULT_DATA_DIR))
    if not (path / "mbpp.jsonl").is_file():
        pytest.skip(f"offline data not found at {path}; set MUCODE_DATA_DIR")
    return path


@pytest.fixture(scope="session")
def sandbox():
    from mucode_env.sandbox import Sandbox

    with Sandbox() as sb:
        yield sb


SECRET = "private-secret-7f3a"


def make_toy_problems() -> list[Problem]:
    """A function problem and a stdin/stdout problem; their private tests carry :data:`SECRET`."""
    inc = Problem("Toy/inc", "Return x + 1.", IOStyle.FUNCTION, "f", (TestCase.equals("f(1)", "2"),),
                  (TestCase.equals("f(5)", "6"), TestCase.equals(f"f(len('{SECRET}'))", str(len(SECRET) + 1))),
                  "def f(x):\n    return x + 1")
    echo = Problem("Toy/echo", "Print the sum of two integers.", IOStyle.STDIO, None,
                   (TestCase("Input: 1 2", stdin="1 2\n", expected_stdout="3\n"),),
                   (TestCase("hidden " + SECRET, stdin="40 2\n", expected_stdout="42\n"),),
                   "a, b = map(int, input().split())\nprint(a + b)")
    dbl = Problem("Toy/dbl", "Return 2 * x.", IOStyle.FUNCTION, "g", (TestCase.equals("g(1)", "2"),),
                  (TestCase.equals("g(4)", "8"),), "def g(x):\n    return 2 * x")
    return [inc, dbl, echo]


@pytest.fixture()
def toy_problems() -> list[Problem]:
    return make_toy_problems()


@pytest.fixture()
def toy_secret() -> str:
    """Text that appears only in the toy problems' private tests."""
    return SECRET


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny randomly initialised Qwen2 causal LM with a BPE tokenizer and a ChatML template."""
    pytest.importorskip("transformers")
    from agents.tiny import make_tiny_causal_lm

    return make_tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "qwen2")
