"""Where the sandbox's CPU per execution goes: host, zygotes, children, and their page faults.

Runs the MBPP reference solutions (without MBPP/123, whose solution alone needs ~2.5 s) through
a bwrap Sandbox with the cache off, like ``exec_throughput.py``, ``--repeat`` times, and reports
per execution: CPU of this process (judging, protocol, threads), of the long-lived jail
processes (zygotes), of their reaped children (fork child side, the program, exit), and the
minor page faults of the zygotes and of the children. A fork makes every page of the zygote
copy-on-write, so page faults are the best proxy for the CPU a change saves, and unlike CPU
time they hardly depend on what else runs on the machine.

    python3 benchmarks/sandbox_cpu_breakdown.py --repeat 5

It also measures this machine's fork floor: the CPU of a bare ``fork`` + ``_exit`` of a Python
that imported what the zygote imports (parent and child together, no jail, nothing run). No
sandbox can execute a program for less, so the floor is what to read a per-execution cost
against when machines differ (page faults and page-table copies cost more under some VMs).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.exec_throughput import DEFAULT_DATA_DIR, load_programs  # noqa: E402
from mucode_env.sandbox import Job, Sandbox, SandboxConfig, SandboxLimits  # noqa: E402


def _jail_counters(pids: list[int]) -> dict[str, float]:
    """CPU seconds and minor faults of the jail processes (self) and of their reaped children."""
    import psutil

    totals = {"jail_cpu": 0.0, "children_cpu": 0.0, "jail_faults": 0.0, "children_faults": 0.0}
    for pid in pids:
        try:
            procs = [psutil.Process(pid)] + psutil.Process(pid).children(recursive=True)
        except psutil.NoSuchProcess:
            continue
        for proc in procs:
            try:
                times = proc.cpu_times()
                with open(f"/proc/{proc.pid}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except (psutil.NoSuchProcess, OSError):
                continue
            totals["jail_cpu"] += times.user + times.system
            totals["children_cpu"] += times.children_user + times.children_system
            totals["jail_faults"] += int(fields[7])  # minflt
            totals["children_faults"] += int(fields[8])  # cminflt
    return totals


def _host_cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


# Run in a fresh ``python -s -S`` (like the zygote): load zygote.py as a module, import what it
# preloads, then fork children that exit at once; print the CPU ms (parent + children) per fork.
_FLOOR = """
import importlib.util, os, resource, sys
spec = importlib.util.spec_from_file_location("zygote", sys.argv[1])
zygote = importlib.util.module_from_spec(spec)
spec.loader.exec_module(zygote)
zygote._import_random_without_fork_hook()
zygote._import_all(zygote.PRELOAD)
def cpu():
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
def forks(n):
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
forks(20)  # warm-up
n, start = int(sys.argv[2]), cpu()
forks(n)
print(1e3 * (cpu() - start) / n)
"""


def fork_floor_ms(forks: int = 2000) -> float:
    """CPU milliseconds of one bare fork + exit of a zygote-sized Python (see the module doc)."""
    import subprocess

    zygote = REPO / "mucode_env" / "sandbox" / "zygote.py"
    out = subprocess.run([sys.executable, "-s", "-S", "-c", _FLOOR, str(zygote), str(forks)],
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500, help="MBPP programs before removing MBPP/123 (default 500)")
    parser.add_argument("--repeat", type=int, default=3, help="measured passes; medians are reported (default 3)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--floor-forks", type=int, default=2000, help="forks timed for the fork floor (0: skip)")
    args = parser.parse_args(argv)
    programs = [p for p in load_programs(args.n, "test", args.data_dir) if p.id != "MBPP/123"]
    jobs = [Job(p.code, p.tests, p.setup, SandboxLimits(per_test_s=p.time_limit_s)) for p in programs]
    rows = []
    with Sandbox(SandboxConfig(tier="bwrap", n_workers=args.workers, cache_size=0)) as sandbox:
        sandbox.execute(jobs[: 4 * args.workers])  # warm-up
        pids = sandbox.worker_pids()
        for _ in range(args.repeat):
            jail0, host0 = _jail_counters(pids), _host_cpu()
            sandbox.execute(jobs)
            host, jail = _host_cpu() - host0, _jail_counters(pids)
            n = len(jobs)
            row = {"host_ms": 1e3 * host / n}
            row.update({k.replace("_cpu", "_ms"): 1e3 * (jail[k] - jail0[k]) / n for k in ("jail_cpu", "children_cpu")})
            row.update({k: (jail[k] - jail0[k]) / n for k in ("jail_faults", "children_faults")})
            row["total_ms"] = row["host_ms"] + row["jail_ms"] + row["children_ms"]
            rows.append(row)
            if sandbox.worker_pids() != pids:
                raise SystemExit("a worker restarted during the measurement")
    print(f"{len(jobs)} MBPP programs, {args.workers} workers, medians of {args.repeat} passes, per execution:")
    for key in ("total_ms", "host_ms", "jail_ms", "children_ms", "jail_faults", "children_faults"):
        values = [row[key] for row in rows]
        print(f"  {key:16s} {statistics.median(values):8.3f}   (min {min(values):.3f}, max {max(values):.3f})")
    if args.floor_forks:
        floors = [fork_floor_ms(args.floor_forks) for _ in range(args.repeat)]
        print(f"fork floor (bare fork + exit of a zygote-sized Python, median of {args.repeat}): "
              f"{statistics.median(floors):.3f} ms (min {min(floors):.3f}, max {max(floors):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
