"""The ``mucode`` command line. Subcommands are thin callers of the library.

``doctor`` lives here; ``eval``, ``train`` and ``bench`` are imported lazily from the agents and
baselines packages so that ``mucode doctor`` works without the learning extras installed.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from mucode_env.errors import MuCodeError

# subcommand -> module exposing add_parser(subparsers) and run(args) -> int
LAZY_COMMANDS = {
    "eval": "agents.cli_eval",
    "train": "agents.cli_train",
    "bench": "baselines.cli_bench",
    "serve": "mucode_env.serve.cli",
}
OFFLINE_BENCHMARKS = ("mbpp", "humaneval", "codecontests", "apps")


def _add_doctor(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("doctor", help="check the sandbox and every reference solution of the offline benchmarks")
    p.add_argument("--benchmarks", default=",".join(OFFLINE_BENCHMARKS),
                   help="comma-separated benchmarks to check (default: all)")
    p.add_argument("--data-dir", default=None, help="offline data directory (default: $MUCODE_DATA_DIR)")
    p.add_argument("--limit", type=int, default=None, help="check only the first N problems of each split")
    p.add_argument("--calibrate", metavar="JSON", default=None,
                   help="measure reference solutions and write per-problem time limits to JSON")
    p.add_argument("--tier", default="auto", choices=("auto", "bwrap", "process", "none"), help="sandbox tier")


def _doctor(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table
    from tqdm import tqdm

    from mucode_env.datasets import load_problems
    from mucode_env.atomic import write_json_atomic
    from mucode_env.doctor import calibrate_time_limits, check_references, sandbox_probes
    from mucode_env.sandbox import Sandbox, SandboxConfig

    console = Console()
    benchmarks = [b.strip() for b in args.benchmarks.split(",") if b.strip()]
    splits = {"mbpp": ("prompt", "test", "validation", "train"), "humaneval": ("test",),
              "codecontests": ("train",), "apps": ("test",)}
    with Sandbox(SandboxConfig(tier=args.tier)) as sandbox:
        console.print(f"sandbox tier: [bold]{sandbox.tier}[/bold], {sandbox.n_workers} workers")
        probes = Table(title="sandbox probes (hostile programs must fail)")
        probes.add_column("probe")
        probes.add_column("ok")
        probes.add_column("verdict")
        all_ok = True
        for name, blocked, detail in sandbox_probes(sandbox):
            probes.add_row(name, "yes" if blocked else "[red]NO[/red]", detail)
            all_ok &= blocked
        console.print(probes)
        table = Table(title="reference solutions on their own public + private tests")
        for column in ("benchmark", "split", "problems", "checked", "no reference", "failures", "seconds"):
            table.add_column(column)
        calibration: dict[str, float] = {}
        failures = []
        for benchmark in benchmarks:
            for split in splits.get(benchmark, ("test",)):
                problems = load_problems(benchmark, split, data_dir=args.data_dir)
                if args.limit is not None:
                    problems = problems[: args.limit]
                with tqdm(total=len(problems), desc=f"{benchmark}/{split}", unit="problem", leave=False) as bar:
                    if args.calibrate:
                        calibration.update(calibrate_time_limits(problems, sandbox, progress=bar.update))
                        continue
                    report = check_references(problems, sandbox, benchmark, split, progress=bar.update)
                failures += report.failures
                table.add_row(benchmark, split, str(report.n_problems), str(report.n_checked),
                              str(report.n_without_reference),
                              str(len(report.failures)) if report.failures else "[green]0[/green]",
                              f"{report.seconds:.1f}")
        if args.calibrate:
            write_json_atomic(args.calibrate, calibration)
            console.print(f"wrote {len(calibration)} time limits to {args.calibrate}")
            return 0
        console.print(table)
        for failure in failures[:50]:
            console.print(f"[red]FAIL[/red] {failure.problem_id} ({failure.which}): {failure.status} {failure.message}")
        ok = all_ok and not failures
        console.print("[green]doctor: all checks passed[/green]" if ok else "[red]doctor: problems found[/red]")
        return 0 if ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mucode", description="multi-turn code generation environments and agents")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_doctor(subparsers)
    for name, module in LAZY_COMMANDS.items():
        try:
            importlib.import_module(module).add_parser(subparsers)
        except ImportError as exc:
            missing = subparsers.add_parser(name, help=f"(unavailable: {exc})")
            missing.set_defaults(_unavailable=f"`mucode {name}` needs the learning extras: "
                                              f"pip install 'mucode[agents,llama]' ({exc})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_unavailable", None):
        print(f"mucode: {args._unavailable}", file=sys.stderr)
        return 2
    try:
        if args.command == "doctor":
            return _doctor(args)
        return int(importlib.import_module(LAZY_COMMANDS[args.command]).run(args))
    except MuCodeError as exc:
        print(f"mucode {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mucode: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
