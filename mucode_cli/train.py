"""``mucode train mucode``: run (or resume) µCODE training from the command line.

A thin caller of :class:`agents.mucode.trainer.MuCodeTrainer`; rerunning with the same ``--run-dir``
resumes after the last finished stage.

    mucode train mucode --env MuCode-MBPP-v0 --config cpu --run-dir runs/mucode-cpu
    mucode train mucode --config paper --run-dir runs/mucode --iterations 1
    mucode train mucode --config my.json --run-dir runs/x   # JSON: {"preset": "cpu", "sft": {...}}
    mucode train mucode --config paper --run-dir runs/8b --generator meta-llama/Llama-3.1-8B-Instruct \\
        --accelerate-config deepspeed_zero3 --num-processes 8     # training stages on 8 GPUs
    mucode train mucode --config cpu --run-dir /shared/runs/x --ray auto --ray-actors 16 --ray-cpus-per-actor 2
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from mucode_cli.ray_flags import add_ray_arguments, ray_config

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``train`` (with the ``mucode`` algorithm) to the top-level CLI's subparsers."""
    train = subparsers.add_parser("train", help="train an agent (µCODE)")
    algos = train.add_subparsers(dest="algorithm", required=True)
    p = algos.add_parser("mucode", help="µCODE: multi-turn code generation through single-step rewards")
    p.add_argument("--env", default="MuCode-MBPP-v0", help="environment id (default: MuCode-MBPP-v0)")
    p.add_argument("--config", default="cpu", help="'cpu', 'paper' or a JSON file (default: cpu)")
    p.add_argument("--run-dir", required=True, help="where artifacts go; rerun with the same dir to resume")
    p.add_argument("--generator", default=None, help="base generator: registry name, GGUF file or HF directory")
    p.add_argument("--verifier-base", default=None, help="verifier base model (default: the preset's)")
    p.add_argument("--iterations", type=int, default=None, help="M, the number of iterations")
    p.add_argument("--max-train-problems", type=int, default=None, help="use only the first K training problems")
    p.add_argument("--data-dir", default=None, help="offline dataset directory (default: $MUCODE_DATA_DIR)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--no-validation", action="store_true", help="skip validation (selects the last iteration)")
    p.add_argument("--accelerate-config", default=None, metavar="NAME_OR_FILE",
                   help="run the training stages with accelerate launch: 'multi_gpu', 'deepspeed_zero3' or a "
                        "config file (default: in this process)")
    p.add_argument("--num-processes", type=int, default=None, help="processes for --accelerate-config")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    add_ray_arguments(p, "the rollout and validation stages' episodes (--endpoints serve the base model's rollouts)")
    p.set_defaults(_train_run=_run_mucode)
    return train


def _config_from_args(args: argparse.Namespace):
    from dataclasses import replace

    from agents.mucode import MuCodeConfig

    overrides: dict[str, Any] = {"run_dir": args.run_dir, "env_id": args.env}
    for attr, key in (("generator", "generator"), ("verifier_base", "verifier_base"), ("iterations", "iterations"),
                      ("max_train_problems", "max_train_problems"), ("data_dir", "data_dir"), ("seed", "seed")):
        value = getattr(args, attr)
        if value is not None:
            overrides[key] = value
    if args.no_progress:
        overrides["progress"] = False
    if args.accelerate_config:
        from agents.training.launch import LaunchConfig

        overrides["launch"] = LaunchConfig.accelerate(args.accelerate_config, args.num_processes)
    elif args.num_processes is not None:
        raise ValueError("--num-processes needs --accelerate-config")
    ray = ray_config(args)
    if ray is not None:
        overrides["ray"] = ray
        if ray.endpoints is not None:  # the servers serve the base generator (named as they serve it)
            overrides["rollout_backend"] = "openai"
    cfg = MuCodeConfig.load(args.config, **overrides)
    if args.no_validation:
        cfg = replace(cfg, validation=replace(cfg.validation, enabled=False))
    return cfg


def _run_mucode(args: argparse.Namespace) -> int:
    cfg = _config_from_args(args)
    if args.print_config:
        print(json.dumps(cfg.to_dict(), indent=2, default=str))
        return 0
    from agents.mucode import MuCodeTrainer

    from agents.mucode import format_report

    report = MuCodeTrainer(cfg).train()
    print(format_report(report))
    best = report["best"]
    print(f"µCODE done: best iteration {best['iteration']} (validation accuracy {best['validation_accuracy']}); "
          f"generator {best['generator']}, verifier {best['verifier']}; report {cfg.run_dir}/report.json")
    return 0


def run(args: argparse.Namespace) -> int:
    """Dispatch ``mucode train <algorithm>``; returns the exit code."""
    fn = getattr(args, "_train_run", None)
    if fn is None:
        print("mucode train: choose an algorithm (mucode)", file=sys.stderr)
        return 2
    try:
        return int(fn(args))
    except (ValueError, FileNotFoundError) as exc:
        print(f"mucode train: {exc}", file=sys.stderr)
        return 2
