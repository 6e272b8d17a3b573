"""``mucode bench``: a thin command line over :func:`baselines.bench.run_bench`.

Heavy imports happen inside :func:`run`.

Example::

    mucode bench --env MuCode-MBPP-v0 --agents instruct,rft,ppo,mucode --limit 50 \\
        --checkpoint mucode=runs/mucode --checkpoint rft=runs/rft --checkpoint ppo=runs/ppo \\
        --run-dir runs/bench
"""

from __future__ import annotations

import argparse
import json

from mucode_cli.ray_flags import add_ray_arguments, ray_config

__all__ = ["add_parser", "run"]


def _csv(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _pair(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected AGENT=PATH, got {text!r}")
    k, v = text.split("=", 1)
    return k.strip(), v.strip()


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "bench", help="run several agents on the same env, split, seeds and budget; write Table 1-style results",
        description="Evaluate agents (instruct, rft, rft_lv, ppo, grpo, mucode, mucode_ov, mucode_lv) in the paper's "
                    "settings and write tables with confidence intervals, per-turn plots and a report into --run-dir. "
                    "Finished cells are skipped when the command is run again.")
    p.add_argument("--env", default="MuCode-MBPP-v0", help="environment id(s), comma-separated")
    p.add_argument("--agents", default="instruct,rft,ppo,mucode", help="agents of Table 1, comma-separated")
    p.add_argument("--run-dir", required=True, help="directory for every artifact (resumable)")
    p.add_argument("--split", default=None, help="evaluation split (default: the environment's)")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N problems")
    p.add_argument("--problem-ids", default=None, help="comma-separated problem ids")
    p.add_argument("--data-dir", default=None, help="offline data directory (default: $MUCODE_DATA_DIR)")
    p.add_argument("--max-turns", type=int, default=3, help="T of the multi-turn settings")
    p.add_argument("--bon-n", type=int, default=5, help="N of the Best-of-N rows")
    p.add_argument("--selector", default="pt+lv", choices=("pt+lv", "pt", "lv", "random"), help="BoN selector")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature of N > 1 rows")
    p.add_argument("--max-new-tokens", type=int, default=1000, help="new tokens per turn")
    p.add_argument("--repeats", type=int, default=1, help="independent searches per problem, averaged")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default="qwen2.5-coder-0.5b", help="base model (Instruct, and the start of training)")
    p.add_argument("--backend", default=None, help="backend of the base model (default: llama_cpp; openai with "
                                                    "--endpoints)")
    p.add_argument("--finetuned-backend", default="transformers", help="backend of trained checkpoints")
    p.add_argument("--checkpoint", action="append", type=_pair, default=[], metavar="AGENT=PATH",
                   help="generator directory or training run directory of an agent (repeatable)")
    p.add_argument("--verifier", default=None, help="verifier for agents without their own (Instruct, PPO, GRPO)")
    p.add_argument("--ablations", action="store_true", help="also run RFT_LV, µCODE_OV, µCODE_LV (ablation table)")
    p.add_argument("--selectors", action="store_true", help="also run µCODE with every selector (selector table)")
    p.add_argument("--train", action="store_true", help="train agents without a checkpoint (slow)")
    p.add_argument("--train-preset", default="cpu", help="µCODE/RFT training preset: cpu, paper or a JSON file")
    p.add_argument("--ppo", default="{}", help="JSON object of PPOConfig overrides for --train")
    p.add_argument("--grpo", default="{}", help="JSON object of GRPOBaselineConfig overrides for --train")
    p.add_argument("--n-bootstrap", type=int, default=2000, help="paired-bootstrap resamples")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_ray_arguments(p, "the evaluation episodes (and, with --train, the µCODE/RFT rollout and validation stages)")
    return p


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.console import Console

    from baselines.bench import run_bench

    console = Console()
    overrides = {}
    for flag in ("ppo", "grpo"):
        try:
            overrides[flag] = json.loads(getattr(args, flag))
        except json.JSONDecodeError as exc:
            console.print(f"[red]--{flag} must be a JSON object: {exc}[/red]")
            return 2
    try:
        config = _config(args, overrides["ppo"], overrides["grpo"])
    except ValueError as exc:
        console.print(f"[red]mucode bench: {exc}[/red]")
        return 2
    out = run_bench(config)
    if "table1.md" in out["files"]:
        console.print(Path(out["files"]["table1.md"]).read_text())
    console.print(f"[bold]{len(out['cells'])}[/bold] cells; artifacts in {config.run_dir}: "
                  + ", ".join(sorted(out["files"])))
    return 0


def _config(args: argparse.Namespace, ppo_overrides: dict, grpo_overrides: dict | None = None):
    from baselines.bench import BenchConfig

    ray = ray_config(args)
    endpoints = ray is not None and ray.endpoints is not None
    if endpoints and args.backend not in (None, "openai"):
        raise ValueError(f"--endpoints are OpenAI-compatible servers of the base model: drop --backend {args.backend}")
    return BenchConfig(
        run_dir=args.run_dir, env_ids=_csv(args.env), agents=_csv(args.agents), split=args.split, limit=args.limit,
        problem_ids=_csv(args.problem_ids) if args.problem_ids else None, data_dir=args.data_dir,
        max_turns=args.max_turns, bon_n=args.bon_n, selector=args.selector, temperature=args.temperature,
        max_new_tokens=args.max_new_tokens, repeats=args.repeats, seed=args.seed, base_model=args.model,
        base_backend=args.backend or ("openai" if endpoints else "llama_cpp"),
        finetuned_backend=args.finetuned_backend, checkpoints=dict(args.checkpoint),
        verifier=args.verifier, ablations=args.ablations, selectors=args.selectors, train=args.train,
        train_preset=args.train_preset, ppo_overrides=ppo_overrides, grpo_overrides=grpo_overrides or {},
        n_bootstrap=args.n_bootstrap,
        progress=not args.no_progress, ray=ray,
    )
