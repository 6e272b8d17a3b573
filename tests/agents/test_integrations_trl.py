"""agents.integrations.trl against TRL's real GRPOTrainer: multi-turn episodes, masks, rewards.

Every episode is replayed in a fresh environment from the returned tokens alone: the policy runs
(env_mask 1) decoded as actions must reproduce the environment's feedback exactly in the masked
runs (env_mask 0) and the reward the reward functions gave.
"""

from __future__ import annotations

import os
import warnings

import pytest

if os.environ.get("CI") != "true":
    pytest.importorskip("trl")

import gymnasium as gym  # noqa: E402
import torch  # noqa: E402

import mucode_env  # noqa: E402
from agents.integrations.trl import (CODE_KEY, ORACLE_KEY, PASS_RATE_KEY, PROBLEM_KEY, TURNS_KEY,  # noqa: E402
                                     ChatTemplateError, MultiTurnRolloutConfig, MuCodeRolloutFunc,
                                     UnsupportedTrainerError, build_dataset, feedback_bridge, oracle_reward,
                                     public_pass_rate_reward)
from mucode_env.datasets import load_problems  # noqa: E402

ENV_ID = "MuCode-MBPP-v0"
T = 2
IM_END, IM_START = "<|im_end|>", "<|im_start|>"
WRONG_601 = "```python\nclass Pair:\n    def __init__(self, a, b):\n        self.a, self.b = a, b\n\n" \
            "def max_chain_length(arr, n):\n    return n\n```"  # passes 2 of the 3 public tests
WRONG_602 = "Here:\n```python\ndef first_repeated_char(s):\n    return 'a'\n```"  # passes 1 of 3
NO_CODE = "I am not sure how to solve this."


def fenced(code: str) -> str:
    return f"```python\n{code}\n```"


@pytest.fixture(scope="module")
def mbpp_train(data_dir):
    return load_problems("mbpp", "train", data_dir=data_dir)


def grpo_trainer(model_dir, tmp_path, dataset, rollout_func, reward_funcs, **overrides):
    from trl import GRPOConfig, GRPOTrainer

    args = dict(output_dir=str(tmp_path / "trl"), per_device_train_batch_size=4, num_generations=2, max_steps=2,
                max_completion_length=32, learning_rate=1e-2, report_to="none", use_cpu=True, bf16=False,
                logging_steps=1, save_strategy="no", disable_tqdm=True, seed=0)
    args.update(overrides)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return GRPOTrainer(model=str(model_dir), reward_funcs=reward_funcs, args=GRPOConfig(**args),
                           train_dataset=dataset, rollout_func=rollout_func)


def runs(mask: list[int]) -> list[tuple[int, int, int]]:
    """(value, start, end) of the constant runs of a 0/1 mask."""
    out, start = [], 0
    for k in range(1, len(mask) + 1):
        if k == len(mask) or mask[k] != mask[start]:
            out.append((mask[start], start, k))
            start = k
    return out


def replay(tok, problems, sandbox, problem_id, completion_ids, env_mask):
    """Step a fresh environment with the policy runs of one completion; check every masked run
    against the feedback the environment gives. Returns the final reward and info, the number of
    turns and the whole conversation as chat messages."""
    env = gym.make(ENV_ID, split="train", problems=problems, max_turns=T, sandbox=sandbox)
    obs, _ = env.reset(options={"problem_id": problem_id})
    pieces = runs(env_mask)
    assert [v for v, _, _ in pieces] == [1, 0] * (len(pieces) // 2) + [1]  # response, feedback, ..., response
    for k in range(0, len(pieces), 2):
        _, start, end = pieces[k]
        sampled = completion_ids[start:end]
        ended = sampled[-1] == tok.eos_token_id
        text = tok.decode(sampled[:-1] if ended else sampled, skip_special_tokens=True)
        messages = mucode_env.to_messages(obs) + [{"role": "assistant", "content": text}]
        obs, reward, terminated, truncated, info = env.step(text)
        if k + 1 < len(pieces):
            assert not (terminated or truncated)
            _, fb_start, fb_end = pieces[k + 1]
            feedback = mucode_env.to_messages(obs)[-1]["content"]
            expected = ("" if ended else IM_END) + f"\n{IM_START}user\n{feedback}{IM_END}\n{IM_START}assistant\n"
            assert tok.decode(completion_ids[fb_start:fb_end]) == expected
    assert terminated or truncated
    env.close()
    return reward, info, len(pieces) // 2 + 1, messages


def test_dataset_rows_are_the_first_observation_in_trl_conversational_format(data_dir):
    from trl.data_utils import is_conversational

    ds = build_dataset(ENV_ID, split="train", limit=3, data_dir=str(data_dir))
    assert ds.column_names == ["prompt", "problem_id"] and ds["problem_id"] == ["MBPP/601", "MBPP/602", "MBPP/603"]
    env = gym.make(ENV_ID, split="train", data_dir=str(data_dir))
    for row in ds:
        assert is_conversational(row)
        obs, _ = env.reset(options={"problem_id": row["problem_id"]})
        assert row["prompt"] == mucode_env.to_messages(obs)
    picked = build_dataset(ENV_ID, split="train", problem_ids=["MBPP/605", "MBPP/601"], data_dir=str(data_dir))
    assert picked["problem_id"] == ["MBPP/605", "MBPP/601"]


def test_scripted_episodes_mask_exactly_the_feedback_and_score_with_the_oracle(tiny_model_dir, tmp_path, data_dir,
                                                                               sandbox, mbpp_train):
    """Two MBPP-train problems x G=2 with scripted responses: solved at turn 1; solved after
    feedback; no code then wrong code; a response cut by the token limit, then solved."""
    by_id = {p.id: p for p in mbpp_train}
    ref = {pid: fenced(by_id[pid].reference_solution) for pid in ("MBPP/601", "MBPP/602")}
    dataset = build_dataset(ENV_ID, split="train", limit=2, data_dir=str(data_dir))
    rollout = MuCodeRolloutFunc(MultiTurnRolloutConfig(max_turns=T, data_dir=str(data_dir)), sandbox=sandbox)
    trainer = grpo_trainer(tiny_model_dir, tmp_path, dataset, rollout, [oracle_reward])
    tok = trainer.processing_class
    script = [  # per turn: (text, ends with the stop token) for the live episodes, in order
        [(ref["MBPP/601"], True), (WRONG_601, True), (NO_CODE, True), (WRONG_602, False)],
        [(ref["MBPP/601"], True), (WRONG_602, True), (ref["MBPP/602"], True)],
    ]
    seen = []

    def scripted(trainer_arg, contexts):
        assert trainer_arg is trainer
        turn = script[len(seen)]
        assert len(contexts) == len(turn)
        seen.append(contexts)
        tokens = [tok(text, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if stop else [])
                  for text, stop in turn]
        return tokens, [[-0.5] * len(t) for t in tokens]

    rollout._generate = scripted
    prompts = [row["prompt"] for row in dataset for _ in range(2)]  # TRL's sampler repeats each prompt G times
    out = rollout(prompts, trainer)

    assert out[PROBLEM_KEY] == ["MBPP/601", "MBPP/601", "MBPP/602", "MBPP/602"]
    assert out[TURNS_KEY] == [1, 2, 2, 2]
    assert out[ORACLE_KEY] == [1.0, 1.0, 0.0, 1.0]
    assert out[PASS_RATE_KEY] == pytest.approx([1.0, 1.0, 1 / 3, 1.0])
    assert out[CODE_KEY][0] == by_id["MBPP/601"].reference_solution.strip()
    for key in ("prompt_ids", "completion_ids", "logprobs", "env_mask"):
        assert len(out[key]) == 4
    per_episode = [[script[0][0]], [script[0][1], script[1][0]], [script[0][2], script[1][1]],
                   [script[0][3], script[1][2]]]
    for i, prompt in enumerate(prompts):
        ids, mask, logprobs = out["completion_ids"][i], out["env_mask"][i], out["logprobs"][i]
        assert len(mask) == len(ids) == len(logprobs)
        # the policy runs are exactly the scripted responses; they carry their log-probs, the rest 0
        assert [ids[start:end] for v, start, end in runs(mask) if v] == [
            tok(text, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if stop else [])
            for text, stop in per_episode[i]]
        assert all((lp == -0.5) == bool(m) for lp, m in zip(logprobs, mask))
        reward, info, turns, messages = replay(tok, mbpp_train, sandbox, out[PROBLEM_KEY][i], ids, mask)
        assert turns == out[TURNS_KEY][i] and reward == out[ORACLE_KEY][i] == info["oracle"]
        # prompt + completion is what the chat template renders for the whole conversation
        # (the last response ends at its stop token, before the template's trailing newline)
        rendered = tok.apply_chat_template(messages, tokenize=False)
        assert tok.decode(out["prompt_ids"][i] + ids) == rendered.removesuffix("\n")
        assert tok.decode(out["prompt_ids"][i]) == tok.apply_chat_template(prompt, tokenize=False,
                                                                           add_generation_prompt=True)
    # the context of turn 2 is the episode's own tokens so far, not a re-tokenised rendering
    assert seen[1][0] == out["prompt_ids"][1] + out["completion_ids"][1][:len(seen[1][0]) - len(out["prompt_ids"][1])]
    # the cut response of episode 3 is closed by a masked end-of-turn token
    (_, s0, e0), (_, s1, _), _ = runs(out["env_mask"][3])
    assert out["completion_ids"][3][e0 - 1] != tok.eos_token_id and out["completion_ids"][3][s1] == tok.eos_token_id

    extra = {k: v for k, v in out.items() if k not in ("prompt_ids", "completion_ids", "logprobs", "env_mask")}
    completions = [[{"role": "assistant", "content": "..."}]] * 4
    rows = {"problem_id": out[PROBLEM_KEY], **extra}
    assert oracle_reward(prompts, completions, out["completion_ids"], **rows) == [1.0, 1.0, 0.0, 1.0]
    assert public_pass_rate_reward(prompts, completions, out["completion_ids"], **rows) == pytest.approx(
        [1.0, 1.0, 1 / 3, 1.0])
    with pytest.raises(ValueError, match="same env split"):
        oracle_reward(prompts, completions, **{**rows, "problem_id": ["MBPP/602"] * 4})
    with pytest.raises(KeyError, match="MuCodeRolloutFunc"):
        oracle_reward(prompts, completions, problem_id=out[PROBLEM_KEY])


def test_grpo_trainer_takes_two_optimizer_steps_through_the_multi_turn_rollout(tiny_model_dir, tmp_path, data_dir,
                                                                              sandbox, mbpp_train):
    """The real GRPOTrainer on 2 MBPP-train problems with the tiny model sampling: the first of
    each problem's G=2 episodes answers turn 1 with the reference solution (a random model never
    passes a test, and GRPO learns nothing from a group of equal rewards)."""
    by_id = {p.id: p for p in mbpp_train}
    dataset = build_dataset(ENV_ID, split="train", limit=2, data_dir=str(data_dir))
    rollout = MuCodeRolloutFunc(MultiTurnRolloutConfig(max_turns=T, max_new_tokens=24, data_dir=str(data_dir)),
                                sandbox=sandbox)
    outputs, rewards = [], []

    def recorded_rollout(prompts, trainer):
        out = rollout(prompts, trainer)
        outputs.append((prompts, out))
        return out

    def oracle(prompts, completions, completion_ids, **kwargs):
        values = oracle_reward(prompts, completions, completion_ids, **kwargs)
        rewards.append((list(kwargs["problem_id"]), values))
        return values

    trainer = grpo_trainer(tiny_model_dir, tmp_path, dataset, recorded_rollout, [oracle, public_pass_rate_reward])
    tok = trainer.processing_class
    sample = rollout._generate

    def sample_or_inject(trainer_arg, contexts):
        tokens, logprobs = sample(trainer_arg, contexts)
        for row, context in enumerate(contexts):
            text = tok.decode(context)
            first_turn = text.count(f"{IM_START}assistant") == 1
            if first_turn and row % 2 == 0:
                pid = next(p for p in ("MBPP/601", "MBPP/602") if by_id[p].prompt.strip() in text)
                tokens[row] = tok(fenced(by_id[pid].reference_solution), add_special_tokens=False)["input_ids"] + [
                    tok.eos_token_id]
                logprobs[row] = [0.0] * len(tokens[row])
        return tokens, logprobs

    rollout._generate = sample_or_inject
    before = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    trainer.train()

    assert trainer.state.global_step == 2
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.named_parameters())
    assert len(outputs) == 2 and len(rewards) == 2
    for (prompts, out), (reward_ids, reward_values) in zip(outputs, rewards):
        assert len(prompts) == 4 and reward_ids == out[PROBLEM_KEY]
        assert sorted(set(out[PROBLEM_KEY])) == ["MBPP/601", "MBPP/602"]
        for i in range(4):
            ids, mask = out["completion_ids"][i], out["env_mask"][i]
            reward, info, turns, _ = replay(tok, mbpp_train, sandbox, out[PROBLEM_KEY][i], ids, mask)
            assert reward_values[i] == reward == out[ORACLE_KEY][i] and turns == out[TURNS_KEY][i]
            assert all(lp == 0.0 for lp, m in zip(out["logprobs"][i], mask) if not m)
        assert reward_values.count(1.0) == 2  # the injected reference solutions, one per group
        sampled = [i for i in range(4) if out[TURNS_KEY][i] == T]
        assert sampled and all(0 in out["env_mask"][i] for i in sampled)  # their feedback turns are masked
    logged = [row for row in trainer.state.log_history if "rewards/oracle/mean" in row]
    assert [row["rewards/oracle/mean"] for row in logged] == [0.5, 0.5]


def test_sampled_logprobs_are_the_models_tempered_log_probabilities(tiny_model_dir, tmp_path, data_dir, sandbox):
    dataset = build_dataset(ENV_ID, split="train", limit=1, data_dir=str(data_dir))
    rollout = MuCodeRolloutFunc(MultiTurnRolloutConfig(max_turns=1, max_new_tokens=8, data_dir=str(data_dir)),
                                sandbox=sandbox)
    trainer = grpo_trainer(tiny_model_dir, tmp_path, dataset, rollout, [oracle_reward], temperature=0.7)
    prompt_ids = rollout([dataset[0]["prompt"]] * 2, trainer)["prompt_ids"][0]
    tokens, logprobs = rollout._generate(trainer, [prompt_ids, prompt_ids[5:]])
    model = trainer.model.eval()
    for context, toks, lps in zip([prompt_ids, prompt_ids[5:]], tokens, logprobs):
        assert 1 <= len(toks) <= 8 and len(lps) == len(toks)
        ids = torch.tensor([context + toks])
        with torch.no_grad():
            logits = model(ids).logits[0, len(context) - 1: -1].float() / 0.7
        expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor(toks)[:, None]).squeeze(-1)
        assert torch.allclose(torch.tensor(lps), expected, atol=1e-4)


def test_feedback_bridge_refuses_templates_that_rewrite_earlier_turns(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    messages = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"},
                {"role": "user", "content": "Feedback:\nF"}]
    end_id, bridge = feedback_bridge(tok, messages, [tok.eos_token_id])
    assert end_id == tok.eos_token_id
    assert tok.decode(bridge) == f"\n{IM_START}user\nFeedback:\nF{IM_END}\n{IM_START}assistant\n"
    # a template that numbers the turns from the end renders earlier turns differently
    tok.chat_template = ("{% for m in messages %}{{ (messages|length - loop.index)|string + m['role'] + ':' "
                         "+ m['content'] + '<|im_end|>' }}{% endfor %}")
    with pytest.raises(ChatTemplateError, match="prefix-preserving"):
        feedback_bridge(tok, messages, [tok.eos_token_id])
    # a template that closes assistant turns with text, not a stop token
    tok.chat_template = "{% for m in messages %}{{ m['role'] + ':' + m['content'] + ' END ' }}{% endfor %}"
    with pytest.raises(ChatTemplateError, match="stop token"):
        feedback_bridge(tok, messages, [tok.eos_token_id])


def test_rollout_refuses_unknown_prompts_vllm_and_bad_settings(tiny_model_dir, tmp_path, data_dir, sandbox):
    from mucode_env.errors import UnknownProblemError

    dataset = build_dataset(ENV_ID, split="train", limit=1, data_dir=str(data_dir))
    rollout = MuCodeRolloutFunc(MultiTurnRolloutConfig(max_turns=1, data_dir=str(data_dir)), sandbox=sandbox)
    with pytest.raises(UnknownProblemError, match="build_dataset"):
        rollout.problem_id([{"role": "user", "content": "Write a haiku."}])
    with pytest.raises(TypeError, match="conversational"):
        rollout.problem_id("Write a function.")
    assert rollout.problem_id(dataset[0]["prompt"]) == "MBPP/601"

    class VLLMArgs:
        use_vllm = True

    class FakeTrainer:
        args = VLLMArgs()

    with pytest.raises(UnsupportedTrainerError, match="use_vllm=False"):
        rollout([dataset[0]["prompt"]], FakeTrainer())
    with pytest.raises(ValueError, match="max_turns"):
        MultiTurnRolloutConfig(max_turns=0)
    with pytest.raises(ValueError, match="termination"):
        MultiTurnRolloutConfig(termination="never")
    with pytest.raises(mucode_env.UnknownEnvError):
        MultiTurnRolloutConfig(env_id="MuCode-MBBP-v0")


def test_problems_sharing_a_prompt_are_refused(sandbox):
    from mucode_env import IOStyle, Problem, TestCase
    from mucode_env.errors import UnknownProblemError

    test = TestCase("assert f(1) == 2", ("f(1)",), "assert _0 == 2")
    twins = [Problem(f"Toy/{k}", "Return x + 1.", IOStyle.FUNCTION, "f", (test,), (), "def f(x):\n    return x + 1")
             for k in ("a", "b")]
    prompt = build_dataset(ENV_ID, problems=twins)[0]["prompt"]
    rollout = MuCodeRolloutFunc(MultiTurnRolloutConfig(max_turns=1), problems=twins, sandbox=sandbox)
    with pytest.raises(UnknownProblemError, match="share the same prompt"):
        rollout.problem_id(prompt)
