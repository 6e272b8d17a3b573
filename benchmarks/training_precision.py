"""Training throughput by precision: the real fine-tuning and verifier stages in fp32 and in bf16.

Runs :func:`agents.training.sft.finetune` (the µCODE generator stage: TRL SFTTrainer, LoRA) and
:func:`agents.mucode.verifier.train_verifier` (Bradley-Terry, full fine-tune of a scalar head)
on the same MBPP-train examples in each precision and prints trained tokens/s (the stages'
own ``train_stats.json``) with the ratio to fp32, measured in one run:

- ``fp32``: fp32 weights, no autocast (the former CPU default);
- ``bf16-autocast``: fp32 master weights, forward and backward under bf16 autocast;
- ``bf16``: weights stored in bf16 (the frozen LoRA base) plus bf16 autocast (generator only:
  a full fine-tune keeps fp32 master weights).

    python benchmarks/training_precision.py --threads 2 --examples 8 --max-length 512
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VARIANTS = {
    "fp32": {"torch_dtype": "float32", "bf16": False},
    "bf16-autocast": {"torch_dtype": "float32", "bf16": True},
    "bf16": {"torch_dtype": "bfloat16", "bf16": True},
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--generator", default="qwen2.5-coder-0.5b", help="generator base (default: %(default)s)")
    p.add_argument("--verifier", default="smollm2-135m", help="verifier base (default: %(default)s)")
    p.add_argument("--examples", type=int, default=8, help="training examples (default: %(default)s)")
    p.add_argument("--max-length", type=int, default=512, help="tokens per example, at most (default: %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default: %(default)s)")
    p.add_argument("--stages", default="generator,verifier", help="comma-separated (default: %(default)s)")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated (default: %(default)s)")
    p.add_argument("--data-dir", default=None, help="offline data (default: $MUCODE_DATA_DIR)")
    p.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    return p.parse_args(argv)


def examples(n: int, data_dir: str | None) -> tuple[list[dict], list]:
    """SFT rows and verifier trajectories from MBPP-train reference solutions and wrong answers."""
    from agents.records import Trajectory, TurnRecord
    from mucode_env.datasets import load_problems
    from mucode_env.prompts import first_user_message

    problems = load_problems("mbpp", "train", data_dir=data_dir)[:n]
    rows, trajs = [], []
    for p in problems:
        prompt = first_user_message(p)
        good = f"Here is a solution.\n```python\n{p.reference_solution}\n```"
        rows.append({"prompt": [{"role": "user", "content": prompt}],
                     "completion": [{"role": "assistant", "content": good}]})
        for ok, text in ((True, good), (False, "```python\ndef f():\n    return None\n```")):
            trajs.append(Trajectory(p.id, "MuCode-MBPP-v0", prompt, [TurnRecord(text, "", "", ok, ok, "")]))
    return rows, trajs


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from agents.mucode.verifier import VerifierConfig, train_verifier
    from agents.training.precision import bf16_supported
    from agents.training.sft import SFTRunConfig, finetune, read_train_stats

    torch.set_num_threads(args.threads)
    rows, trajs = examples(args.examples, args.data_dir)
    fast = dict(warmup_ratio=0.0, lr_scheduler_type="constant", progress=False, max_length=args.max_length)
    results = []
    with tempfile.TemporaryDirectory(prefix="mucode-precision-") as work:
        for stage in args.stages.split(","):
            for variant in args.variants.split(","):
                if stage == "verifier" and variant == "bf16":
                    continue  # a full fine-tune keeps fp32 master weights
                out = Path(work) / f"{stage}-{variant}"
                t0 = time.perf_counter()
                if stage == "generator":
                    cfg = SFTRunConfig(learning_rate=1e-5, epochs=1, batch_size=2, per_device_batch_size=2, lora=True,
                                       **VARIANTS[variant], **fast)
                    finetune(args.generator, rows, cfg, out)
                else:
                    cfg = VerifierConfig(pairs_per_prompt=1, learning_rate=1e-5, epochs=1, batch_size=2,
                                         per_device_batch_size=2, **VARIANTS[variant], **fast)
                    train_verifier(trajs, args.verifier, cfg, out)
                stats = read_train_stats(out)
                results.append({"stage": stage, "variant": variant, "tokens_per_s": stats.get("train_tokens_per_s"),
                                "train_s": stats.get("train_s"), "wall_s": time.perf_counter() - t0})
                print(json.dumps(results[-1]), flush=True)
    print(f"\nbf16 supported here: {bf16_supported('cpu')}; torch threads: {args.threads}; "
          f"{args.examples} examples of up to {args.max_length} tokens\n")
    print("| stage | precision | train tokens/s | vs fp32 |\n|---|---|---:|---:|")
    for r in results:
        base = next(x for x in results if x["stage"] == r["stage"] and x["variant"] == "fp32")
        ratio = r["tokens_per_s"] / base["tokens_per_s"] if base["tokens_per_s"] and r["tokens_per_s"] else None
        tps = "-" if r["tokens_per_s"] is None else f"{r['tokens_per_s']:.1f}"
        print(f"| {r['stage']} | {r['variant']} | {tps} | {'-' if ratio is None else f'{ratio:.2f}x'} |")
    if args.json:
        from mucode_env.atomic import write_json_atomic

        write_json_atomic(args.json, {"args": vars(args), "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
