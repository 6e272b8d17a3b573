"""The verifier's scoring, every input run whole vs the prompt's tokens computed once per prompt.

Scores the responses of a real µCODE run's rollouts with a trained verifier
(:meth:`agents.mucode.verifier.Verifier.score`), the way the two callers that cost hours do:

- ``relabel``: every distinct (prompt, response) of the rollouts in one call (the local search
  expert scores all candidates of an iteration);
- ``bon``: one call per problem and turn with its candidates (up to ``--n``), as multi-turn
  Best-of-N scores a turn.

Each mode runs both ways in one process, one after the other, ``--repeat`` times (alternating),
and prints programs/s, the ratio of the shared-prefix path to the whole-input path, and the
largest score difference between them.

    python3 benchmarks/verifier_scoring.py --verifier runs/headtohead/train/mucode/iter1/verifier \\
        --rollouts runs/headtohead/train/mucode/iter1/rollouts.jsonl --limit 40 --threads 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without an installed mucode
    sys.path.insert(0, str(REPO))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--verifier", required=True, help="a trained verifier (a µCODE run's iterN/verifier)")
    p.add_argument("--rollouts", required=True, help="a µCODE run's iterN/rollouts.jsonl")
    p.add_argument("--limit", type=int, default=40, help="first N problems of the file (default: %(default)s)")
    p.add_argument("--n", type=int, default=5, help="candidates per Best-of-N call (default: %(default)s)")
    p.add_argument("--modes", default="relabel,bon", help="comma-separated (default: %(default)s)")
    p.add_argument("--repeat", type=int, default=2, help="runs of each way (default: %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default: %(default)s)")
    p.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    return p.parse_args(argv)


def load_calls(path: str, limit: int, n: int) -> dict[str, list[tuple[list[str], list[str]]]]:
    """The score calls of each mode: lists of (prompts, responses)."""
    by_problem: dict[str, list[dict]] = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            by_problem.setdefault(row["problem_id"], []).append(row)
    problems = list(by_problem.values())[:limit] if limit > 0 else list(by_problem.values())
    if not problems:
        raise SystemExit(f"{path}: no rollouts")
    pairs = list(dict.fromkeys((t["prompt"], turn["response"]) for rows in problems for t in rows for turn in t["turns"]))
    relabel = [([p for p, _ in pairs], [r for _, r in pairs])]
    bon = []
    for rows in problems:  # a turn's candidates: the rollouts' responses at that turn, n at a time
        for k in range(max(len(t["turns"]) for t in rows)):
            texts = [t["turns"][k]["response"] for t in rows if len(t["turns"]) > k]
            for start in range(0, len(texts), n):
                bon.append(([rows[0]["prompt"]] * len(texts[start:start + n]), texts[start:start + n]))
    return {"relabel": relabel, "bon": bon}


def run(verifier, calls, *, share_prefix: bool) -> tuple[float, int, list[float]]:
    verifier.share_prefix = share_prefix
    scores: list[float] = []
    t0 = time.perf_counter()
    for prompts, responses in calls:
        scores.extend(verifier.score(prompts, responses))
    return time.perf_counter() - t0, sum(len(r) for _, r in calls), scores


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from agents.mucode.verifier import Verifier

    torch.set_num_threads(args.threads)
    verifier = Verifier.load(args.verifier, device="cpu")
    calls = load_calls(args.rollouts, args.limit, args.n)
    results = []
    print("| mode | calls | programs | whole inputs: programs/s | shared prompt: programs/s | ratio | max score diff |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for mode in args.modes.split(","):
        if mode not in calls:
            raise SystemExit(f"unknown mode {mode!r}; known: {sorted(calls)}")
        seconds = {True: [], False: []}
        scores = {}
        for _ in range(args.repeat):
            for share in (False, True):
                s, programs, scores[share] = run(verifier, calls[mode], share_prefix=share)
                seconds[share].append(s)
        whole, shared = programs / min(seconds[False]), programs / min(seconds[True])
        diff = max(abs(a - b) for a, b in zip(scores[False], scores[True]))
        results.append({"mode": mode, "calls": len(calls[mode]), "programs": programs, "whole_programs_per_s": whole,
                        "shared_programs_per_s": shared, "ratio": shared / whole, "max_score_diff": diff,
                        "seconds": {"whole": seconds[False], "shared": seconds[True]}})
        print(f"| {mode} | {len(calls[mode])} | {programs} | {whole:.2f} | {shared:.2f} | {shared / whole:.2f}x | {diff:.1e} |",
              flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
