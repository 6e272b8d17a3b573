"""``mucode eval``: evaluate a model in a MuCode environment (a thin caller of :mod:`agents.evaluate`).

    mucode eval --env MuCode-HumanEval-v0 --model qwen2.5-coder-0.5b --turns 3 --limit 20

prints accuracy by turn, turns-to-solve and (with ``--n`` > 1) unbiased pass@k, and writes
``results.json``, ``accuracy_by_turn.png`` and the trajectories under ``--out``. ``--turns 1``
is single-turn Instruct. Bad input fails fast with one line and exit code 2. ``--ray`` plays the
episodes on Ray actors (see :mod:`mucode_cli.ray_flags`), with the same results.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from mucode_cli.ray_flags import add_ray_arguments, ray_config

__all__ = ["add_parser", "run"]

DEFAULT_LIMIT = 20
DEFAULT_MODEL = "qwen2.5-coder-0.5b"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``eval`` subcommand (imports nothing heavy)."""
    p = subparsers.add_parser(
        "eval", help="evaluate a model: accuracy by turn, turns-to-solve, pass@k",
        description="Roll a model out in a MuCode environment and report accuracy by turn.",
    )
    p.add_argument("--env", default="MuCode-HumanEval-v0", help="environment id (default: %(default)s)")
    p.add_argument("--model", default=None,
                   help="registry name, GGUF file, checkpoint directory or hub id (default: qwen2.5-coder-0.5b); "
                        "for --backend openai the served model name (default: the server's first model)")
    p.add_argument("--backend", default=None, choices=("llama_cpp", "transformers", "openai", "sglang", "vllm"),
                   help="inference backend (default: llama_cpp; openai with --endpoints); vllm starts and stops a "
                        "vLLM server (set it up with `bash scripts/setup_vllm.sh`)")
    p.add_argument("--base-url", default=None, help="server URL for --backend openai (e.g. http://127.0.0.1:8000/v1)")
    p.add_argument("--turns", type=int, default=3, help="turn limit T; 1 = single-turn (default: %(default)s)")
    p.add_argument("--limit", type=int, default=DEFAULT_LIMIT,
                   help="first N problems of the split; 0 = all (default: %(default)s)")
    p.add_argument("--problem-ids", default=None, help="comma-separated problem ids (instead of the first N)")
    p.add_argument("--split", default=None, help="dataset split (default: the environment's evaluation split)")
    p.add_argument("--n", type=int, default=1, help="samples per problem (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=None,
                   help="sampling temperature (default: 0 = greedy when --n 1, else 0.7 as in the paper)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling (default: %(default)s)")
    p.add_argument("--max-new-tokens", type=int, default=1000, help="tokens per turn (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="run seed (default: %(default)s)")
    p.add_argument("--out", default=None,
                   help="output directory; an interrupted run resumes there (default: runs/eval/<env>-<model>-T<turns>)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for llama_cpp/transformers/vllm")
    p.add_argument("--n-ctx", type=int, default=8192, help="llama_cpp context length (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="live episodes per generation call (default: 64 for openai/sglang/vllm servers, 8 otherwise: "
                        "llama.cpp generates one at a time, so a small batch only makes progress and resume finer); "
                        "also the transformers micro-batch")
    p.add_argument("--cache-dir", default=None, help="model cache (default: $MUCODE_CACHE_DIR/models or ~/.cache/mucode/models)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_ray_arguments(p, "the evaluation's episodes")
    return p


def _fail(message: str) -> int:
    print(f"mucode eval: error: {message}", file=sys.stderr)
    return 2


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text.strip("/").split("/")[-1]) or "model"


def _policy_kwargs(args: argparse.Namespace) -> dict:
    if args.backend == "llama_cpp":
        kw = {"n_ctx": args.n_ctx, "cache_dir": args.cache_dir}
        if args.threads:
            kw["n_threads"] = args.threads
        return kw
    if args.backend == "transformers":
        return {"batch_size": args.batch_size or 8, "cache_dir": args.cache_dir, "torch_threads": args.threads}
    if args.backend == "openai":
        return {"base_url": args.base_url} if args.base_url else {}  # with --endpoints each actor gets its server
    if args.backend == "vllm" and args.threads:
        return {"cache_dir": args.cache_dir, "omp_threads": args.threads}
    return {"cache_dir": args.cache_dir}


def run(args: argparse.Namespace) -> int:
    """Run the evaluation described by ``args``; returns the exit code (2 on bad input)."""
    from agents.backends.base import BackendError
    from agents.policy import SamplingParams
    from mucode_env.errors import MuCodeError
    from mucode_env.registration import check_env_id

    try:
        check_env_id(args.env)
    except MuCodeError as exc:
        return _fail(str(exc))
    for name in ("turns", "n", "max_new_tokens", "batch_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            return _fail(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.limit < 0:
        return _fail(f"--limit must be >= 0 (0 = all problems), got {args.limit}")
    try:
        ray = ray_config(args)
    except ValueError as exc:
        return _fail(str(exc))
    endpoints = ray is not None and ray.endpoints is not None
    if endpoints and args.backend not in (None, "openai"):
        return _fail(f"--endpoints are OpenAI-compatible servers: drop --backend {args.backend} (or use openai)")
    args.backend = args.backend or ("openai" if endpoints else "llama_cpp")
    if args.backend == "openai" and not args.base_url and not endpoints:
        return _fail("--backend openai needs --base-url (e.g. http://127.0.0.1:8000/v1) or --ray --endpoints")
    temperature = args.temperature if args.temperature is not None else (0.0 if args.n == 1 else 0.7)
    try:
        sampling = SamplingParams(n=1, temperature=temperature, top_p=args.top_p,
                                  max_new_tokens=args.max_new_tokens, seed=args.seed)
    except ValueError as exc:
        return _fail(str(exc))
    problem_ids = tuple(p.strip() for p in args.problem_ids.split(",") if p.strip()) if args.problem_ids else None
    out = Path(args.out) if args.out else Path("runs") / "eval" / f"{args.env}-{_slug(str(args.model or DEFAULT_MODEL))}-T{args.turns}"

    from agents.backends import PolicySpec
    from agents.evaluate import evaluate
    from agents.models import ModelIntegrityError, ModelNotInstalledError, UnknownModelError
    from agents.rollout import RolloutConfig

    try:
        config = RolloutConfig(
            env_id=args.env, split=args.split, problem_ids=problem_ids,
            limit=None if (args.limit == 0 or problem_ids) else args.limit,
            n=args.n, sampling=sampling, max_turns=args.turns, seed=args.seed,
            max_live_episodes=args.batch_size or (64 if args.backend in ("openai", "sglang", "vllm") else 8),
            progress=not args.no_progress, ray=ray,
        )
        model = args.model if args.model or args.backend == "openai" else DEFAULT_MODEL
        spec = PolicySpec(args.backend, model, _policy_kwargs(args))
        # with --ray every episode actor builds its own replica (or client) from the recipe
        policy = spec if ray is not None else spec.build()
        if ray is None and args.backend == "openai":
            served = policy.list_models()  # fail fast when the server is unreachable
            if policy.model is not None and policy.model not in served:
                return _fail(f"the server at {args.base_url} does not serve model {policy.model!r}; it serves {served}")
        try:
            report = evaluate(policy, config, out)
        finally:
            close = getattr(policy, "close", None)  # the vllm backend's server
            if close is not None:
                close()
    except (UnknownModelError, ModelNotInstalledError, ModelIntegrityError, BackendError, ValueError) as exc:
        return _fail(str(exc))
    except MuCodeError as exc:  # unknown problem ids, missing datasets, sandbox failures
        return _fail(str(exc))
    except ImportError as exc:
        return _fail(str(exc))

    from rich.console import Console

    console = Console()
    console.print(report.table())
    console.print(f"results: {out / 'results.json'}\nplot: {out / 'accuracy_by_turn.png'}\n"
                  f"trajectories: {out / 'trajectories'}")
    return 0
