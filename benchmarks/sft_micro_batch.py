"""The cpu preset's generator fine-tuning on a run's longest relabeled examples, at one micro-batch size.

Run it once per size under ``peak_memory.py`` (each alone): the same examples and global batch,
so memory and tokens/s differ only by the micro-batch (and the padding it brings).

    python3 benchmarks/peak_memory.py -- python3 benchmarks/sft_micro_batch.py \\
        --examples runs/x/iter1/relabeled.jsonl --per-device 2 --out /tmp/sft2
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--examples", required=True, help="a µCODE run's iterN/relabeled.jsonl")
    p.add_argument("--per-device", type=int, required=True, help="micro-batch size")
    p.add_argument("--n", type=int, default=2, help="examples (the longest that fit max_length; default: %(default)s)")
    p.add_argument("--skip", type=int, default=1, help="longest examples to skip (over max_length; default: %(default)s)")
    p.add_argument("--out", required=True, help="output directory of the fine-tuned model")
    args = p.parse_args(argv)
    from agents.mucode import MuCodeConfig
    from agents.training.sft import finetune, read_train_stats

    rows = [json.loads(line) for line in Path(args.examples).read_text().splitlines() if line.strip()]
    rows.sort(key=lambda r: -len(json.dumps(r)))
    chosen = rows[args.skip: args.skip + args.n]
    preset = MuCodeConfig.cpu()
    cfg = replace(preset.sft, per_device_batch_size=args.per_device, batch_size=args.n, epochs=1, progress=False)
    finetune(preset.generator, chosen, cfg, args.out)
    stats = read_train_stats(args.out)
    print(json.dumps({"per_device": args.per_device, "examples": stats["n_examples"],
                      "tokens": stats["n_tokens_per_epoch"], "train_s": stats["train_s"],
                      "tokens_per_s": stats["train_tokens_per_s"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
