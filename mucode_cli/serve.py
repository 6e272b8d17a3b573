"""``mucode serve``: the command line of the service (FastAPI and uvicorn load only when it runs)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mucode_env.registration import ENV_IDS
from mucode_env.serve.config import TOKEN_HINT, ServeConfig

TOKEN_ENV = "MUCODE_SERVE_TOKEN"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    defaults = ServeConfig()
    p = subparsers.add_parser(
        "serve", help="serve the environments and the sandbox over HTTP (OpenEnv, SandboxFusion, batch API)",
        description="Serve mucode over HTTP: OpenEnv at /openenv/<env id>, SandboxFusion's /run_code and "
                    "/submit, the batch API at /v1/execute, health at /health. Binds 127.0.0.1; any other "
                    f"address needs a token (${TOKEN_ENV} or --token-file).")
    p.add_argument("--host", default=defaults.host, help="address to bind (default: %(default)s)")
    p.add_argument("--port", type=int, default=defaults.port, help="TCP port (default: %(default)s)")
    p.add_argument("--token-file", default=None,
                   help=f"file holding the bearer token (default: ${TOKEN_ENV}; a token on the command line would "
                        f"show in the process list). Make one with: {TOKEN_HINT}")
    p.add_argument("--max-concurrent", type=int, default=defaults.max_concurrent,
                   help="requests executing at once (default: %(default)s)")
    p.add_argument("--max-queue", type=int, default=defaults.max_queue,
                   help="requests waiting for a slot before answering 429 (default: %(default)s)")
    p.add_argument("--queue-timeout", type=float, default=defaults.queue_timeout_s,
                   help="seconds a request may wait for a slot (default: %(default)s)")
    p.add_argument("--max-batch", type=int, default=defaults.max_batch,
                   help="items per /v1/execute request (default: %(default)s)")
    p.add_argument("--max-body-bytes", type=int, default=defaults.max_body_bytes,
                   help="largest request body or WebSocket message (default: %(default)s)")
    p.add_argument("--max-run-timeout", type=float, default=defaults.max_run_timeout_s,
                   help="largest time limit a client may ask for one run, seconds (default: %(default)s)")
    p.add_argument("--max-sessions", type=int, default=defaults.max_sessions,
                   help="OpenEnv sessions per environment id (default: %(default)s)")
    p.add_argument("--grace", type=float, default=defaults.shutdown_grace_s,
                   help="on SIGTERM/Ctrl-C, seconds in-flight requests may still finish before a 503 "
                        "(default: %(default)s)")
    p.add_argument("--envs", default=",".join(defaults.envs),
                   help=f"comma-separated environment ids served over OpenEnv (default: all: {', '.join(ENV_IDS)})")
    p.add_argument("--max-turns", type=int, default=defaults.max_turns, help="turns per episode (default: %(default)s)")
    p.add_argument("--termination", default=defaults.termination, choices=("public", "oracle"))
    p.add_argument("--reward-mode", default=defaults.reward_mode, choices=("final", "per_turn"))
    p.add_argument("--data-dir", default=None, help="offline data directory (default: $MUCODE_DATA_DIR)")
    p.add_argument("--tier", default="auto", choices=("auto", "bwrap", "process", "none"), help="sandbox tier")
    p.add_argument("--workers", type=int, default=None, help="sandbox workers (default: one per core)")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    return p


def read_token(token_file: str | None) -> str | None:
    """The token from ``--token-file``, else ``$MUCODE_SERVE_TOKEN``, else None."""
    if token_file:
        return Path(token_file).read_text(encoding="utf-8").strip() or None
    return os.environ.get(TOKEN_ENV) or None


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    from mucode_env.sandbox import SandboxConfig

    return ServeConfig(
        host=args.host, port=args.port, token=read_token(args.token_file), max_body_bytes=args.max_body_bytes,
        max_batch=args.max_batch, max_concurrent=args.max_concurrent, max_queue=args.max_queue,
        queue_timeout_s=args.queue_timeout, shutdown_grace_s=args.grace, max_run_timeout_s=args.max_run_timeout,
        max_sessions=args.max_sessions, envs=tuple(e.strip() for e in args.envs.split(",") if e.strip()),
        max_turns=args.max_turns, termination=args.termination, reward_mode=args.reward_mode,
        data_dir=args.data_dir, sandbox=SandboxConfig(tier=args.tier, n_workers=args.workers))


def run(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
    except (ValueError, TypeError, OSError) as exc:
        print(f"mucode serve: {exc}", file=sys.stderr)
        return 2
    try:
        from mucode_env.serve.server import serve
    except ImportError as exc:
        print(f"mucode serve needs the serve extra: pip install 'mucode[serve]' ({exc})", file=sys.stderr)
        return 2
    serve(config, log_level=args.log_level)
    return 0
