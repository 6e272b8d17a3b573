"""What Ray costs the sandbox: executions/s locally and through Ray on 1 and 2 nodes, same cores.

The same MBPP reference solutions (public + private tests, one execution per program, result
caches off) run through:

- ``local``: the local Sandbox, one worker per core;
- ``ray-1``: a RaySandbox on a one-node Ray cluster started here, one actor with every core;
- ``ray-2``: a two-node cluster on the same machine, the cores split between the nodes, one
  actor per node.

Every mode has the same number of sandbox workers, so the ratios (from one run) are what Ray
adds. CPU counts this process and every descendant (Ray's daemons and actors, the jails and the
programs they reaped). The overhead per execution is reported two ways: at full load (the
difference in CPU ms and wall ms per execution) and for one job at a time (the latency Ray adds
to a call, median of ``--latency-n``).

    python3 benchmarks/ray_scaling.py --n 300 --json ray_scaling.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from exec_throughput import DEFAULT_DATA_DIR, _tree_cpu_s, load_programs  # noqa: E402

from mucode_env.sandbox import (Job, RaySandbox, RaySandboxConfig, Sandbox, SandboxConfig, SandboxLimits,  # noqa: E402
                                Status)

OBJECT_STORE_BYTES = 100 << 20


def _jobs(programs: list) -> list[Job]:
    return [Job(p.code, p.tests, p.setup, SandboxLimits(per_test_s=p.time_limit_s)) for p in programs]


def _measure(name: str, executor, jobs: list[Job], latency_n: int, warmup: int) -> dict:
    executor.execute(jobs[:warmup])  # workers started, pages faulted in, Ray's workers leased
    cpu0, t0 = _tree_cpu_s([os.getpid()]), time.perf_counter()
    results = executor.execute(jobs)
    wall = time.perf_counter() - t0
    cpu = _tree_cpu_s([os.getpid()]) - cpu0
    latencies = []
    for job in jobs[:latency_n]:  # one call at a time: what a single step waits for
        start = time.perf_counter()
        executor.execute([job])
        latencies.append(1e3 * (time.perf_counter() - start))
    n = len(jobs)
    return {"mode": name, "executions": n, "passed": sum(r.status is Status.PASSED for r in results),
            "sandbox_errors": sum(r.status is Status.SANDBOX_ERROR for r in results),
            "wall_s": round(wall, 3), "exec_per_s": round(n / wall, 2), "wall_ms_per_exec": round(1e3 * wall / n, 2),
            "cpu_ms_per_exec": round(1e3 * cpu / n, 2),
            "latency_ms_median": round(statistics.median(latencies), 2) if latencies else None}


def bench_local(jobs: list[Job], cores: int, tier: str, latency_n: int) -> dict:
    with Sandbox(SandboxConfig(tier=tier, n_workers=cores, cache_size=0)) as sandbox:
        row = _measure("local", sandbox, jobs, latency_n, 2 * cores)
        row["tier"] = sandbox.tier
    return row


def bench_ray(jobs: list[Job], cores: int, tier: str, latency_n: int, nodes: int) -> dict:
    import ray
    from ray.cluster_utils import Cluster

    split = [cores // nodes + (1 if i < cores % nodes else 0) for i in range(nodes)]
    started = time.perf_counter()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": split[0], "include_dashboard": False,
                                                            "object_store_memory": OBJECT_STORE_BYTES})
    for cpus in split[1:]:
        cluster.add_node(num_cpus=cpus, object_store_memory=OBJECT_STORE_BYTES)
    ray.init(address=cluster.address, log_to_driver=False)
    cluster.wait_for_nodes()
    try:
        # one actor per node, each with its node's cores (min: the actors' sizes must fit every node)
        config = RaySandboxConfig(n_actors=nodes, cpus_per_actor=min(split), cache_size=0,
                                  sandbox=SandboxConfig(tier=tier, n_workers=None, cache_size=0))
        with RaySandbox(config) as sandbox:
            startup_s = time.perf_counter() - started
            row = _measure(f"ray-{nodes}", sandbox, jobs, latency_n, 2 * cores)
            row.update(startup_s=round(startup_s, 1), nodes=len({i["node_id"] for i in sandbox.actor_info()}),
                       workers=sandbox.n_workers, tier=sorted({i["tier"] for i in sandbox.actor_info()}),
                       calls=sandbox.stats["calls"])
    finally:
        ray.shutdown()
        cluster.shutdown()
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300, help="number of MBPP programs (default 300)")
    parser.add_argument("--split", default="test", help="MBPP split to draw the programs from (default test)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1,
                        help="sandbox workers in every mode; a two-node cluster splits them (default: all cores)")
    parser.add_argument("--tier", default="auto", help="sandbox tier (default auto: bwrap where it works)")
    parser.add_argument("--modes", default="local,ray-1,ray-2", help="comma-separated: local, ray-1, ray-2")
    parser.add_argument("--latency-n", type=int, default=30, help="jobs timed one at a time (default 30)")
    parser.add_argument("--json", type=Path, help="write the results to this file")
    args = parser.parse_args(argv)
    modes = args.modes.split(",")
    unknown = set(modes) - {"local", "ray-1", "ray-2"}
    if unknown:
        parser.error(f"unknown mode(s) {sorted(unknown)}; choose from local, ray-1, ray-2")
    if "ray-2" in modes and args.cores < 2:
        parser.error("ray-2 splits the cores over two nodes: --cores must be >= 2")
    jobs = _jobs(load_programs(args.n, args.split, args.data_dir))
    rows = []
    for mode in modes:
        if mode == "local":
            rows.append(bench_local(jobs, args.cores, args.tier, args.latency_n))
        else:
            rows.append(bench_ray(jobs, args.cores, args.tier, args.latency_n, nodes=int(mode.split("-")[1])))
    report = {"programs": len(jobs), "split": args.split, "cores": args.cores, "results": rows,
              "overhead": _overhead(rows)}
    print(f"{len(jobs)} MBPP programs ({args.split} split, public + private tests), {args.cores} sandbox workers")
    print(f"  {'mode':8s} {'passed':>9s} {'wall s':>8s} {'exec/s':>8s} {'CPU ms/exec':>12s} {'latency ms':>11s}")
    for row in rows:
        print(f"  {row['mode']:8s} {row['passed']:>4d}/{row['executions']:<4d} {row['wall_s']:8.2f} "
              f"{row['exec_per_s']:8.1f} {row['cpu_ms_per_exec']:12.1f} {row['latency_ms_median'] or 0:11.1f}")
    for mode, extra in report["overhead"].items():
        print(f"  {mode} vs local: {extra['throughput_ratio']:.2f}x throughput, +{extra['cpu_ms_per_exec']:.1f} CPU ms "
              f"and +{extra['wall_ms_per_exec']:.1f} wall ms per execution at full load, "
              f"+{extra['latency_ms']:.1f} ms for one job alone")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


def _overhead(rows: list[dict]) -> dict:
    """Each Ray mode against the local pool, from the same run."""
    local = next((r for r in rows if r["mode"] == "local"), None)
    if local is None:
        return {}
    return {row["mode"]: {
        "throughput_ratio": round(row["exec_per_s"] / local["exec_per_s"], 3),
        "cpu_ms_per_exec": round(row["cpu_ms_per_exec"] - local["cpu_ms_per_exec"], 2),
        "wall_ms_per_exec": round(row["wall_ms_per_exec"] - local["wall_ms_per_exec"], 2),
        "latency_ms": round((row["latency_ms_median"] or 0) - (local["latency_ms_median"] or 0), 2),
    } for row in rows if row is not local}


if __name__ == "__main__":
    sys.exit(main())
