"""Rollout throughput: the llama.cpp backend against the transformers backend on the same model.

Both backends run the same greedy rollouts (same environment, problems, turn limit and token
budget); transformers loads the GGUF dequantized (converted once, then cached). Prints tokens/s,
episodes/min and the llama.cpp / transformers ratio.

    python benchmarks/rollout_throughput.py --model qwen2.5-coder-0.5b --limit 4 --threads 2
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.backends import make_policy  # noqa: E402
from agents.policy import SamplingParams  # noqa: E402
from agents.rollout import RolloutConfig, run_rollouts  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="qwen2.5-coder-0.5b", help="registry name or GGUF path (default: %(default)s)")
    p.add_argument("--env", default="MuCode-HumanEval-v0", help="environment id (default: %(default)s)")
    p.add_argument("--limit", type=int, default=4, help="problems (default: %(default)s)")
    p.add_argument("--turns", type=int, default=2, help="turn limit (default: %(default)s)")
    p.add_argument("--max-new-tokens", type=int, default=160, help="tokens per turn (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads for both backends; more threads than free cores slows llama.cpp down (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=4, help="transformers batch (default: %(default)s)")
    p.add_argument("--backends", default="llama_cpp,transformers", help="comma-separated (default: %(default)s)")
    p.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    return p.parse_args(argv)


def bench(backend: str, args: argparse.Namespace) -> dict:
    kw = {"n_threads": args.threads, "n_ctx": 4096} if backend == "llama_cpp" else {
        "torch_threads": args.threads, "batch_size": args.batch_size, "device": "cpu"}
    t0 = time.perf_counter()
    policy = make_policy(backend, args.model, **kw)
    load_s = time.perf_counter() - t0
    config = RolloutConfig(
        env_id=args.env, limit=args.limit, max_turns=args.turns, progress=False,
        sampling=SamplingParams(temperature=0.0, max_new_tokens=args.max_new_tokens),
        max_live_episodes=args.limit,
    )
    result = run_rollouts(policy, config)
    s = result.stats
    solved = sum(t.success for t in result.trajectories)
    return {
        "backend": backend, "load_s": load_s, "episodes": s.episodes, "generations": s.generations,
        "completion_tokens": s.completion_tokens, "generation_s": s.generation_s, "wall_s": s.wall_s,
        "tokens_per_s": s.tokens_per_s, "episodes_per_min": s.episodes_per_min, "solved": solved,
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    rows = [bench(b.strip(), args) for b in args.backends.split(",") if b.strip()]
    print(f"model {args.model}, {args.env}, {args.limit} problems, T={args.turns}, "
          f"{args.max_new_tokens} new tokens/turn, {args.threads} threads, greedy")
    print(f"{'backend':<14}{'load s':>8}{'tokens':>8}{'gen s':>8}{'tok/s':>8}{'ep/min':>8}{'solved':>8}")
    for r in rows:
        print(f"{r['backend']:<14}{r['load_s']:>8.1f}{r['completion_tokens']:>8d}{r['generation_s']:>8.1f}"
              f"{r['tokens_per_s']:>8.1f}{r['episodes_per_min']:>8.2f}{r['solved']:>8d}")
    by = {r["backend"]: r for r in rows}
    if "llama_cpp" in by and "transformers" in by and by["transformers"]["tokens_per_s"] > 0:
        ratio = by["llama_cpp"]["tokens_per_s"] / by["transformers"]["tokens_per_s"]
        ep_ratio = by["llama_cpp"]["episodes_per_min"] / max(by["transformers"]["episodes_per_min"], 1e-9)
        print(f"llama.cpp / transformers: {ratio:.2f}x tokens/s, {ep_ratio:.2f}x episodes/min")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
