"""baselines.ppo: multi-turn episodes in the real environment, reward placement, PPO updates."""

from __future__ import annotations

import json

import pytest
import torch

from baselines.ppo import CHECKPOINT_DIR, LOG_FILE, PPOConfig, PPOTrainer

torch.set_num_threads(1)

WRONG = "```python\ndef f(x):\n    return x + 2\n```"
RIGHT = "```python\ndef f(x):\n    return x + 1\n```"


def small_config(tmp_path, tiny_dir, **kw) -> PPOConfig:
    base = dict(model=str(tiny_dir), output_dir=str(tmp_path / "run"), total_updates=2, episodes_per_update=2,
                minibatch_size=4, micro_batch_size=2, max_new_tokens=12, max_turns=2, learning_rate=1e-3,
                invalid_code_penalty=0.1, progress=False, device="cpu", problem_ids=("Toy/inc", "Toy/dbl"))
    base.update(kw)
    return PPOConfig(**base)


class ScriptedSampler:
    """Stands in for the policy's sampler: scripted texts, tokenised as the real sampler reports them."""

    def __init__(self, tokenizer, texts):
        self.tok, self.texts = tokenizer, iter(texts)

    def generate(self, chats, params):
        from agents.policy import Generation

        out = []
        for chat in chats:
            prompt = self.tok(self.tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True),
                              add_special_tokens=False)["input_ids"]
            text = next(self.texts)
            body = self.tok(text, add_special_tokens=False)["input_ids"]
            out.append([Generation(text, len(prompt), len(body), "stop",
                                   {"prompt_ids": prompt, "completion_ids": body + [self.tok.eos_token_id]})])
        return out


def _weights(path):
    from transformers import AutoModelForCausalLM

    return {k: v.clone() for k, v in AutoModelForCausalLM.from_pretrained(path).state_dict().items()}


def test_scripted_episode_places_the_reward_on_the_last_policy_token(tmp_path, tiny_model_dir, sandbox, toy_problems):
    cfg = small_config(tmp_path, tiny_model_dir, episodes_per_update=1, problem_ids=("Toy/inc",))
    trainer = PPOTrainer(cfg, problems=toy_problems, sandbox=sandbox)
    trainer._setup()
    tok = trainer.tokenizer
    trainer.sampler = ScriptedSampler(tok, [WRONG, RIGHT])
    (ep,) = trainer.rollout(0)
    assert [t.public_passed for t in ep.turns] == [False, True]
    assert ep.reward == 1.0 and ep.return_ == 1.0 and ep.done
    assert "Test failed" in ep.turns[0].feedback
    seg = ep.segments[-1]
    # the policy mask covers exactly the two sampled responses (each with its stop token)
    n_policy = sum(s.policy_mask.count(1) for s in ep.segments)
    assert n_policy == sum(t.completion_tokens + 1 for t in ep.turns)
    # the feedback tokens are context, not actions
    text_ctx = tok.decode([i for s in ep.segments for i, m in zip(s.input_ids, s.policy_mask) if not m])
    assert "Feedback:" in text_ctx and "Test failed" in text_ctx
    nonzero = [(k, i, v) for k, s in enumerate(ep.segments) for i, v in enumerate(s.scores) if v]
    assert nonzero == [(len(ep.segments) - 1, len(seg.input_ids) - 1, 1.0)]
    assert seg.policy_mask[-1] == 1
    # the ChatML context of turn 2 extends turn 1's sequence, so the episode is one segment
    assert len(ep.segments) == 1
    trajs = trainer.trajectories([ep])
    assert trajs[0].success and trajs[0].prompt.startswith("Write a Python function")


def test_invalid_code_penalty_sits_at_each_failed_turn(tmp_path, tiny_model_dir, sandbox, toy_problems):
    cfg = small_config(tmp_path, tiny_model_dir, episodes_per_update=1, problem_ids=("Toy/inc",),
                       invalid_code_penalty=0.2)
    trainer = PPOTrainer(cfg, problems=toy_problems, sandbox=sandbox)
    trainer._setup()
    trainer.sampler = ScriptedSampler(trainer.tokenizer, ["no code here"] * 2)
    (ep,) = trainer.rollout(0)
    assert len(ep.turns) == 2 and ep.reward == 0.0 and ep.return_ == pytest.approx(-0.4)
    scores = [v for s in ep.segments for v in s.scores if v]
    assert scores == pytest.approx([-0.2, -0.2])


@pytest.mark.parametrize("kl_in_reward", [True, False])
def test_updates_run_end_to_end_change_the_weights_and_resume(tmp_path, tiny_model_dir, sandbox, toy_problems,
                                                              kl_in_reward):
    cfg = small_config(tmp_path, tiny_model_dir, kl_in_reward=kl_in_reward, kl_estimator="k1" if kl_in_reward else "k3",
                       entropy_coef=0.01)
    path = PPOTrainer(cfg, problems=toy_problems, sandbox=sandbox).train()
    assert path == tmp_path / "run" / CHECKPOINT_DIR
    before, after = _weights(tiny_model_dir), _weights(path)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    rows = [json.loads(line) for line in (tmp_path / "run" / LOG_FILE).read_text().splitlines()]
    assert [r["update"] for r in rows] == [0, 1]
    assert all(r["optimizer_steps"] >= 1 and r["policy_tokens"] > 0 for r in rows)
    assert (path / "value_head.pt").is_file()
    state = json.loads((path / "trainer_state.json").read_text())
    assert state["update"] == 2
    # resume: one more update continues from the checkpoint
    more = PPOTrainer(PPOConfig(**{**cfg.__dict__, "total_updates": 3}), problems=toy_problems, sandbox=sandbox)
    more.train()
    rows = [json.loads(line) for line in (tmp_path / "run" / LOG_FILE).read_text().splitlines()]
    assert [r["update"] for r in rows] == [0, 1, 2]
    # a different configuration refuses to resume from this checkpoint
    with pytest.raises(ValueError, match="different configuration"):
        PPOTrainer(PPOConfig(**{**cfg.__dict__, "learning_rate": 0.5}), problems=toy_problems,
                   sandbox=sandbox).train()


def test_config_validation():
    with pytest.raises(ValueError, match="temperature"):
        PPOConfig(model="m", output_dir="o", temperature=0.0)
    with pytest.raises(ValueError, match="kl_estimator"):
        PPOConfig(model="m", output_dir="o", kl_estimator="k9")
    assert PPOConfig(model="m", output_dir="o").kl_in_reward
    with pytest.raises(ValueError, match="episodes_per_update"):
        PPOConfig(model="m", output_dir="o", episodes_per_update=0)
    with pytest.raises(ValueError, match="unknown PPOConfig"):
        PPOConfig.from_dict({"model": "m", "output_dir": "o", "lr": 1})


def test_cpu_preset_is_a_short_valid_run_on_the_experiment_subset():
    cfg = PPOConfig.cpu("out")
    assert (cfg.model, cfg.device) == ("qwen2.5-coder-0.5b", "cpu")
    # the µCODE cpu experiment trains on the first 8 MBPP-train problems; PPO must see the same
    assert cfg.limit == 8 and cfg.split == "train" and cfg.problem_ids is None
    assert cfg.total_updates * cfg.episodes_per_update == 16 and cfg.gradient_checkpointing
    assert PPOConfig.cpu("out", total_updates=5).total_updates == 5
    with pytest.raises(ValueError, match="total_updates"):  # overrides still go through validation
        PPOConfig.cpu("out", total_updates=0)
