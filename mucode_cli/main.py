"""The ``mucode`` command line: the top layer, thin callers of the library.

Each subcommand is a module of this package with ``add_parser(subparsers)`` and
``run(args) -> int``; those modules import nothing heavy until they run, so ``mucode doctor``
works without the learning extras.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mucode_cli import bench, doctor, serve, train
from mucode_cli import eval as eval_command
from mucode_env.errors import MuCodeError

__all__ = ["COMMANDS", "build_parser", "main"]

COMMANDS = {"doctor": doctor, "eval": eval_command, "train": train, "bench": bench, "serve": serve}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mucode", description="multi-turn code generation environments and agents")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS.values():
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(COMMANDS[args.command].run(args))
    except MuCodeError as exc:
        print(f"mucode {args.command}: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        print(f"mucode {args.command}: a package is missing: {exc}. The learning commands need the extras: "
              f"pip install 'mucode[agents,llama]'", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mucode: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
