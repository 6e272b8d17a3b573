"""``mucode doctor``: the probes and every offline reference solution, from the command line."""

from __future__ import annotations

import json

import pytest

from mucode_cli.main import main


def test_doctor_cli_on_the_first_problems(data_dir, capsys):
    assert main(["doctor", "--benchmarks", "mbpp,humaneval", "--limit", "15"]) == 0
    assert "all checks passed" in capsys.readouterr().out


@pytest.mark.slow
def test_all_offline_reference_solutions_pass_in_the_sandbox(data_dir, capsys, tmp_path):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "all checks passed" in out
    limits = tmp_path / "limits.json"
    assert main(["doctor", "--benchmarks", "humaneval", "--calibrate", str(limits)]) == 0
    assert len(json.loads(limits.read_text())) == 164
