"""agents.mucode.verifier: labels, BT pair sampling, training (BT/BCE) and batched scoring."""

from __future__ import annotations

import json

import pytest
import torch

from agents.records import Trajectory, TurnRecord
from agents.training.sft import read_train_stats
from agents.mucode.verifier import Verifier, VerifierConfig, build_labels, build_pairs, count_prompts, train_verifier

torch.set_num_threads(1)

GOOD = "```python\ndef add(a, b):\n    return a + b\n```"
BAD = "```python\ndef add(a, b):\n    return a - b\n```"


def turn(resp: str, ok: bool) -> TurnRecord:
    return TurnRecord(resp, resp, "" if ok else "AssertionError", ok, ok, "passed" if ok else "wrong_answer")


def traj(pid: str, *turns: TurnRecord, i: int = 0) -> Trajectory:
    return Trajectory(problem_id=pid, env_id="MuCode-MBPP-v0", prompt=f"Write a function add ({pid})", turns=list(turns), sample_index=i)


def test_labels_intermediate_turns_are_negative():
    t = traj("A", turn("r1", False), turn("r2", False), turn("r3", True))
    labels = build_labels([t])
    assert [(lr.response, lr.label, lr.is_final) for lr in labels] == [("r1", 0.0, False), ("r2", 0.0, False), ("r3", 1.0, True)]
    # a non-final turn that passed public but not private tests (oracle termination) stays negative
    odd = traj("B", TurnRecord("x", "x", "", True, False, "passed"), turn("y", True))
    assert [lr.label for lr in build_labels([odd])] == [0.0, 1.0]


def test_pairs_sampling_is_seeded_and_drops_one_sided_prompts():
    data = [
        traj("A", turn("a-bad1", False), turn("a-good", True), i=0),
        traj("A", turn("a-bad2", False), i=1),
        traj("B", turn("b-bad", False), i=0),  # negatives only: dropped
        traj("C", turn("c-good", True), i=0),  # positives only: dropped
    ]
    pairs = build_pairs(data, pairs_per_prompt=32, seed=7)
    assert len(pairs) == 32 and {p["problem_id"] for p in pairs} == {"A"}
    assert all(p["chosen"][0]["content"] == "a-good" for p in pairs)
    assert {p["rejected"][0]["content"] for p in pairs} == {"a-bad1", "a-bad2"}  # with replacement, both drawn
    assert pairs[0]["prompt"] == [{"role": "user", "content": "Write a function add (A)"}]
    assert build_pairs(data, 32, seed=7) == pairs
    assert build_pairs(data, 32, seed=8) != pairs
    # a prompt's pairs do not depend on the other prompts present
    assert build_pairs(data[:2], 32, seed=7) == pairs
    assert count_prompts(data) == {"both": 1, "only_positive": 1, "only_negative": 1}


def _toy_data():
    return [traj(f"P{k}", turn(GOOD if i % 2 == 0 else BAD, i % 2 == 0), i=i) for k in range(4) for i in range(4)]


FAST = dict(learning_rate=3e-3, epochs=3, batch_size=8, per_device_batch_size=8, max_length=256, progress=False,
            warmup_ratio=0.0, lr_scheduler_type="constant")


@pytest.mark.parametrize("loss", ["bt", "bce"])
def test_verifier_learns_to_rank_good_over_bad(tiny_model_dir, tmp_path, loss):
    cfg = VerifierConfig(loss=loss, pairs_per_prompt=8, l2_coef=1e-3, **FAST)
    path = train_verifier(_toy_data(), tiny_model_dir, cfg, tmp_path / "v")
    stats = read_train_stats(path)
    assert stats["trained"] and stats["train_tokens"] > 0
    v = Verifier.load(path)
    good, bad = v.score(["Write a function add (P9)"] * 2, [GOOD, BAD])
    assert good > bad
    assert json.loads((path / "verifier.json").read_text())["config"]["loss"] == loss


def test_score_is_batched_consistently_and_reads_last_token(tiny_model_dir, tmp_path, capsys):
    path = train_verifier(_toy_data(), tiny_model_dir, VerifierConfig(pairs_per_prompt=2, **FAST), tmp_path / "v")
    v = Verifier.load(path, batch_size=3)
    prompts = [f"Write a function add (P{k})" for k in range(5)]
    responses = [GOOD, BAD, GOOD + "\n# a longer tail " * 3, BAD, "short"]
    batched = v.score(prompts, responses)
    single = [v.score([p], [r])[0] for p, r in zip(prompts, responses)]
    assert batched == pytest.approx(single, abs=1e-4)
    # a progress bar (a relabel stage scores for an hour) counts every program, scores unchanged
    assert v.score(prompts, responses, progress="scoring") == batched
    err = capsys.readouterr().err
    assert "scoring" in err and "5/5" in err
    assert v.score([], []) == []
    with pytest.raises(ValueError):
        v.score(["a"], [])
    # the scored input is what TRL's RewardTrainer trains on: [user: prompt, assistant: response]
    ids = v.encode("P", "R")
    text = v.tokenizer.decode(ids)
    assert "P" in text and text.rstrip().endswith("<|im_end|>")


def test_inputs_sharing_a_prompt_score_as_whole_inputs_do(tiny_model_dir, tmp_path):
    """Best-of-N and relabelling score many responses of one prompt: the prompt's keys and
    values are computed once, and every score matches running the input whole."""
    path = train_verifier(_toy_data(), tiny_model_dir, VerifierConfig(pairs_per_prompt=2, **FAST), tmp_path / "v")
    shared, whole = Verifier.load(path, batch_size=2), Verifier.load(path, batch_size=2)
    whole.share_prefix = False
    long_prompt = "Write a function add that returns the sum of two numbers a and b (P7). " * 3
    prompts = [long_prompt] * 5 + ["Write a function add (P1)"] + [long_prompt + "!"] * 2
    responses = [GOOD, BAD, GOOD + "\n# a longer tail " * 3, "short", GOOD, BAD, GOOD, BAD]
    calls = []
    original = shared.model.forward
    shared.model.forward = lambda *a, **k: calls.append(k["input_ids"].shape) or original(*a, **k)
    got = shared.score(prompts, responses)
    assert got == pytest.approx(whole.score(prompts, responses), abs=1e-4)
    assert got[1] != pytest.approx(got[0], abs=1e-4)  # responses still decide
    # the 5 inputs of the long prompt ran their responses only: no call is as wide as a whole input
    widest = max(len(shared.encode(p, r)) for p, r in zip(prompts[:5], responses[:5]))
    assert calls and len(calls) == 3 + 1 + 1  # long prompt: 3 batches of <= 2; P7!: 1; P1 alone: 1
    assert all(c[1] < widest for c in calls[:3])
    assert shared._shared_prefix([shared.encode(prompts[0], r) for r in responses[:5]]) > 16


def test_untrainable_data_saves_an_untrained_scorer(tiny_model_dir, tmp_path):
    data = [traj("A", turn("bad", False))]
    path = train_verifier(data, tiny_model_dir, VerifierConfig(**FAST), tmp_path / "v")
    assert read_train_stats(path)["trained"] is False
    v = Verifier.load(path, batch_size=5)
    assert len(v.score(["x"], ["y"])) == 1
    # it travels (to Ray actors) as its path and is loaded there: same scores, same batch size
    import pickle

    copy = pickle.loads(pickle.dumps(v.score))
    assert copy(["x", "z"], ["y", "w"]) == v.score(["x", "z"], ["y", "w"]) and copy.__self__.batch_size == 5
    with pytest.raises(TypeError, match="path"):
        pickle.dumps(Verifier(v.model, v.tokenizer))


def test_config_validation():
    with pytest.raises(ValueError, match="loss"):
        VerifierConfig(loss="mse")
    with pytest.raises(ValueError, match="pairs_per_prompt"):
        VerifierConfig(pairs_per_prompt=0)
    assert VerifierConfig(batch_size=64, per_device_batch_size=8).gradient_accumulation_steps == 8


@pytest.mark.parametrize("loss", ["bt", "bce"])
def test_a_verifier_training_killed_mid_run_resumes_to_the_same_weights(tiny_model_dir, tmp_path, training_steps, loss):
    from safetensors.torch import load_file

    # BT: 4 prompts x 4 pairs = 16 pairs, BCE: 16 labels; micro-batches of 2, batches of 4: 4 steps an epoch, 8 in all
    cfg = VerifierConfig(loss=loss, pairs_per_prompt=4, **{**FAST, "epochs": 2, "batch_size": 4,
                                                            "per_device_batch_size": 2, "lr_scheduler_type": "linear",
                                                            "checkpoint_steps": 3})
    whole = train_verifier(_toy_data(), tiny_model_dir, cfg, tmp_path / "whole")
    assert read_train_stats(whole)["global_steps"] == 8 and not (tmp_path / "whole.checkpoints").exists()
    training_steps.update(calls=0, kill_at=9)  # micro-batch 9 is the first of optimizer step 5
    with pytest.raises(KeyboardInterrupt):
        train_verifier(_toy_data(), tiny_model_dir, cfg, tmp_path / "v")
    assert not (tmp_path / "v").exists() and (tmp_path / "v.checkpoints" / "checkpoint-3").is_dir()
    training_steps.update(calls=0, kill_at=None)
    resumed = train_verifier(_toy_data(), tiny_model_dir, cfg, tmp_path / "v")
    assert training_steps["calls"] == 2 * (8 - 3) and read_train_stats(resumed)["resumed_from_step"] == 3
    # the resumed process counts the tokens of the 5 steps it trained, not the whole run's 8
    assert read_train_stats(resumed)["train_tokens"] == pytest.approx(read_train_stats(whole)["train_tokens"] * 5 / 8)
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-6, msg=name)
    assert not (tmp_path / "v.checkpoints").exists()
    with pytest.raises(ValueError, match="checkpoint_steps"):
        VerifierConfig(checkpoint_steps=0)
