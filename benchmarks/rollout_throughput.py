"""Rollout throughput: llama.cpp (one sequence at a time) against the managed vLLM server at
several concurrencies, and optionally the transformers backend, on the same episodes.

Every lane runs the same greedy rollouts (same environment, problems, turn limit, token budget and
seed). A vLLM lane with concurrency c keeps c episodes in flight, either in rounds (each round's
``generate`` call sends up to c requests at once and waits for the longest) or continuously (each
episode sends its next turn as soon as its last one ran: ``--play``); all vLLM lanes share one server (its start-up and a warm-up request
are the ``load s`` of the first). transformers and vLLM load the GGUF dequantised (converted once, then cached). Prints
a Markdown table with tokens/s and episodes/min and their ratios to llama.cpp.

    python benchmarks/rollout_throughput.py --model qwen2.5-coder-0.5b --limit 16 --threads 2
    python benchmarks/rollout_throughput.py --backends llama_cpp,transformers --limit 6 --threads 1
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

log = logging.getLogger("rollout_throughput")
LABELS = {"llama_cpp": "llama.cpp (GGUF)", "transformers": "transformers (fp32)", "vllm": "vLLM"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="qwen2.5-coder-0.5b", help="registry name or GGUF path (default: %(default)s)")
    p.add_argument("--env", default="MuCode-HumanEval-v0", help="environment id (default: %(default)s)")
    p.add_argument("--limit", type=int, default=16, help="problems, one episode each (default: %(default)s)")
    p.add_argument("--turns", type=int, default=2, help="turn limit (default: %(default)s)")
    p.add_argument("--max-new-tokens", type=int, default=160, help="tokens per turn (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads for every backend (llama.cpp threads, torch threads, vLLM OpenMP threads); "
                        "more threads than free cores slows llama.cpp down (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=4, help="transformers batch (default: %(default)s)")
    p.add_argument("--backends", default="llama_cpp,vllm",
                   help="comma-separated, from llama_cpp, transformers, vllm; the first is the baseline of the ratios "
                        "(default: %(default)s)")
    p.add_argument("--concurrency", default="1,4,16",
                   help="vLLM lanes: episodes in flight, comma-separated (default: %(default)s)")
    p.add_argument("--play", default="rounds,continuous",
                   help="vLLM lanes: rounds and/or continuous play of the episodes in flight (default: %(default)s)")
    p.add_argument("--kv-cache-gib", type=int, default=4, help="vLLM KV cache in GiB (default: %(default)s)")
    p.add_argument("--max-model-len", type=int, default=4096, help="vLLM context length (default: %(default)s)")
    p.add_argument("--json", default=None, help="also write the numbers (and every lane's turn-1 texts) to this JSON file")
    args = p.parse_args(argv)
    args.backend_list = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in args.backend_list if b not in LABELS]
    if unknown or not args.backend_list:
        p.error(f"--backends: unknown {unknown}; choose from {', '.join(LABELS)}")
    try:
        args.concurrency_list = [int(c) for c in args.concurrency.split(",") if c.strip()]
    except ValueError:
        p.error(f"--concurrency must be comma-separated integers, got {args.concurrency!r}")
    if not args.concurrency_list or min(args.concurrency_list) < 1:
        p.error(f"--concurrency values must be >= 1, got {args.concurrency!r}")
    args.play_list = [m.strip() for m in args.play.split(",") if m.strip()]
    if not args.play_list or set(args.play_list) - {"rounds", "continuous"}:
        p.error(f"--play takes rounds and/or continuous, got {args.play!r}")
    return args


def rollout(policy, args: argparse.Namespace, live: int, continuous: bool | None = None) -> dict:
    """One greedy rollout of the configured episodes with ``live`` episodes in flight."""
    config = RolloutConfig(
        env_id=args.env, limit=args.limit, max_turns=args.turns, progress=False,
        sampling=SamplingParams(temperature=0.0, max_new_tokens=args.max_new_tokens),
        max_live_episodes=live, continuous=continuous,
    )
    result = run_rollouts(policy, config)
    s = result.stats
    return {
        "episodes": s.episodes, "generations": s.generations, "completion_tokens": s.completion_tokens,
        "generation_s": s.generation_s, "wall_s": s.wall_s, "tokens_per_s": s.tokens_per_s,
        "episodes_per_min": s.episodes_per_min, "solved": sum(t.success for t in result.trajectories),
        "first_texts": {t.problem_id: t.turns[0].response for t in result.trajectories},
    }


def bench(backend: str, args: argparse.Namespace) -> list[dict]:
    """The rows of one backend: one for llama.cpp and transformers, one per concurrency for vLLM."""
    kw = {
        "llama_cpp": {"n_threads": args.threads, "n_ctx": 4096},
        "transformers": {"torch_threads": args.threads, "batch_size": args.batch_size, "device": "cpu"},
        "vllm": {"omp_threads": args.threads, "kv_cache_gib": args.kv_cache_gib, "max_model_len": args.max_model_len},
    }[backend]
    t0 = time.perf_counter()
    policy = make_policy(backend, args.model, **kw)
    # One short request first, so that no lane pays for first-call warm-up (vLLM's first batch).
    policy.generate([[{"role": "user", "content": "Say hi"}]], SamplingParams(max_new_tokens=4))
    load_s = time.perf_counter() - t0
    precision = getattr(policy, "precision", None)  # VLLMPolicy: the dtype its server computes in
    label = f"{LABELS[backend]} ({precision})" if precision else LABELS[backend]
    try:
        if backend == "vllm":
            lanes = [(f"{c}, {play}" if len(args.play_list) > 1 else str(c), c, play == "continuous")
                     for c in args.concurrency_list for play in args.play_list]
        elif backend == "llama_cpp":
            lanes = [("1 (sequential)", args.limit, False)]  # one sequence at a time whatever the width
        else:
            lanes = [(f"batch {args.batch_size}", args.limit, False)]
        rows = []
        for i, (mode, live, continuous) in enumerate(lanes):
            row = {"backend": backend, "label": label, "mode": mode, "live_episodes": live, "continuous": continuous,
                   "load_s": load_s if i == 0 else 0.0}
            rows.append({**row, **rollout(policy, args, live, continuous)})
        return rows
    finally:
        close = getattr(policy, "close", None)
        if close is not None:
            close()


def markdown(rows: list[dict], args: argparse.Namespace) -> str:
    """The results table; ratios are to the first row (the first backend's first lane)."""
    base = rows[0]
    head = (f"| backend ({args.model}) | episodes in flight | load s | tokens | gen s | tokens/s | episodes/min | solved "
            f"| same turn-1 text as {base['backend']} | tokens/s vs {base['backend']} | episodes/min vs {base['backend']} |")
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        same = sum(r["first_texts"].get(pid) == text for pid, text in base["first_texts"].items())
        tok_ratio = r["tokens_per_s"] / base["tokens_per_s"] if base["tokens_per_s"] > 0 else float("nan")
        ep_ratio = r["episodes_per_min"] / base["episodes_per_min"] if base["episodes_per_min"] > 0 else float("nan")
        lines.append(
            f"| {r['label']} | {r['mode']} | {r['load_s']:.1f} | {r['completion_tokens']} | "
            f"{r['generation_s']:.1f} | {r['tokens_per_s']:.1f} | {r['episodes_per_min']:.2f} | "
            f"{r['solved']}/{r['episodes']} | {same}/{len(base['first_texts'])} | {tok_ratio:.2f}x | {ep_ratio:.2f}x |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if "vllm" in args.backend_list and max(args.concurrency_list) > args.limit:
        log.warning("--limit %d gives fewer episodes than %d in flight: those lanes are capped at %d",
                        args.limit, max(args.concurrency_list), args.limit)
    rows = [row for b in args.backend_list for row in bench(b, args)]
    print(f"model {args.model}, {args.env}, {args.limit} problems (one episode each), T={args.turns}, "
          f"{args.max_new_tokens} new tokens/turn, {args.threads} threads per backend, greedy\n")
    print(markdown(rows, args))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": {k: v for k, v in vars(args).items()}, "results": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
