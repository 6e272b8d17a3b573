"""``mucode doctor``: hostile probes and every reference solution of the offline benchmarks against
its own public and private tests, in the sandbox (``--calibrate`` measures per-problem time limits)."""

from __future__ import annotations

import argparse

__all__ = ["add_parser", "run"]

OFFLINE_BENCHMARKS = ("mbpp", "humaneval", "codecontests", "apps")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``doctor`` subcommand."""
    p = subparsers.add_parser("doctor", help="check the sandbox and every reference solution of the offline benchmarks")
    p.add_argument("--benchmarks", default=",".join(OFFLINE_BENCHMARKS),
                   help="comma-separated benchmarks to check (default: all)")
    p.add_argument("--data-dir", default=None, help="offline data directory (default: $MUCODE_DATA_DIR)")
    p.add_argument("--limit", type=int, default=None, help="check only the first N problems of each split")
    p.add_argument("--calibrate", metavar="JSON", default=None,
                   help="measure reference solutions and write per-problem time limits to JSON")
    p.add_argument("--tier", default="auto", choices=("auto", "bwrap", "process", "none"), help="sandbox tier")


def run(args: argparse.Namespace) -> int:
    """Run the checks; 0 when every probe is blocked and every reference passes."""
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
