"""The Ray front-end of the sandbox on a local two-node cluster: the local pool's verdicts, in order,
with the cache, backpressure and actor or node deaths that change nothing in the results."""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
import time
from pathlib import Path

import gymnasium as gym
import pytest

import mucode_env
from mucode_env.datasets import load_problems
from mucode_env.errors import SandboxError
from mucode_env.problem_jobs import TEST_SETS, problem_job
from mucode_env.sandbox import Job, RaySandbox, RaySandboxConfig, SandboxConfig, SandboxLimits, Status

_spec = importlib.util.spec_from_file_location("hostile_programs", Path(__file__).with_name("hostile_programs.py"))
hostile = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hostile)
T = hostile.T
OBJECT_STORE = 80 << 20  # bytes per node: jobs and verdicts are small


# ---- without a cluster ----------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, field", [
    ({"n_actors": 0}, "n_actors"), ({"cpus_per_actor": 0}, "cpus_per_actor"), ({"n_actors": True}, "n_actors"),
    ({"max_in_flight_per_actor": 0}, "max_in_flight_per_actor"), ({"cache_size": -1}, "cache_size"),
    ({"max_actor_failures": 0}, "max_actor_failures"), ({"start_timeout_s": 0}, "start_timeout_s"),
    ({"sandbox": {"tier": "bwrap"}}, "sandbox"), ({"ray_options": {"num_cpus": 4}}, "num_cpus"),
])
def test_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        RaySandboxConfig(**kwargs)


def test_config_defaults_follow_the_cpus_given():
    config = RaySandboxConfig(n_actors=3, cpus_per_actor=4)
    assert (config.workers_per_actor, config.in_flight_per_actor) == (4, 5)
    assert RaySandboxConfig(cpus_per_actor=32).in_flight_per_actor == 40
    pinned = RaySandboxConfig(cpus_per_actor=4, sandbox=SandboxConfig(n_workers=2), max_in_flight_per_actor=3)
    assert (pinned.workers_per_actor, pinned.in_flight_per_actor) == (2, 3)


def test_without_ray_the_error_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ImportError, match=r"mucode\[ray\]"):
        RaySandbox(RaySandboxConfig())


# ---- a two-node cluster on this machine -------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")  # a failure under CI=true (tests/conftest.py)
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    # Two logical CPUs per node: the shared pool below takes one on each, the rest is for the
    # short-lived sandboxes of single tests.
    head = {"num_cpus": 2, "object_store_memory": OBJECT_STORE, "include_dashboard": False}
    nodes = Cluster(initialize_head=True, head_node_args=head)
    nodes.add_node(num_cpus=2, object_store_memory=OBJECT_STORE)
    ray.init(address=nodes.address, log_to_driver=False)
    nodes.wait_for_nodes()
    yield nodes
    ray.shutdown()
    nodes.shutdown()


@pytest.fixture(scope="module")
def rsb(cluster):
    with RaySandbox(RaySandboxConfig(n_actors=2, cpus_per_actor=1)) as sandbox:
        yield sandbox


@pytest.fixture(scope="module")
def mbpp(data_dir):
    return load_problems("mbpp", "test", data_dir=data_dir)[:30]


def problem_jobs(problem, code):
    return [problem_job(problem, code, which) for which in TEST_SETS]


def sleeper_jobs(n, sleep_s, tag):
    """Distinct jobs (no two alike) whose returned value names the job: i, except every third."""
    return [Job(f"import time\ndef f():\n    time.sleep({sleep_s})\n    return {i}\n# {tag}\n",
                (T("f()", str(i if i % 3 else -1)),), limits=SandboxLimits(per_test_s=5.0)) for i in range(n)]


def assert_each_result_is_its_own(results, n):
    assert len(results) == n
    for i, result in enumerate(results):
        assert result.status is (Status.PASSED if i % 3 else Status.WRONG_ANSWER), (i, result)
        assert result.tests[0].got == str(i)


@pytest.mark.slow
def test_actors_spread_over_both_nodes(rsb, cluster):
    info = rsb.actor_info()
    assert len(info) == 2 and len({i["node_id"] for i in info}) == 2
    assert {i["n_workers"] for i in info} == {1} and rsb.n_workers == 2


@pytest.mark.slow
def test_mbpp_verdicts_match_the_local_pool(rsb, sandbox, mbpp):
    jobs = []
    for problem in mbpp:
        jobs += problem_jobs(problem, problem.reference_solution)
        jobs += problem_jobs(problem, problem.reference_solution + "\n\ndef _broken():\n    pass\nNone.x\n")
    local = sandbox.execute(jobs)
    remote = rsb.execute(jobs)
    assert remote == local  # status, per-test outcomes, output, messages (timings are not compared)
    statuses = {r.status for r in remote}
    assert Status.PASSED in statuses and Status.RUNTIME_ERROR in statuses


@pytest.mark.slow
def test_hostile_programs_get_the_same_statuses_through_ray(rsb, sandbox):
    from mucode_env.sandbox.pool import starved

    programs = {name: (code, tests, limits, status) for name, (code, tests, limits, status, _) in hostile.CASES.items()}
    programs.update({f"control_{name}": (code, tests, SandboxLimits(per_test_s=5.0), Status.PASSED)
                     for name, (code, tests) in hostile.CONTROLS.items() if "helper(" not in code})
    jobs = [Job(code, tuple(tests), limits=limits) for code, tests, limits, _ in programs.values()]
    local = sandbox.execute(jobs)
    remote = rsb.execute(jobs)

    def verdict(result):
        return result.status, tuple(t.status for t in result.tests)

    # A program that hits a limit near its deadline can time out instead on a loaded machine; the
    # pool marks such timeouts (the child waited for a CPU) and only those may differ.
    differ = {name: (verdict(a), verdict(b)) for name, a, b in zip(programs, local, remote)
              if verdict(a) != verdict(b) and not any(r.status is Status.TIMEOUT and starved(r) for r in (a, b))}
    assert differ == {}
    if sandbox.tier == "bwrap" and {i["tier"] for i in rsb.actor_info()} == {"bwrap"}:
        wrong = {name: (r.status, expected) for (name, (*_, expected)), r in zip(programs.items(), remote)
                 if r.status is not expected and not (r.status is Status.TIMEOUT and starved(r))}
        assert wrong == {}
    assert [t for t in hostile.HOST_TARGETS if os.path.lexists(t)] == []


@pytest.mark.slow
def test_envs_step_the_same_trajectories_through_ray(rsb, sandbox, mbpp):
    problems = mbpp[:8]

    def scripted(obs):  # a wrong program first on odd problems, then the reference solution
        problem = next(p for p in problems if p.id == obs["problem_id"])
        wrong = obs["turn"] == 0 and int(problem.id.split("/")[-1]) % 2
        code = "def nothing():\n    return None" if wrong else problem.reference_solution
        return f"Here it is.\n```python\n{code}\n# scripted\n```"  # not run by the tests above

    def trajectories(executor):
        envs = [gym.make("MuCode-MBPP-v0", problems=problems, max_turns=2, sandbox=executor) for _ in range(6)]
        observations = [env.reset(seed=seed)[0] for seed, env in enumerate(envs)]
        steps, live = [], list(range(len(envs)))
        while live:
            out = mucode_env.step_batch([envs[i] for i in live], [scripted(observations[i]) for i in live])
            for i, (obs, reward, terminated, truncated, info) in zip(live, out):
                observations[i] = obs
                steps.append((i, obs, reward, terminated, truncated, info))
            live = [i for i, (*_, terminated, truncated, _) in zip(live, out) if not (terminated or truncated)]
        return steps

    local, remote = trajectories(sandbox), trajectories(rsb)
    assert remote == local  # observations, rewards, flags, info with its ExecResults
    assert {reward for _, _, reward, *_ in remote} == {0.0, 1.0}


@pytest.mark.slow
def test_identical_jobs_run_once_and_the_cache_serves_every_actor(rsb):
    jobs = sleeper_jobs(6, 0.0, "cache")
    before = dict(rsb.stats)
    first = rsb.execute(jobs + jobs[:3])
    assert_each_result_is_its_own(first[:6], 6)
    assert first[6:] == first[:3] and all(r.cache_hit for r in first[6:])
    assert rsb.stats["executions"] - before["executions"] == 6
    calls = rsb.stats["calls"]
    again = rsb.execute(list(reversed(jobs)))
    assert all(r.cache_hit for r in again) and again == list(reversed(first[:6]))
    assert rsb.stats["calls"] == calls and rsb.stats["executions"] - before["executions"] == 6


@pytest.mark.slow
def test_in_flight_work_per_actor_is_bounded(cluster):
    ray = pytest.importorskip("ray")  # a failure under CI=true (tests/conftest.py)
    config = RaySandboxConfig(n_actors=1, cpus_per_actor=1, max_in_flight_per_actor=2, cache_size=0,
                              sandbox=SandboxConfig(tier="process", preload=()))
    with RaySandbox(config) as sb:
        results = sb.execute(sleeper_jobs(8, 0.1, "bounded"))
        assert_each_result_is_its_own(results, 8)
        assert sb.stats["calls"] == 8  # one job per call: the actor has one worker
        load = ray.get(sb.actors[0].load.remote())
        assert load == {"held": 0, "peak_held": 2}  # the actor never held more than the bound


@pytest.mark.slow
def test_an_actor_killed_mid_batch_changes_nothing(rsb):
    import psutil

    ray = pytest.importorskip("ray")  # a failure under CI=true (tests/conftest.py)
    jobs = sleeper_jobs(16, 0.3, "kill")
    victim = rsb.actors[0]
    victim_pid = next(i["pid"] for i in rsb.actor_info())
    zygotes = psutil.Process(victim_pid).children(recursive=True)
    before = dict(rsb.stats)
    out: list = []
    runner = threading.Thread(target=lambda: out.append(rsb.execute(jobs)))
    runner.start()
    deadline = time.monotonic() + 60
    while rsb.stats["calls"] - before["calls"] < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    ray.kill(victim, no_restart=True)  # the actor holds unanswered jobs now: 2 in flight, 12 queued
    runner.join(timeout=120)
    assert out, "execute did not return"
    assert_each_result_is_its_own(out[0], 16)
    assert rsb.stats["actor_failures"] - before["actor_failures"] == 1
    assert rsb.stats["resubmitted"] - before["resubmitted"] >= 1
    assert rsb.stats["executions"] - before["executions"] >= 16
    assert victim not in rsb.actors and len(rsb.actors) == 2
    assert psutil.wait_procs(zygotes, timeout=30)[1] == []  # its jailed workers died with it
    assert_each_result_is_its_own(rsb.execute(sleeper_jobs(4, 0.0, "after-kill")), 4)


@pytest.mark.slow
def test_a_sandbox_error_inside_an_actor_is_reported_not_cached(cluster, mbpp):
    ray = pytest.importorskip("ray")  # a failure under CI=true (tests/conftest.py)
    config = RaySandboxConfig(n_actors=1, cpus_per_actor=1, sandbox=SandboxConfig(tier="process", preload=()))
    dies = "import sys\nsys.exit(3)\n"  # a worker that cannot start: the pool's own retry fails too

    def break_workers(actor_self, argv):
        worker = actor_self.sandbox._workers[0]
        original = list(worker.spec.argv)
        worker.spec.argv[:] = argv or worker.spec.argv
        worker.kill()
        return original

    with RaySandbox(config) as sb:
        actor = sb.actors[0]
        original = ray.get(actor.__ray_call__.remote(break_workers, [sys.executable, "-c", dies]))
        env = gym.make("MuCode-MBPP-v0", problems=mbpp[:1], sandbox=sb)
        env.reset(options={"problem_id": mbpp[0].id})
        with pytest.raises(SandboxError, match="sandbox failed"):
            env.step(f"```python\n{mbpp[0].reference_solution}\n```")
        job = sleeper_jobs(2, 0.0, "infra")[1]
        assert sb.execute([job])[0].status is Status.SANDBOX_ERROR
        assert sb.stats["actor_failures"] == 0  # the actor lives: only its worker failed
        ray.get(actor.__ray_call__.remote(break_workers, original))
        healed = sb.execute([job])[0]
        assert healed.status is Status.PASSED and not healed.cache_hit


@pytest.mark.slow
def test_unplaceable_actors_fail_with_a_message_and_close_ends_the_actors(cluster):
    import psutil

    with pytest.raises(SandboxError, match="not started within"):
        RaySandbox(RaySandboxConfig(ray_options={"resources": {"no_such_node": 1}}, start_timeout_s=2))
    sb = RaySandbox(RaySandboxConfig(n_actors=1, sandbox=SandboxConfig(tier="process", preload=())))
    actor_process = psutil.Process(sb.actor_info()[0]["pid"])
    sb.close()
    sb.close()
    assert psutil.wait_procs([actor_process], timeout=30)[1] == []
    with pytest.raises(SandboxError, match="closed"):
        sb.execute(sleeper_jobs(1, 0.0, "closed"))


@pytest.mark.slow
def test_an_actor_whose_pool_cannot_start_is_reported_at_once(cluster, monkeypatch):
    # a configuration error (the actor's pool cannot be built, e.g. no bubblewrap on that node for
    # the jail tier) is not a death to retry until max_actor_failures: construction fails, naming it
    ray = pytest.importorskip("ray")  # a failure under CI=true (tests/conftest.py)
    from mucode_env.sandbox import ray_pool

    class NoJail(ray_pool.SandboxActor):
        def __init__(self, config):
            raise FileNotFoundError("bwrap (bubblewrap) is not installed: apt-get install bubblewrap")

    monkeypatch.setattr(ray_pool, "_remote_actor_class", lambda: ray.remote(NoJail))
    started = time.monotonic()
    with pytest.raises(SandboxError, match=r"(?s)failed to start \(its constructor raised\).*bubblewrap"):
        RaySandbox(RaySandboxConfig(n_actors=1, cpus_per_actor=1, start_timeout_s=120,
                                    sandbox=SandboxConfig(tier="process", preload=())))
    assert time.monotonic() - started < 60


@pytest.mark.slow
def test_a_node_that_dies_mid_batch_changes_nothing(cluster):
    # A spot node holds the only actor; it dies mid-batch and a new node (what an autoscaler does)
    # takes the replacement, which re-runs the unanswered jobs.
    spot = cluster.add_node(num_cpus=1, resources={"spot": 1}, object_store_memory=OBJECT_STORE)
    cluster.wait_for_nodes()
    config = RaySandboxConfig(n_actors=1, cpus_per_actor=1, cache_size=0, ray_options={"resources": {"spot": 1}},
                              sandbox=SandboxConfig(tier="process", preload=()))
    with RaySandbox(config) as sb:
        first_node = sb.actor_info()[0]["node_id"]
        out: list = []
        runner = threading.Thread(target=lambda: out.append(sb.execute(sleeper_jobs(8, 0.3, "node"))))
        runner.start()
        deadline = time.monotonic() + 60
        while sb.stats["calls"] < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        cluster.remove_node(spot, allow_graceful=False)
        cluster.add_node(num_cpus=1, resources={"spot": 1}, object_store_memory=OBJECT_STORE)
        runner.join(timeout=180)
        assert out, "execute did not return"
        assert_each_result_is_its_own(out[0], 8)
        assert sb.stats["actor_failures"] >= 1 and sb.stats["resubmitted"] >= 1
        assert sb.actor_info()[0]["node_id"] != first_node
