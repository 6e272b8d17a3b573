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


def test_ray_flags_become_the_bench_ray_config(tmp_path, capsys):
    from agents.ray_episodes import RayEpisodesConfig

    parser = argparse.ArgumentParser()
    cli_bench.add_parser(parser.add_subparsers(dest="command"))
    base = ["bench", "--run-dir", str(tmp_path / "b"), "--agents", "instruct"]
    assert cli_bench._config(parser.parse_args(base), {}).ray is None
    cfg = cli_bench._config(parser.parse_args([*base, "--ray", "ray://head:10001", "--ray-actors", "3",
                                               "--ray-chunk-size", "2"]), {})
    assert cfg.ray == RayEpisodesConfig(address="ray://head:10001", n_actors=3, chunk_size=2)
    assert cfg.base_backend == "llama_cpp"
    served = cli_bench._config(parser.parse_args([*base, "--ray", "--endpoints", "http://g:8000/v1"]), {})
    assert served.base_backend == "openai" and served.ray.endpoints == ("http://g:8000/v1",)
    assert served.ray.chunk_size == 16 and served.ray.n_actors == 1
    bad = parser.parse_args([*base, "--ray", "--endpoints", "http://g:8000/v1", "--backend", "llama_cpp"])
    assert cli_bench.run(bad) == 2 and "drop --backend" in " ".join(capsys.readouterr().out.split())
