"""PPO's forward passes with the LM head on every position against on the policy's tokens only.

RLEF-style PPO (:mod:`baselines.ppo`) scores every sampled episode with the policy and the
reference model, then trains on it; only the tokens the policy sampled carry a log-probability,
while a multi-turn segment is mostly prompt and public-test feedback. This benchmark runs both
passes on the same segments, built from real episodes (the chat of each stored trajectory, its
assistant turns as the policy's tokens), once per variant, each in its own process one after the
other, and prints tokens/s and the process's peak resident memory:

- ``dense``: the LM head, log-softmax and entropy on every position (before);
- ``policy``: on the policy's tokens only (``policy_forward(positions=...)``, as PPO now runs).

    python3 benchmarks/ppo_update.py --episodes runs/headtohead/episodes/MuCode-MBPP-v0/instruct__T3_N1_greedy
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without an installed mucode
    sys.path.insert(0, str(REPO))

VARIANTS = ("dense", "policy")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--episodes", required=True, help="a directory of stored episodes (an evaluation cell's or a rollout run's)")
    p.add_argument("--model", default="qwen2.5-coder-0.5b", help="policy and reference model (default: %(default)s)")
    p.add_argument("--segments", type=int, default=6, help="episodes to use, multi-turn ones first (default: %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default: %(default)s)")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated (default: %(default)s)")
    p.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    p.add_argument("--run-variant", default=None, help=argparse.SUPPRESS)  # the child's job
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def segments(tok, trajectories, count: int) -> list[tuple[list[int], list[int]]]:
    """``(token ids, policy mask)`` of each episode's whole chat: the prompt, every response
    (the policy's tokens) and the feedback after it, as PPO trains on them."""
    chosen = sorted(trajectories, key=lambda t: (-len(t.turns), t.problem_id))[:count]
    out = []
    for traj in chosen:
        chat = [{"role": "user", "content": traj.prompt}]
        for k, turn in enumerate(traj.turns):
            chat.append({"role": "assistant", "content": turn.response})
            if k + 1 < len(traj.turns):
                chat.append({"role": "user", "content": "Feedback:\n" + turn.feedback})
        ids: list[int] = []
        mask: list[int] = []
        for k in range(1, len(chat) + 1):
            prefix = tok.apply_chat_template(chat[:k], tokenize=True, return_dict=True)["input_ids"]
            mask += [int(chat[k - 1]["role"] == "assistant")] * (len(prefix) - len(ids))
            ids = list(prefix)
        out.append((ids, mask))
    return out


def run_variant(args: argparse.Namespace) -> int:
    """In the child: score every segment with the policy and the reference (no gradient), then
    one forward and backward pass of a PPO-style loss per segment; write the timings."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agents.episode_store import EpisodeStore
    from agents.models.convert import hf_checkpoint
    from baselines.ppo import ValueHead, policy_forward
    from baselines.ppo_math import masked_mean

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    path = hf_checkpoint(args.model)
    tok = AutoTokenizer.from_pretrained(path)
    segs = segments(tok, EpisodeStore.read(args.episodes), args.segments)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    ref = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval().requires_grad_(False)
    head = ValueHead(model.config.hidden_size)
    dense = args.run_variant == "dense"
    batches = []
    for ids, mask in segs:
        t_ids = torch.tensor([ids])
        batches.append((t_ids, torch.ones_like(t_ids), torch.tensor([mask], dtype=torch.float32)))
    t0 = time.perf_counter()
    with torch.no_grad():
        for ids, attn, mask in batches:
            policy_forward(model, ids, attn, value_head=head, positions=None if dense else mask)
            policy_forward(ref, ids, attn, positions=None if dense else mask)
    score_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for ids, attn, mask in batches:
        out = policy_forward(model, ids, attn, value_head=head, with_entropy=True, positions=None if dense else mask)
        loss = masked_mean(out["logp"] + 0.01 * out["entropy"], mask) + out["values"].pow(2).mean()
        loss.backward()
        model.zero_grad(set_to_none=True)
    train_s = time.perf_counter() - t0
    tokens = sum(len(ids) for ids, _ in segs)
    policy_tokens = sum(sum(mask) for _, mask in segs)
    Path(args.out).write_text(json.dumps({"segments": len(segs), "tokens": tokens, "policy_tokens": policy_tokens,
                                          "score_s": score_s, "train_s": train_s}))
    return 0


def measure(args: argparse.Namespace, variant: str, out: Path) -> dict:
    """Run one variant in a child process, sampling its resident memory."""
    from benchmarks.peak_memory import run_sampled

    cmd = [sys.executable, __file__, "--episodes", args.episodes, "--model", args.model, "--segments",
           str(args.segments), "--threads", str(args.threads), "--run-variant", variant, "--out", str(out)]
    peak = run_sampled(cmd, 0.25, f"variant {variant}")
    return {"variant": variant, **json.loads(out.read_text()), "peak_gib": peak / 2**30}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.run_variant:
        return run_variant(args)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="ppo-update-") as tmp:
        for variant in variants:
            rows.append(measure(args, variant, Path(tmp) / f"{variant}.json"))
    ref = rows[0]
    first = ref["variant"]
    print(f"{ref['segments']} segments, {ref['tokens']} tokens of which {ref['policy_tokens']} the policy's, "
          f"{args.threads} threads, {args.model}")
    print(f"| LM head on | scoring tokens/s (policy + reference) | vs {first} | training tokens/s "
          f"(forward + backward) | vs {first} | peak memory |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        score, train = r["tokens"] / r["score_s"], r["tokens"] / r["train_s"]
        print(f"| {'every position' if r['variant'] == 'dense' else 'the policy tokens'} | {score:.1f} "
              f"| {score / (ref['tokens'] / ref['score_s']):.2f}x | {train:.1f} "
              f"| {train / (ref['tokens'] / ref['train_s']):.2f}x | {r['peak_gib']:.2f} GiB |")
    if args.json:
        from mucode_env.atomic import write_json_atomic

        write_json_atomic(args.json, {"episodes": args.episodes, "threads": args.threads, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
