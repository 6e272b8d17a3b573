"""agents.mucode.trainer: µCODE Algorithm 1 end to end (tiny model, scripted base policy), resume, presets."""

from __future__ import annotations

import json
import os

from dataclasses import replace

import pytest
import torch

from agents.mucode.expert import ExpertConfig
from agents.scripted import ScriptedPolicy
from agents.training.sft import SFTRunConfig
from agents.tiny import make_tiny_causal_lm
from agents.mucode import MuCodeConfig, MuCodeTrainer, RolloutSettings, ValidationSettings
from agents.mucode.verifier import VerifierConfig

torch.set_num_threads(1)

TRAIN_IDS = ("MBPP/602", "MBPP/603", "MBPP/604")


@pytest.fixture(scope="module")
def setup(tiny_model_dir, data_dir):
    from mucode_env.datasets import load_problems

    problems = {p.id: p for p in load_problems("mbpp", "train", data_dir=str(data_dir))}
    sols = {problems[i].prompt[:60]: problems[i].reference_solution for i in TRAIN_IDS}
    return tiny_model_dir, sols, data_dir


def _config(run_dir, tiny, data_dir, **kw):
    fast = dict(warmup_ratio=0.0, lr_scheduler_type="constant", progress=False)
    return MuCodeConfig(
        run_dir=str(run_dir),
        env_id="MuCode-MBPP-v0",
        train_problem_ids=TRAIN_IDS,
        data_dir=str(data_dir),
        generator=str(tiny),
        rollout_backend="scripted",
        finetuned_backend="transformers",
        iterations=2,
        rollout=RolloutSettings(rollouts_per_problem=2, max_new_tokens=8, max_turns=2, max_live_episodes=8),
        verifier=VerifierConfig(pairs_per_prompt=4, learning_rate=1e-3, epochs=1, batch_size=8, per_device_batch_size=8,
                                max_length=2048, **fast),
        expert=ExpertConfig(),
        sft=SFTRunConfig(learning_rate=1e-3, epochs=1, batch_size=4, per_device_batch_size=4, max_length=2048, **fast),
        validation=ValidationSettings(enabled=True, split="validation", max_problems=2, n=2, max_new_tokens=8, max_turns=2),
        progress=False,
        **kw,
    )


def _factory(sols, calls):
    def make(model, backend):
        calls.append((model, backend))
        if backend == "scripted":
            return ScriptedPolicy(sols)
        from agents.backends import make_policy

        return make_policy(backend, model, batch_size=8)

    return make


def test_two_iterations_end_to_end_and_resume(setup, tmp_path):
    tiny, sols, data_dir = setup
    calls: list = []
    cfg = _config(tmp_path / "run", tiny, data_dir)
    report = MuCodeTrainer(cfg, _factory(sols, calls)).train()
    run = tmp_path / "run"
    for it in (1, 2):
        d = run / f"iter{it}"
        for stage in ("rollouts", "verifier", "relabel", "generator", "validation"):
            assert (d / f"{stage}.done").is_file(), (it, stage)
        assert (d / "generator" / "config.json").is_file() and (d / "verifier" / "verifier.json").is_file()
        rows = [json.loads(x) for x in (d / "relabeled.jsonl").read_text().splitlines()]
        assert rows and all(r["completion"][0]["role"] == "assistant" for r in rows)
    # iteration 2 rolls out the fine-tuned generator of iteration 1 with the transformers backend
    assert (str(run / "iter1" / "generator"), "transformers") in calls
    assert calls[0] == (str(tiny), "scripted")
    # aggregation: iteration 2's verifier saw both iterations' rollouts
    v2 = json.loads((run / "iter2" / "verifier.done").read_text())
    assert v2["n_trajectories"] == 2 * len(TRAIN_IDS) * 2
    it1 = report["iterations"][0]
    assert it1["expert_accuracy"] == 1.0  # the scripted base solves every problem in some rollout
    assert set(it1["throughput"]) == {"rollout_tokens_per_s", "verifier_train_tokens_per_s",
                                      "generator_train_tokens_per_s", "verifier_scoring_programs_per_s"}
    assert report["best"]["iteration"] in (1, 2)
    assert (run / "report.json").is_file() and (run / "report_accuracy.png").is_file() and (run / "report_turns.png").is_file()
    md = (run / "report.md").read_text().splitlines()
    assert "rollout tokens/s" in md[0] and "verifier scoring programs/s" in md[0]
    rows = [line.split("|")[1:-1] for line in md[2:4]]
    assert [r[0].strip() for r in rows] == ["1", "2"] and rows[0][2].strip() == "100.0%"  # expert accuracy
    assert all(c.strip() != "-" for c in rows[0][4:])  # every stage of a finished iteration has a throughput

    # crash after iteration 1's verifier: stages with markers are skipped, the rest rerun
    for stage in ("relabel", "generator", "validation"):
        (run / "iter2" / f"{stage}.done").unlink()
    (run / "iter1" / "generator.done").unlink()  # iteration 1's generator is retrained too
    calls.clear()
    MuCodeTrainer(cfg, _factory(sols, calls)).train()
    assert ("scripted" not in {b for _, b in calls})  # no rollout was redone
    assert (run / "iter2" / "generator.done").is_file()


def test_missing_data_fails_before_any_policy_is_built(setup, tmp_path):
    # a generation server takes minutes to start: the data is checked first
    from mucode_env.errors import DatasetError, UnknownProblemError

    tiny, sols, data_dir = setup
    calls: list = []
    empty = tmp_path / "no-data"
    empty.mkdir()
    with pytest.raises(DatasetError, match="mbpp"):
        MuCodeTrainer(_config(tmp_path / "a", tiny, empty), _factory(sols, calls)).train()
    with pytest.raises(UnknownProblemError, match="MBPP/99999"):
        MuCodeTrainer(replace(_config(tmp_path / "b", tiny, data_dir), train_problem_ids=("MBPP/99999",)),
                      _factory(sols, calls)).train()
    assert calls == []


def test_presets_reach_the_trainers_and_survive_json(tmp_path):
    from agents.training.sft import common_training_args

    # the paper preset's Table 6 global batches are what the training stages step with, on one
    # process and on eight (micro-batches times accumulation times processes)
    paper = MuCodeConfig.paper()
    for stage, per_step in ((paper.sft, 32), (paper.verifier, 64)):
        args = common_training_args(stage, tmp_path / "args")
        assert args["per_device_train_batch_size"] * args["gradient_accumulation_steps"] == per_step
        assert args["learning_rate"] == stage.learning_rate and args["num_train_epochs"] == stage.epochs
    import os
    from unittest import mock

    with mock.patch.dict(os.environ, {"WORLD_SIZE": "8"}):
        assert 8 * common_training_args(paper.sft, tmp_path)["gradient_accumulation_steps"] * \
            paper.sft.per_device_batch_size == 32
    cpu = MuCodeConfig.cpu()
    assert cpu.verifier_base == "smollm2-135m" and cpu.verifier.pairs_per_prompt < 32
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"preset": "cpu", "iterations": 1, "sft": {"lora": False}}))
    loaded = MuCodeConfig.load(str(f))
    assert loaded.iterations == 1 and loaded.sft.lora is False and loaded.sft.max_length == cpu.sft.max_length
    again = MuCodeConfig.from_dict(json.loads(json.dumps(loaded.to_dict())))
    assert again == loaded
    with pytest.raises(ValueError, match="unknown MuCodeConfig keys"):
        MuCodeConfig.from_dict({"iteratons": 2})
    # multi-GPU training stages are configuration too, and survive the JSON round trip
    from agents.training.launch import LaunchConfig

    f.write_text(json.dumps({"preset": "paper", "launch": {"command": ["accelerate", "launch", "--num_processes", "8"]}}))
    multi = MuCodeConfig.load(str(f))
    assert multi.launch == LaunchConfig(("accelerate", "launch", "--num_processes", "8"), isolated=True)
    assert multi.launch.distributed
    # the presets train in a child process, so its memory is free for the next generation server
    assert cpu.launch.isolated and MuCodeConfig.paper().launch.isolated and MuCodeConfig().launch.in_process
    assert MuCodeConfig.from_dict(json.loads(json.dumps(multi.to_dict()))) == multi
    assert not MuCodeConfig.cpu().launch.distributed


def test_finetuned_generator_rolls_out_through_llama_cpp(tmp_path):
    """finetuned_backend="llama_cpp": iteration i>1 rolls out pi_{i-1} exported to GGUF (reused once made)."""
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gguf")
    from agents.policy import SamplingParams

    base = make_tiny_causal_lm(tmp_path / "base", arch="llama")
    cfg = MuCodeConfig(run_dir=str(tmp_path / "run"), generator=str(base), rollout_backend="scripted",
                       finetuned_backend="llama_cpp", finetuned_gguf_dtype="f16", progress=False)
    trainer = MuCodeTrainer(cfg)
    assert trainer.generator_for(1) == (str(base), "scripted")
    import shutil

    shutil.copytree(base, tmp_path / "run" / "iter1" / "generator")  # stands in for finetune's output
    model, backend = trainer.generator_for(2)
    assert backend == "llama_cpp" and model == str(tmp_path / "run" / "iter1" / "generator" / "model-f16.gguf")
    mtime = os.stat(model).st_mtime_ns
    assert trainer.generator_for(2) == (model, backend) and os.stat(model).st_mtime_ns == mtime
    policy = trainer.policy_factory(model, backend)
    (gen,) = policy.generate([[{"role": "user", "content": "def add(a, b):"}]],
                             SamplingParams(n=1, temperature=0.0, max_new_tokens=4))[0]
    assert gen.prompt_tokens > 0 and gen.completion_tokens >= 1


def test_with_ray_the_default_factory_sends_a_recipe_not_an_engine():
    from agents.backends import PolicySpec
    from agents.mucode.trainer import _default_policy_factory

    kwargs = {"llama_cpp": {"n_ctx": 1024}}
    make = _default_policy_factory(kwargs, distributed=True)
    assert make("qwen2.5-coder-0.5b", "llama_cpp") == PolicySpec("llama_cpp", "qwen2.5-coder-0.5b", {"n_ctx": 1024})
    assert make("runs/x/iter1/generator", "transformers") == PolicySpec("transformers", "runs/x/iter1/generator")
