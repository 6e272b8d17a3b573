"""`mucode doctor`: hostile probes fail, and reference solutions pass their own tests in the sandbox."""

from __future__ import annotations



from mucode_env.datasets import load_problems
from mucode_env.doctor import calibrate_time_limits, check_references, sandbox_probes
from mucode_env.problem import TestCase


def test_every_probe_is_blocked(sandbox):
    probes = sandbox_probes(sandbox)
    assert len(probes) >= 6
    assert all(blocked for _, blocked, _ in probes), probes


def test_a_broken_reference_is_reported(sandbox, data_dir):
    problem = load_problems("mbpp", "test")[0]
    broken = type(problem)(**{**problem.__dict__, "reference_solution": "def remove_Occ(s, ch):\n    return s"})
    report = check_references([broken], sandbox, "mbpp", "test")
    assert not report.ok and {f.which for f in report.failures} == {"public", "private"}


def test_calibration_scales_the_slowest_test_with_a_floor(sandbox):
    from mucode_env.problem import IOStyle, Problem

    slow = Problem("Toy/slow", "", IOStyle.FUNCTION, "f",
                   (TestCase("f()", ("f()",), "assert _0 == 1"),), (),
                   "import time\ndef f():\n    time.sleep(0.6)\n    return 1")
    fast = Problem("Toy/fast", "", IOStyle.FUNCTION, "f",
                   (TestCase("f()", ("f()",), "assert _0 == 1"),), (), "def f():\n    return 1")
    table = calibrate_time_limits([slow, fast], sandbox, factor=4.0, floor_s=1.0)
    assert table["Toy/fast"] == 1.0
    assert 2.4 <= table["Toy/slow"] <= 4.0


