"""What Ray costs and gives: sandbox executions/s and episodes/min, locally and through Ray on 1 and
2 nodes, on the same cores.

Section ``exec`` (the distributed sandbox): the same MBPP reference solutions (public + private
tests, one execution per program, result caches off) run through:

- ``local``: the local Sandbox, one worker per core;
- ``ray-1``: a RaySandbox on a one-node Ray cluster started here, one actor with every core;
- ``ray-2``: a two-node cluster on the same machine, the cores split between the nodes, one
  actor per node.

Every mode has the same number of sandbox workers, so the ratios (from one run) are what Ray
adds. CPU counts this process and every descendant (Ray's daemons and actors, the jails and the
programs they reaped). The overhead per execution is reported two ways: at full load (the
difference in CPU ms and wall ms per execution) and for one job at a time (the latency Ray adds
to a call, median of ``--latency-n``).

Section ``episodes`` (distributed episodes, :mod:`agents.ray_episodes`): the same rollouts
(``--episodes-problems`` MBPP problems x ``--episodes-n`` samples, T = ``--turns``) are played by

- ``local``: one process, the policy with every core (llama.cpp threads) and a local sandbox
  with one worker per core;
- ``ray-1``: one episode actor per core on a one-node cluster, each with its own policy replica
  (one thread) and a one-worker sandbox;
- ``ray-2``: the same actors on a two-node cluster, the cores split between the nodes.

The policy is ``scripted`` (a seeded scripted policy that burns ``--gen-ms`` of CPU per
generation, a stand-in for a model that scales with processes) or ``llama_cpp`` (``--model``, an
embedded GGUF). Episodes/min is reported for the playing alone and with the actors' start-up
(policy replicas loaded), and every mode must give the same trajectories (the per-episode seeds).

    python3 benchmarks/ray_scaling.py --n 300 --json ray_scaling.json
    python3 benchmarks/ray_scaling.py --sections episodes --policy llama_cpp --episodes-problems 40
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
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


@contextlib.contextmanager
def _cluster(cores: int, nodes: int):
    """A Ray cluster of ``nodes`` nodes on this machine sharing ``cores`` CPUs; yields the split."""
    import ray
    from ray.cluster_utils import Cluster

    split = [cores // nodes + (1 if i < cores % nodes else 0) for i in range(nodes)]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": split[0], "include_dashboard": False,
                                                            "object_store_memory": OBJECT_STORE_BYTES})
    try:
        for cpus in split[1:]:
            cluster.add_node(num_cpus=cpus, object_store_memory=OBJECT_STORE_BYTES)
        ray.init(address=cluster.address, log_to_driver=False)
        cluster.wait_for_nodes()
        yield split
    finally:
        ray.shutdown()
        cluster.shutdown()


def bench_ray(jobs: list[Job], cores: int, tier: str, latency_n: int, nodes: int) -> dict:
    started = time.perf_counter()
    with _cluster(cores, nodes) as split:
        # one actor per node, each with its node's cores (min: the actors' sizes must fit every node)
        config = RaySandboxConfig(n_actors=nodes, cpus_per_actor=min(split), cache_size=0,
                                  sandbox=SandboxConfig(tier=tier, n_workers=None, cache_size=0))
        with RaySandbox(config) as sandbox:
            startup_s = time.perf_counter() - started
            row = _measure(f"ray-{nodes}", sandbox, jobs, latency_n, 2 * cores)
            row.update(startup_s=round(startup_s, 1), nodes=len({i["node_id"] for i in sandbox.actor_info()}),
                       workers=sandbox.n_workers, tier=sorted({i["tier"] for i in sandbox.actor_info()}),
                       calls=sandbox.stats["calls"])
    return row


# ---- episodes ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EpisodeBench:
    """What every mode of the episodes section plays."""

    problems: int
    n: int
    turns: int
    policy: str  # "scripted" | "llama_cpp"
    model: str
    gen_ms: float
    max_new_tokens: int
    data_dir: Path
    tier: str


def _rollout_config(bench: EpisodeBench, ray=None, sandbox=None):
    from agents.policy import SamplingParams
    from agents.rollout import RolloutConfig

    env_kwargs = {"data_dir": str(bench.data_dir)}
    if sandbox is not None:
        env_kwargs["sandbox"] = sandbox
    return RolloutConfig(env_id="MuCode-MBPP-v0", split="test", limit=bench.problems, n=bench.n,
                         sampling=SamplingParams(temperature=0.7, max_new_tokens=bench.max_new_tokens),
                         max_turns=bench.turns, seed=0, env_kwargs=env_kwargs, progress=False, ray=ray)


def _episode_policy(bench: EpisodeBench, threads: int | None):
    """The policy every mode plays: a picklable object (scripted) or a recipe (llama.cpp)."""
    from agents.backends import PolicySpec
    from agents.scripted import SeededScriptedPolicy
    from mucode_env.datasets import load_problems

    if bench.policy == "scripted":
        problems = load_problems("mbpp", "test", data_dir=bench.data_dir)[: bench.problems]
        return SeededScriptedPolicy(problems, cpu_s_per_generation=bench.gen_ms / 1e3)
    kwargs = {"n_ctx": 4096, **({"n_threads": threads} if threads else {})}
    return PolicySpec("llama_cpp", bench.model, kwargs)


def _episode_row(mode: str, result, wall_s: float, startup_s: float) -> dict:
    stats = result.stats
    trajs = result.trajectories
    digest = hashlib.sha256(json.dumps([[t.problem_id, t.sample_index, [u.response for u in t.turns]]
                                        for t in trajs]).encode()).hexdigest()[:16]
    return {"mode": mode, "episodes": stats.episodes, "solved": sum(t.success for t in trajs),
            "play_s": round(stats.wall_s, 2), "wall_s": round(wall_s, 2), "startup_s": round(startup_s, 2),
            "episodes_per_min": round(60 * stats.episodes / stats.wall_s, 1) if stats.wall_s else None,
            "episodes_per_min_with_startup": round(60 * stats.episodes / wall_s, 1) if wall_s else None,
            "generations": stats.generations, "executions": stats.executions, "digest": digest}


def bench_episodes_local(bench: EpisodeBench, cores: int) -> dict:
    from agents.backends import PolicySpec
    from agents.rollout import run_rollouts

    started = time.perf_counter()
    policy = _episode_policy(bench, threads=cores)
    if isinstance(policy, PolicySpec):
        policy = policy.build()
    with Sandbox(SandboxConfig(tier=bench.tier, n_workers=cores)) as sandbox:
        startup_s = time.perf_counter() - started
        result = run_rollouts(policy, _rollout_config(bench, sandbox=sandbox))
    return _episode_row("local", result, time.perf_counter() - started, startup_s)


def bench_episodes_ray(bench: EpisodeBench, cores: int, nodes: int) -> dict:
    from agents.ray_episodes import RayEpisodesConfig
    from agents.rollout import run_rollouts

    with _cluster(cores, nodes):
        config = RayEpisodesConfig(n_actors=cores, cpus_per_actor=1, chunk_size=2,
                                   sandbox=SandboxConfig(tier=bench.tier, n_workers=1))
        started = time.perf_counter()
        result = run_rollouts(_episode_policy(bench, threads=None), _rollout_config(bench, ray=config))
        wall = time.perf_counter() - started
    return _episode_row(f"ray-{nodes}", result, wall, wall - result.stats.wall_s)


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
    parser.add_argument("--sections", default="exec,episodes", help="comma-separated: exec, episodes")
    episodes = parser.add_argument_group("episodes section")
    episodes.add_argument("--episodes-problems", type=int, default=20, help="MBPP test problems (default 20)")
    episodes.add_argument("--episodes-n", type=int, default=4, help="samples per problem (default 4)")
    episodes.add_argument("--turns", type=int, default=3, help="turn limit T (default 3)")
    episodes.add_argument("--policy", default="scripted", choices=("scripted", "llama_cpp"),
                          help="scripted (CPU-burning stand-in) or llama_cpp (default scripted)")
    episodes.add_argument("--gen-ms", type=float, default=50.0,
                          help="CPU ms per generation of the scripted policy (default 50)")
    episodes.add_argument("--model", default="smollm2-135m", help="llama_cpp model (default smollm2-135m)")
    episodes.add_argument("--max-new-tokens", type=int, default=256, help="llama_cpp tokens per turn (default 256)")
    args = parser.parse_args(argv)
    modes = args.modes.split(",")
    sections = args.sections.split(",")
    unknown = set(modes) - {"local", "ray-1", "ray-2"}
    if unknown:
        parser.error(f"unknown mode(s) {sorted(unknown)}; choose from local, ray-1, ray-2")
    if set(sections) - {"exec", "episodes"}:
        parser.error(f"unknown section(s) {sorted(set(sections) - {'exec', 'episodes'})}; choose from exec, episodes")
    if "ray-2" in modes and args.cores < 2:
        parser.error("ray-2 splits the cores over two nodes: --cores must be >= 2")
    report: dict = {"cores": args.cores}
    if "exec" in sections:
        report["exec"] = _exec_section(args, modes)
    if "episodes" in sections:
        bench = EpisodeBench(args.episodes_problems, args.episodes_n, args.turns, args.policy, args.model,
                             args.gen_ms, args.max_new_tokens, args.data_dir, args.tier)
        report["episodes"] = _episodes_section(bench, args.cores, modes)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


def _exec_section(args: argparse.Namespace, modes: list[str]) -> dict:
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
    return report


def _episodes_section(bench: EpisodeBench, cores: int, modes: list[str]) -> dict:
    rows = []
    for mode in modes:
        if mode == "local":
            rows.append(bench_episodes_local(bench, cores))
        else:
            rows.append(bench_episodes_ray(bench, cores, nodes=int(mode.split("-")[1])))
    local = next((r for r in rows if r["mode"] == "local"), None)
    ratios = {row["mode"]: round(row["episodes_per_min"] / local["episodes_per_min"], 3)
              for row in rows if local is not None and row is not local and local["episodes_per_min"]}
    same = len({row["digest"] for row in rows}) == 1
    what = (f"scripted policy, {bench.gen_ms:g} CPU ms per generation" if bench.policy == "scripted"
            else f"llama.cpp {bench.model}, {bench.max_new_tokens} tokens per turn")
    print(f"{bench.problems} MBPP problems x {bench.n} samples, T={bench.turns}, {what}, {cores} cores")
    print(f"  {'mode':8s} {'episodes':>8s} {'solved':>7s} {'play s':>8s} {'start s':>8s} {'ep/min':>9s} "
          f"{'ep/min incl. start':>19s}")
    for row in rows:
        print(f"  {row['mode']:8s} {row['episodes']:8d} {row['solved']:7d} {row['play_s']:8.2f} {row['startup_s']:8.2f} "
              f"{row['episodes_per_min'] or 0:9.1f} {row['episodes_per_min_with_startup'] or 0:19.1f}")
    for mode, ratio in ratios.items():
        print(f"  {mode} vs local: {ratio:.2f}x episodes/min")
    print(f"  same trajectories in every mode: {same}")
    return {"problems": bench.problems, "n": bench.n, "turns": bench.turns, "policy": what, "cores": cores,
            "results": rows, "ratio_vs_local": ratios, "same_trajectories": same}


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
