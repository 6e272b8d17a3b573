"""Under CI=true a skip for a missing dependency is a failure; a not-applicable skip stays a skip."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = (Path(__file__).parent / "conftest.py").read_text()


@pytest.mark.parametrize("ci", ["true", ""])
def test_missing_dependency_skips_fail_only_under_ci(pytester, monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_runtime="""
import pytest

def test_needs_data():
    pytest.skip("offline data not found")

def test_elsewhere():
    pytest.skip("not applicable: needs Windows")

def test_runs():
    assert True
""", test_module_level="""
import pytest

np = pytest.importorskip("a_package_that_is_not_installed")

def test_never_collected():
    pass
""")
    result = pytester.runpytest("-p", "no:cacheprovider", "--continue-on-collection-errors")
    if ci == "true":
        result.assert_outcomes(passed=1, failed=1, skipped=1, errors=1)
        result.stdout.fnmatch_lines(["*skipped under CI=true*offline data not found*"])
    else:
        result.assert_outcomes(passed=1, skipped=3)
