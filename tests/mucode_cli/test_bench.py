"""``mucode bench``: flags become a validated BenchConfig; bad agents fail with exit code 2."""

from __future__ import annotations

import argparse

import pytest

from baselines.bench import BenchConfig
from mucode_cli import bench as cli_bench


def test_config_validation_and_cli(tmp_path):
    with pytest.raises(ValueError, match="Did you mean"):
        BenchConfig(run_dir="x", agents=("mucod",))
    assert BenchConfig(run_dir="x", agents="instruct, rft").agents == ("instruct", "rft")
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    cli_bench.add_parser(sub)
    args = parser.parse_args(["bench", "--run-dir", str(tmp_path / "b"), "--agents", "instruct,mucode", "--limit", "5",
                              "--checkpoint", "mucode=runs/mucode", "--ablations"])
    cfg = cli_bench._config(args, {})
    assert cfg.agents == ("instruct", "mucode") and cfg.limit == 5 and cfg.checkpoints == {"mucode": "runs/mucode"}
    assert cfg.ablations and not cfg.selectors
    bad = parser.parse_args(["bench", "--run-dir", str(tmp_path / "b"), "--agents", "nope"])
    assert cli_bench.run(bad) == 2
