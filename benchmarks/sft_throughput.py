"""The cpu preset's generator fine-tuning stage before and after the fast lane, on a run's data.

Fine-tunes the µCODE generator (:func:`agents.training.sft.finetune`: TRL SFT, LoRA) on the same
relabeled examples of a real run, with the same global batch and seed, once per variant, each in
its own process one after the other (alone: the cores and the memory are the variant's), and
prints trained tokens/s (the stage's ``train_stats.json``), the ratio to ``before`` and the
peak resident memory of the variant's process:

- ``before``: the preset before issue 10: micro-batches of 2, every position through the LM
  head on the CPU (TRL's default there), fp32;
- ``micro-batch-1``: micro-batches of 1 (no padding), LM head as ``before``;
- ``after``: the preset as shipped: micro-batches of 1, the LM head only on the completion
  tokens (:mod:`agents.training.lm_head`), bf16 where the CPU computes it.

    python3 benchmarks/sft_throughput.py --examples runs/x/iter1/relabeled.jsonl --threads 2
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without an installed mucode
    sys.path.insert(0, str(REPO))

VARIANTS = {
    "before": {"per_device_batch_size": 2, "compact_lm_head": False, "bf16": False},
    "micro-batch-1": {"per_device_batch_size": 1, "compact_lm_head": False, "bf16": False},
    "after": {},  # the preset as shipped
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--examples", required=True, help="a µCODE run's iterN/relabeled.jsonl")
    p.add_argument("--limit", type=int, default=0, help="first N examples of the file (default: all)")
    p.add_argument("--generator", default=None, help="base model (default: the cpu preset's generator)")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated (default: %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default: %(default)s)")
    p.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    p.add_argument("--run-variant", default=None, help=argparse.SUPPRESS)  # the child's job
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def load_examples(path: str, limit: int) -> list[dict]:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    if not rows:
        raise SystemExit(f"{path}: no examples")
    return rows[:limit] if limit > 0 else rows


def sft_config(variant: str, generator: str | None = None):
    """The preset's generator and fine-tuning configuration for ``variant``: one epoch, no progress bar."""
    from agents.mucode import MuCodeConfig

    preset = MuCodeConfig.cpu()
    return generator or preset.generator, replace(preset.sft, epochs=1, progress=False, **VARIANTS[variant])


def run_variant(args: argparse.Namespace) -> int:
    """In the child: fine-tune once; the stage writes its statistics next to the model."""
    import torch

    from agents.training.sft import finetune

    torch.set_num_threads(args.threads)
    generator, cfg = sft_config(args.run_variant, args.generator)
    finetune(generator, load_examples(args.examples, args.limit), cfg, args.out)
    return 0


def measure(args: argparse.Namespace, variant: str, out: Path) -> dict:
    """Run one variant in a child process, sampling its resident memory, and read its statistics."""
    from agents.training.precision import resolve_bf16
    from agents.training.sft import read_train_stats
    from benchmarks.peak_memory import run_sampled

    cmd = [sys.executable, __file__, "--examples", args.examples, "--limit", str(args.limit),
           "--threads", str(args.threads), "--run-variant", variant, "--out", str(out)]
    if args.generator:
        cmd += ["--generator", args.generator]
    started = time.monotonic()
    peak = run_sampled(cmd, 0.5, f"variant {variant}")
    stats = read_train_stats(out)
    _, cfg = sft_config(variant, args.generator)
    return {"variant": variant, "per_device": cfg.per_device_batch_size, "compact_lm_head": cfg.compact_lm_head,
            "bf16": resolve_bf16(cfg.bf16), "examples": stats["n_examples"], "tokens": stats["train_tokens"],
            "train_s": stats["train_s"], "tokens_per_s": stats["train_tokens_per_s"],
            "peak_gib": peak / 2**30, "wall_s": time.monotonic() - started}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.run_variant:
        return run_variant(args)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    n = len(load_examples(args.examples, args.limit))
    print(f"{n} examples from {args.examples}, {args.threads} threads; variants run one after the other",
          file=sys.stderr, flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="sft-throughput-") as tmp:
        for variant in variants:
            rows.append(measure(args, variant, Path(tmp) / variant))
            print(f"  {variant}: {rows[-1]['tokens_per_s']:.1f} tokens/s", file=sys.stderr, flush=True)
    ref = next((r["tokens_per_s"] for r in rows if r["variant"] == "before"), rows[0]["tokens_per_s"])
    print("| variant | micro-batch | LM head | bf16 | examples | tokens | train s | tokens/s | vs before | peak memory |")
    print("|---|---:|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        head = "completion tokens" if r["compact_lm_head"] else "every position"
        print(f"| {r['variant']} | {r['per_device']} | {head} | {'yes' if r['bf16'] else 'no'} | {r['examples']} "
              f"| {r['tokens']} | {r['train_s']:.0f} | {r['tokens_per_s']:.1f} | {r['tokens_per_s'] / ref:.2f}x "
              f"| {r['peak_gib']:.2f} GiB |")
    if args.json:
        from mucode_env.atomic import write_json_atomic

        write_json_atomic(args.json, {"examples_file": args.examples, "threads": args.threads, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
