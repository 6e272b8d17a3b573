"""Peak resident memory of a whole command: the process and every descendant (servers included).

``/usr/bin/time -v`` reports the largest single process; a µCODE iteration runs a vLLM server
(three processes), sandbox workers and training in one tree, so this samples the sum of the RSS
of every process in the tree and reports the largest sum.

    python3 benchmarks/peak_memory.py --every 1 -- mucode train mucode --config cpu --run-dir runs/x
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without an installed mucode
    sys.path.insert(0, str(REPO))


def tree_rss(root: psutil.Process) -> int:
    """Bytes resident in ``root`` and all its descendants (processes that vanish count 0)."""
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def sample_peak(child: subprocess.Popen, every: float, on_sample: Callable[[int], None] | None = None) -> int:
    """The largest :func:`tree_rss` of ``child``'s tree, sampled every ``every`` s until it exits.

    ``on_sample`` sees each sample (bytes) as it is taken.
    """
    root, peak = psutil.Process(child.pid), 0
    while child.poll() is None:
        try:
            rss = tree_rss(root)
        except psutil.NoSuchProcess:
            break
        peak = max(peak, rss)
        if on_sample:
            on_sample(rss)
        time.sleep(every)
    child.wait()
    return peak


def run_sampled(cmd: list[str], every: float, name: str) -> int:
    """Run ``cmd`` (its stdout to our stderr: a benchmark's stdout carries only its table) and
    return its tree's peak resident memory; exit with a message naming ``name`` if it fails."""
    child = subprocess.Popen(cmd, stdout=sys.stderr)
    peak = sample_peak(child, every)
    if child.returncode != 0:
        raise SystemExit(f"{name} failed (exit {child.returncode})")
    return peak


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--every", type=float, default=1.0, help="sampling period in seconds (default: %(default)s)")
    p.add_argument("--json", default=None, help="also write {peak_gib, wall_s, returncode} here")
    p.add_argument("--trace", default=None,
                   help="also write every sample here, as CSV 'elapsed_s,tree_rss_gib,unix_time' (which stage peaked)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("give the command after --")
    started = time.monotonic()
    child = subprocess.Popen(command)
    trace = open(args.trace, "w") if args.trace else None  # noqa: SIM115 (closed below)
    if trace:
        trace.write("elapsed_s,tree_rss_gib,unix_time\n")

    def record(rss: int) -> None:
        trace.write(f"{time.monotonic() - started:.1f},{rss / 2**30:.3f},{time.time():.1f}\n")
        trace.flush()

    peak = sample_peak(child, args.every, record if trace else None)
    if trace:
        trace.close()
    wall = time.monotonic() - started
    summary = {"peak_gib": peak / 2**30, "wall_s": wall, "returncode": child.returncode, "command": command}
    print(f"peak memory of the process tree: {summary['peak_gib']:.2f} GiB; wall {wall:.0f} s; "
          f"exit {child.returncode}", file=sys.stderr)
    if args.json:
        from mucode_env.atomic import write_json_atomic

        write_json_atomic(args.json, summary)
    return child.returncode


if __name__ == "__main__":
    sys.exit(main())
