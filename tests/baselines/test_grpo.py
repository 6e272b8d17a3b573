"""baselines.grpo: GRPO through TRL's GRPOTrainer on multi-turn MBPP-train episodes."""

from __future__ import annotations

import json
import os

import pytest

if os.environ.get("CI") != "true":
    pytest.importorskip("trl")

import torch  # noqa: E402

from baselines.grpo import (CHECKPOINT_DIR, LOG_FILE, TRAINER_STATE_FILE, TRL_DIR, GRPOBaseline,  # noqa: E402
                            GRPOBaselineConfig)
from mucode_env.datasets import load_problems  # noqa: E402
from mucode_env.errors import UnknownEnvError  # noqa: E402


def small_config(tmp_path, tiny_model_dir, data_dir, **kw) -> GRPOBaselineConfig:
    base = dict(model=str(tiny_model_dir), output_dir=str(tmp_path / "run"), data_dir=str(data_dir), limit=2,
                max_turns=2, max_new_tokens=16, max_steps=2, num_generations=2, per_device_train_batch_size=4,
                learning_rate=1e-2, public_pass_rate_weight=0.5, progress=False)
    base.update(kw)
    return GRPOBaselineConfig(**base)


def inject_reference_solutions(baseline: GRPOBaseline, data_dir) -> list[int]:
    """The tiny model's first episode of each problem answers turn 1 with the reference solution
    (a random model never passes, and GRPO learns nothing from a group of equal rewards).
    Returns a list that gets one entry per rollout (batch of episodes) played."""
    problems = {p.id: p for p in load_problems("mbpp", "train", data_dir=data_dir)}
    trainer = baseline.build()
    tok = trainer.processing_class
    sample = baseline.rollout._generate
    rollouts: list[int] = []

    def generate(trainer_arg, contexts):
        tokens, logprobs = sample(trainer_arg, contexts)
        first_turn = [tok.decode(c).count("<|im_start|>assistant") == 1 for c in contexts]
        if contexts and all(first_turn):
            rollouts.append(len(contexts))
        for row, context in enumerate(contexts):
            text = tok.decode(context)
            if row % 2 == 0 and first_turn[row]:
                problem = next(p for p in problems.values() if p.prompt.strip() in text)
                code = f"```python\n{problem.reference_solution}\n```"
                tokens[row] = tok(code, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
                logprobs[row] = [0.0] * len(tokens[row])
        return tokens, logprobs

    baseline.rollout._generate = generate
    return rollouts


def _weights(path):
    from transformers import AutoModelForCausalLM

    return {k: v.clone() for k, v in AutoModelForCausalLM.from_pretrained(path).state_dict().items()}


def test_two_grpo_steps_write_a_checkpoint_that_bench_can_load(tmp_path, tiny_model_dir, data_dir, sandbox):
    cfg = small_config(tmp_path, tiny_model_dir, data_dir)
    baseline = GRPOBaseline(cfg, sandbox=sandbox)
    rollouts = inject_reference_solutions(baseline, data_dir)
    path = baseline.train()
    assert rollouts == [4, 4]  # 2 problems x G=2 episodes per optimizer step
    assert path == tmp_path / "run" / CHECKPOINT_DIR
    assert baseline.trainer.state.global_step == 2
    before, after = _weights(tiny_model_dir), _weights(path)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    state = json.loads((path / TRAINER_STATE_FILE).read_text())
    assert state["global_step"] == 2 and state["config"]["max_turns"] == 2
    rows = [json.loads(line) for line in (tmp_path / "run" / LOG_FILE).read_text().splitlines()]
    steps = [r for r in rows if "rewards/oracle_reward/mean" in r]
    assert [r["step"] for r in steps] == [1, 2]
    # one of the two episodes of each problem is the reference solution: oracle 1 of 2
    assert all(r["rewards/oracle_reward/mean"] == 0.5 for r in steps)
    assert all(0.5 <= r["rewards/public_pass_rate_reward/mean"] <= 1.0 for r in steps)
    from agents.models.convert import resolve_run

    assert resolve_run(tmp_path / "run", None) == (str(path), None)
    # a finished run returns at once; another configuration refuses to reuse the directory
    again = GRPOBaseline(cfg, sandbox=sandbox)
    assert again.train() == path and again.trainer is None
    with pytest.raises(ValueError, match="different configuration"):
        GRPOBaseline(small_config(tmp_path, tiny_model_dir, data_dir, learning_rate=0.5), sandbox=sandbox).train()


def test_an_interrupted_run_resumes_from_trls_checkpoint(tmp_path, tiny_model_dir, data_dir, sandbox):
    first = GRPOBaseline(small_config(tmp_path, tiny_model_dir, data_dir, max_steps=1, save_every=1), sandbox=sandbox)
    inject_reference_solutions(first, data_dir)
    first.train()
    assert (tmp_path / "run" / TRL_DIR / "checkpoint-1").is_dir()
    more = GRPOBaseline(small_config(tmp_path, tiny_model_dir, data_dir, max_steps=2, save_every=1), sandbox=sandbox)
    rollouts = inject_reference_solutions(more, data_dir)
    more.train()
    assert more.trainer.state.global_step == 2 and rollouts == [4]  # only step 2 was played again
    rows = [json.loads(line) for line in (tmp_path / "run" / LOG_FILE).read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2]  # step 1 comes from the checkpoint, not a rerun
    assert json.loads((tmp_path / "run" / CHECKPOINT_DIR / TRAINER_STATE_FILE).read_text())["global_step"] == 2


def test_config_validation_and_trl_arguments(tmp_path):
    with pytest.raises(ValueError, match="num_generations must be >= 2"):
        GRPOBaselineConfig(model="m", output_dir="o", num_generations=1)
    with pytest.raises(ValueError, match="multiple of num_generations"):
        GRPOBaselineConfig(model="m", output_dir="o", num_generations=3, per_device_train_batch_size=4)
    with pytest.raises(ValueError, match="temperature"):
        GRPOBaselineConfig(model="m", output_dir="o", temperature=0.0)
    with pytest.raises(ValueError, match="nothing to learn"):
        GRPOBaselineConfig(model="m", output_dir="o", oracle_weight=0.0)
    with pytest.raises(ValueError, match="termination"):
        GRPOBaselineConfig(model="m", output_dir="o", termination="never")
    with pytest.raises(UnknownEnvError, match="Did you mean"):
        GRPOBaselineConfig(model="m", output_dir="o", env_id="MuCode-MBBP-v0")
    with pytest.raises(ValueError, match="unknown GRPOBaselineConfig"):
        GRPOBaselineConfig.from_dict({"model": "m", "output_dir": "o", "group_size": 4})
    cfg = GRPOBaselineConfig(model="m", output_dir=str(tmp_path / "g"), max_new_tokens=64, beta=0.04,
                             public_pass_rate_weight=0.25, save_every=5)
    args = cfg.trl_args()
    assert args.output_dir == str(tmp_path / "g" / TRL_DIR)
    assert (args.max_completion_length, args.beta, args.num_generations) == (64, 0.04, 4)
    assert args.reward_weights == [1.0, 0.25] and args.save_steps == 5 and args.report_to == []
    from agents.training.precision import bf16_supported

    assert args.bf16 is bf16_supported()  # bf16 autocast wherever the device computes it natively
    assert GRPOBaselineConfig(model="m", output_dir="o", bf16=False).trl_args().bf16 is False
    rollout = cfg.rollout_config()
    assert (rollout.max_new_tokens, rollout.max_turns, rollout.split) == (64, 3, "train")


def test_cpu_preset_matches_the_ppo_budget():
    from baselines.ppo import PPOConfig

    cfg = GRPOBaselineConfig.cpu("out")
    ppo = PPOConfig.cpu("out")
    assert (cfg.model, cfg.limit, cfg.split, cfg.max_new_tokens) == (ppo.model, ppo.limit, ppo.split,
                                                                     ppo.max_new_tokens)
    episodes_per_step = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps
    assert cfg.max_steps * episodes_per_step == ppo.total_updates * ppo.episodes_per_update
    with pytest.raises(ValueError, match="multiple of num_generations"):  # overrides still go through validation
        GRPOBaselineConfig.cpu("out", num_generations=3)


def test_bench_trains_grpo_with_the_trl_baseline(tmp_path, monkeypatch):
    from baselines import grpo
    from baselines.bench import config as bench, run as bench_run

    seen = []
    monkeypatch.setattr(grpo.GRPOBaseline, "train", lambda self: seen.append(self.config) or self.checkpoint_dir)
    cfg = bench.BenchConfig(run_dir=str(tmp_path / "b"), agents=("grpo",), base_model="base", max_turns=2,
                            grpo_overrides={"max_steps": 3, "limit": 4}, progress=False)
    assert bench_run._train_agent("grpo", cfg, tmp_path / "grpo") == str(tmp_path / "grpo")
    (config,) = seen
    assert (config.model, config.max_steps, config.limit, config.max_turns) == ("base", 3, 4, 2)
    assert config.output_dir == str(tmp_path / "grpo")
