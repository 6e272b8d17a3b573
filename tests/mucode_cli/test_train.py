"""``mucode train mucode``: configuration from presets, files and flags (multi-GPU launch included)."""

from __future__ import annotations

import json
from pathlib import Path


def test_cli_print_config(capsys, tmp_path):
    import argparse

    from mucode_cli import train as cli_train

    parser = argparse.ArgumentParser()
    cli_train.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", "mucode", "--config", "paper", "--run-dir", str(tmp_path), "--iterations", "1",
                              "--no-validation", "--print-config"])
    assert cli_train.run(args) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["iterations"] == 1 and cfg["validation"]["enabled"] is False and cfg["run_dir"] == str(tmp_path)
    bad = parser.parse_args(["train", "mucode", "--config", str(tmp_path / "missing.json"), "--run-dir", str(tmp_path)])
    assert cli_train.run(bad) == 2
    multi = parser.parse_args(["train", "mucode", "--config", "paper", "--run-dir", str(tmp_path),
                               "--accelerate-config", "deepspeed_zero3", "--num-processes", "8", "--print-config"])
    assert cli_train.run(multi) == 0
    cmd = json.loads(capsys.readouterr().out)["launch"]["command"]
    assert cmd[:2] == ["accelerate", "launch"] and cmd[-2:] == ["--num_processes", "8"]
    assert cmd[3].endswith("deepspeed_zero3.yaml") and Path(cmd[3]).is_file()
    for extra in (["--num-processes", "2"], ["--accelerate-config", "nope.yaml"]):
        args = parser.parse_args(["train", "mucode", "--run-dir", str(tmp_path), "--print-config", *extra])
        assert cli_train.run(args) == 2


def test_ray_flags_reach_the_config_and_a_config_file_reads_them_back(capsys, tmp_path):
    import argparse

    from agents.mucode import MuCodeConfig
    from agents.ray_episodes import RayEpisodesConfig
    from mucode_cli import train as cli_train

    parser = argparse.ArgumentParser()
    cli_train.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", "mucode", "--run-dir", str(tmp_path), "--print-config", "--ray", "auto",
                              "--ray-actors", "4", "--ray-cpus-per-actor", "2"])
    assert cli_train.run(args) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert (cfg["ray"]["address"], cfg["ray"]["n_actors"], cfg["ray"]["cpus_per_actor"]) == ("auto", 4, 2)
    assert cfg["rollout_backend"] == "vllm"  # the cpu preset's lane: a replica (a vLLM server) per actor
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    assert MuCodeConfig.load(str(tmp_path / "cfg.json")).ray == RayEpisodesConfig(address="auto", n_actors=4,
                                                                                   cpus_per_actor=2)
    served = parser.parse_args(["train", "mucode", "--run-dir", str(tmp_path), "--print-config", "--ray",
                                "--endpoints", "http://a:8000/v1,http://b:8000/v1"])
    assert cli_train.run(served) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["rollout_backend"] == "openai" and cfg["ray"]["endpoints"] == ["http://a:8000/v1", "http://b:8000/v1"]
    assert cfg["ray"]["address"] is None and cfg["ray"]["n_actors"] == 2
    alone = parser.parse_args(["train", "mucode", "--run-dir", str(tmp_path), "--print-config", "--ray-actors", "2"])
    assert cli_train.run(alone) == 2 and "need --ray" in capsys.readouterr().err
