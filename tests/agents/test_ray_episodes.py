"""Episodes on Ray actors (agents.ray_episodes) on a local two-node cluster: the same trajectories
and metrics as the local path for rollouts, evaluation and Best-of-N; an actor killed mid-run
changes nothing; a driver killed mid-run resumes from its shards with nothing lost or duplicated."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest

from agents.backends.spec import PolicySpec
from agents.episodes import EpisodeSpec, derive_seed, play_episodes
from agents.policy import SamplingParams
from agents.ray_episodes import RayEpisodes, RayEpisodesConfig, RayEpisodesError, _build_policy
from agents.rollout import RolloutConfig
from agents.scripted import SeededScriptedPolicy
from mucode_env.sandbox import RaySandboxConfig, SandboxConfig

REPO = Path(__file__).resolve().parents[2]
IDS = ("MBPP/11", "MBPP/12", "MBPP/13", "MBPP/14", "MBPP/15", "MBPP/16")
OBJECT_STORE = 80 << 20  # bytes per node: episodes and trajectories are small


# ---- without a cluster ----------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, field", [
    ({"n_actors": 0}, "n_actors"), ({"cpus_per_actor": 0}, "cpus_per_actor"), ({"chunk_size": 0}, "chunk_size"),
    ({"chunks_per_actor": True}, "chunks_per_actor"), ({"max_actor_failures": 0}, "max_actor_failures"),
    ({"gpus_per_actor": -1}, "gpus_per_actor"), ({"start_timeout_s": 0}, "start_timeout_s"),
    ({"endpoints": ["localhost:8000"]}, "endpoints"), ({"endpoints": []}, "endpoints"),
    ({"sandbox": 3}, "sandbox"), ({"ray_options": {"num_cpus": 2}}, "num_cpus"),
])
def test_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        RayEpisodesConfig(**kwargs)


def test_config_reads_what_asdict_wrote_and_binds_actors_to_endpoints():
    from dataclasses import asdict

    config = RayEpisodesConfig(n_actors=3, endpoints="http://a:8000/v1, http://b:8000/v1",
                               sandbox=SandboxConfig(n_workers=2, tier="process"))
    assert config.endpoints == ("http://a:8000/v1", "http://b:8000/v1")
    assert [config.endpoint(k) for k in range(3)] == ["http://a:8000/v1", "http://b:8000/v1", "http://a:8000/v1"]
    assert RayEpisodesConfig.from_dict(asdict(config)) == config
    assert RayEpisodesConfig(cpus_per_actor=3).sandbox_for_actor == SandboxConfig(n_workers=3)
    assert isinstance(RayEpisodesConfig(sandbox=RaySandboxConfig(n_actors=2)).sandbox_for_actor, RaySandboxConfig)
    with pytest.raises(ValueError, match="unknown"):
        RayEpisodesConfig.from_dict({"actors": 2})
    # the rollout and BoN configurations take it as a dict too (config files), and refuse a driver-side sandbox
    from agents.bon import BoNConfig

    assert RolloutConfig(ray={"n_actors": 2}).ray == RayEpisodesConfig(n_actors=2)
    assert BoNConfig(ray={"chunk_size": 2}).ray == RayEpisodesConfig(chunk_size=2)
    with pytest.raises(ValueError, match="sandbox"):
        RolloutConfig(ray=RayEpisodesConfig(), env_kwargs={"sandbox": object()})


def test_each_actor_builds_its_replica_from_the_spec():
    spec = PolicySpec("openai", "served", {"base_url": "http://127.0.0.1:9/v1", "max_retries": 0})
    bound = _build_policy(spec, "http://10.0.0.7:8000/v1", cpus=4)
    assert bound.base_url == "http://10.0.0.7:8000/v1" and bound.name == "openai:served"
    assert _build_policy(spec, None, cpus=4).base_url == "http://127.0.0.1:9/v1"
    scripted = SeededScriptedPolicy([])
    assert _build_policy(scripted, "http://10.0.0.7:8000/v1", cpus=4) is scripted  # objects travel as they are
    with pytest.raises(ValueError, match="backend"):
        PolicySpec("vllm-ish", "m")


def test_without_ray_the_error_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ImportError, match=r"mucode\[ray\]"):
        RayEpisodes(RayEpisodesConfig(), SeededScriptedPolicy([]))


# ---- a two-node cluster on this machine -------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")  # a failure under CI=true (tests/conftest.py)
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    head = {"num_cpus": 2, "object_store_memory": OBJECT_STORE, "include_dashboard": False}
    nodes = Cluster(initialize_head=True, head_node_args=head)
    nodes.add_node(num_cpus=2, object_store_memory=OBJECT_STORE)
    ray.init(address=nodes.address, log_to_driver=False)
    nodes.wait_for_nodes()
    # functions defined here (the verifier stand-in) travel by value: the workers cannot import tests
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield nodes
    ray.shutdown()
    nodes.shutdown()


@pytest.fixture(scope="module")
def problems(data_dir):
    from mucode_env.datasets import load_problems

    by_id = {p.id: p for p in load_problems("mbpp", "test", data_dir=str(data_dir))}
    return [by_id[i] for i in IDS]


# two actors, one per node, one CPU each (one sandbox worker); chunks of two episodes
SPREAD = RayEpisodesConfig(n_actors=2, cpus_per_actor=1, chunk_size=2, chunks_per_actor=2)


def rollout_config(data_dir, **kw) -> RolloutConfig:
    return RolloutConfig(env_id="MuCode-MBPP-v0", split="test", problem_ids=IDS, n=2, seed=5, max_turns=3,
                         sampling=SamplingParams(temperature=0.7, max_new_tokens=64), max_live_episodes=5,
                         progress=False, env_kwargs={"data_dir": str(data_dir)}, **kw)


def score(prompts, responses):
    """A deterministic stand-in for the verifier (travels to the actors by value)."""
    return [float(derive_seed(p[:40], r) % 1000) / 1000 for p, r in zip(prompts, responses)]


@pytest.mark.slow
def test_evaluation_on_ray_matches_the_local_path(cluster, problems, data_dir, tmp_path):
    from agents.evaluate import evaluate
    from agents.rollout import load_trajectories

    policy = SeededScriptedPolicy(problems)
    local = evaluate(policy, rollout_config(data_dir), tmp_path / "local")
    remote = evaluate(policy, rollout_config(data_dir, ray=SPREAD), tmp_path / "ray")
    assert load_trajectories(tmp_path / "ray") == load_trajectories(tmp_path / "local")
    for name in ("accuracy_by_turn", "public_pass_by_turn", "solved_at_turn", "pass_at_k", "per_problem",
                 "mean_turns", "turns_to_solve", "policy_name"):
        assert getattr(remote, name) == getattr(local, name), name
    assert 0 < local.accuracy_by_turn[0] < local.accuracy_by_turn[-1]  # failures, feedback and fixes happened
    counts = ("episodes", "generations", "executions", "prompt_tokens", "completion_tokens")
    assert [remote.stats[k] for k in counts] == [local.stats[k] for k in counts]
    assert remote.stats["generation_calls"] > local.stats["generation_calls"]  # it did play in chunks


@pytest.mark.slow
@pytest.mark.parametrize("selector", ["pt", "pt+lv", "lv"])
def test_best_of_n_on_ray_matches_the_local_path(cluster, problems, data_dir, selector):
    from agents.bon import BoNConfig, best_of_n

    config = BoNConfig(n=3, selector=selector, max_turns=3, seed=3, repeats=2, progress=False)
    kwargs = dict(verifier=score, problem_ids=IDS, split="test", data_dir=str(data_dir))
    policy = SeededScriptedPolicy(problems)
    local = best_of_n(policy, "MuCode-MBPP-v0", config, **kwargs)
    remote = best_of_n(policy, "MuCode-MBPP-v0", replace(config, ray=SPREAD), **kwargs)
    assert remote.trajectories == local.trajectories  # the picks too: seeded by the episode's index in the run
    assert (remote.per_problem, remote.accuracy_by_turn) == (local.per_problem, local.accuracy_by_turn)
    assert remote.stats["verifier_programs"] == local.stats["verifier_programs"]
    # scored in the actors: LV reads every distinct candidate's score; PT+LV only where two or more
    # distinct texts share the public-test pool (never with this policy); PT none
    assert (remote.stats["verifier_programs"] > 0) == (selector == "lv")


@pytest.mark.slow
def test_a_stored_best_of_n_started_here_resumes_on_ray_with_the_same_picks(cluster, problems, data_dir, tmp_path):
    from agents.bon import BoNConfig, best_of_n
    from agents.episode_store import EpisodeStore

    config = BoNConfig(n=3, selector="random", max_turns=3, seed=3, progress=False)
    kwargs = dict(problem_ids=IDS, split="test", data_dir=str(data_dir), policy_name="seeded")
    policy = SeededScriptedPolicy(problems)
    local = best_of_n(policy, "MuCode-MBPP-v0", config, **kwargs)
    # a run stopped after the first episodes of the list: the rest are played on Ray, where the
    # random selector's picks depend on each episode's index in the whole run
    store = tmp_path / "cell"
    best_of_n(policy, "MuCode-MBPP-v0", config, store_dir=store, **kwargs)
    shards = sorted((store / "shards").glob("*.parquet"))
    kept = [t for t in local.trajectories if t.problem_id in IDS[:2]]
    for shard in shards:
        shard.unlink()
    identity = json.loads((store / "manifest.json").read_text())["identity"]
    writer = EpisodeStore(store, identity)  # the kept episodes, as the stopped run saved them
    for traj in kept:
        writer.add(traj)
    writer.flush()
    resumed = best_of_n(policy, "MuCode-MBPP-v0", replace(config, ray=SPREAD), store_dir=store, **kwargs)
    assert resumed.stats["resumed_episodes"] == len(kept) and resumed.stats["episodes"] == len(IDS) - len(kept)
    assert resumed.trajectories == local.trajectories
    assert resumed.per_problem == local.per_problem


@pytest.mark.slow
def test_an_actor_killed_mid_run_changes_nothing(cluster, problems, data_dir):
    import gymnasium as gym
    import ray

    from mucode_env import env_problems

    env_kwargs = {"split": "test", "max_turns": 3,
                  "problems": env_problems("MuCode-MBPP-v0", split="test", problem_ids=IDS, data_dir=str(data_dir))}
    specs = [EpisodeSpec(pid, j) for pid in IDS for j in range(2)]
    play = dict(sampling=lambda call: SamplingParams(temperature=0.7, seed=call), seed=11, max_live=4,
                env_id="MuCode-MBPP-v0")
    policy = SeededScriptedPolicy(problems, sleep_s_per_call=0.05)
    expected = play_episodes(policy, lambda: gym.make("MuCode-MBPP-v0", disable_env_checker=True, **env_kwargs),
                             specs, **play)
    delivered = []
    with RayEpisodes(replace(SPREAD, chunk_size=1), policy) as runner:
        assert len({info["node_id"] for info in runner.actor_info()}) == 2  # one actor on each node
        victim = runner.actors[0]

        def on_done(traj):
            delivered.append((traj.problem_id, traj.sample_index))
            if len(delivered) == 2:  # both actors hold chunks now: one of them dies with its work
                ray.kill(victim, no_restart=True)

        got = runner.play("MuCode-MBPP-v0", env_kwargs, specs, on_done=on_done, **play)
        assert runner.stats["actor_failures"] >= 1 and runner.stats["resubmitted_chunks"] >= 1
        assert victim not in runner.actors and len(runner.actors) == 2  # replaced
    assert got == expected
    assert sorted(delivered) == sorted((s.problem_id, s.sample_index) for s in specs)  # each once


DRIVER = textwrap.dedent("""
    import sys
    import ray
    from agents.policy import SamplingParams
    from agents.ray_episodes import RayEpisodesConfig
    from agents.rollout import RolloutConfig, run_rollouts
    from agents.scripted import SeededScriptedPolicy
    from mucode_env.datasets import load_problems

    address, out, data_dir = sys.argv[1:4]
    ids = {ids!r}
    ray.init(address=address, log_to_driver=False)
    problems = [p for p in load_problems("mbpp", "test", data_dir=data_dir) if p.id in ids]
    config = RolloutConfig(env_id="MuCode-MBPP-v0", split="test", problem_ids=ids, n=2, seed=5, max_turns=3,
                           sampling=SamplingParams(temperature=0.7, max_new_tokens=64), progress=False,
                           env_kwargs={{"data_dir": data_dir}}, shard_size=1,
                           ray=RayEpisodesConfig(n_actors=2, chunk_size=1, chunks_per_actor=1))
    run_rollouts(SeededScriptedPolicy(problems, sleep_s_per_call=0.5), config, out)
""")


@pytest.mark.slow
def test_a_driver_killed_mid_run_resumes_with_nothing_lost_or_duplicated(cluster, problems, data_dir, tmp_path):
    from agents.rollout import load_trajectories, run_rollouts

    out = tmp_path / "rollouts"
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(ids=IDS))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    driver = subprocess.Popen([sys.executable, str(script), cluster.address, str(out), str(data_dir)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while len(list((out / "shards").glob("shard-*.parquet"))) < 3 and driver.poll() is None:
            assert time.monotonic() < deadline, "the driver wrote no shards within 300 s"
            time.sleep(0.05)
        driver.send_signal(signal.SIGKILL)
    finally:
        driver.kill()
        _, err = driver.communicate()
    assert driver.returncode == -signal.SIGKILL, err.decode()[-2000:]  # killed, not finished
    assert not (out / "trajectories").exists()
    stored = load_trajectories(out / "shards")
    assert 3 <= len(stored) < len(IDS) * 2

    config = rollout_config(data_dir, shard_size=1, ray=SPREAD)
    policy = SeededScriptedPolicy(problems)
    resumed = run_rollouts(policy, config, out)
    assert resumed.stats.resumed_episodes == len(stored)
    assert resumed.stats.episodes == len(IDS) * 2 - len(stored)
    final = load_trajectories(out)
    keys = [(t.problem_id, t.sample_index) for t in final]
    assert len(keys) == len(set(keys)) == len(IDS) * 2
    assert final == run_rollouts(policy, rollout_config(data_dir)).trajectories  # the local path's episodes


@pytest.mark.slow
def test_a_policy_that_cannot_be_built_fails_at_once(cluster):
    spec = PolicySpec("llama_cpp", "/nonexistent/model.gguf")
    with pytest.raises(RayEpisodesError, match="failed to build"):
        RayEpisodes(RayEpisodesConfig(n_actors=1, start_timeout_s=120), spec)


@pytest.mark.slow
def test_trainer_rollout_and_validation_stages_on_ray_match_the_local_path(cluster, data_dir, tmp_path):
    from agents.mucode import MuCodeConfig, MuCodeTrainer, RolloutSettings, ValidationSettings
    from mucode_env.datasets import load_problems

    train = load_problems("mbpp", "train", data_dir=str(data_dir))[:3]
    policy = SeededScriptedPolicy(train + load_problems("mbpp", "validation", data_dir=str(data_dir))[:2])
    got = {}
    for name, ray in (("local", None), ("ray", SPREAD)):
        config = MuCodeConfig(
            run_dir=str(tmp_path / name), train_problem_ids=tuple(p.id for p in train), data_dir=str(data_dir),
            rollout=RolloutSettings(rollouts_per_problem=2, max_new_tokens=8, max_turns=2),
            validation=ValidationSettings(split="validation", max_problems=2, n=1, max_turns=2, max_new_tokens=8),
            progress=False, seed=4, ray=ray)
        trainer = MuCodeTrainer(config, lambda model, backend: policy)
        it_dir = tmp_path / name / "iter1"
        it_dir.mkdir(parents=True)
        validation = trainer._validate(1, it_dir)
        got[name] = (trainer._rollouts(1, it_dir), validation["per_problem"], validation["accuracy_by_turn"])
    assert got["ray"] == got["local"]
    assert len(got["ray"][0]) == 6 and len(got["ray"][1]) == 2


@pytest.mark.slow
def test_actors_can_send_their_programs_to_sandbox_actors_elsewhere(cluster, problems, data_dir):
    from agents.rollout import run_rollouts
    from agents.scripted import ScriptedPolicy

    policy = SeededScriptedPolicy(problems)
    config = replace(rollout_config(data_dir), problem_ids=IDS[:3], n=1)
    nested = RayEpisodesConfig(n_actors=1, sandbox=RaySandboxConfig(n_actors=1, cpus_per_actor=1))
    assert run_rollouts(policy, replace(config, ray=nested)).trajectories == run_rollouts(policy, config).trajectories
    # a policy without per-episode seeds plays too, with a warning that its samples depend on the spread
    with pytest.warns(RuntimeWarning, match="no per-episode seeds"):
        RayEpisodes(RayEpisodesConfig(n_actors=1), ScriptedPolicy({})).close()
