"""agents.training.sft: completion-only fine-tuning from the base model, full and LoRA, saved atomically."""

from __future__ import annotations

import pytest
import torch

from agents.training.sft import SFTRunConfig, finetune, read_train_stats
from mucode_env.atomic import atomic_dir

torch.set_num_threads(1)

TARGET = "```python\ndef add(a, b):\n    return a + b\n```"
EXAMPLES = [
    {"prompt": [{"role": "user", "content": "Write a function add"}], "completion": [{"role": "assistant", "content": TARGET}]},
    {
        "prompt": [
            {"role": "user", "content": "Write a function add"},
            {"role": "assistant", "content": "def add(a, b): return a - b"},
            {"role": "user", "content": "Feedback:\nAssertionError"},
        ],
        "completion": [{"role": "assistant", "content": TARGET}],
    },
]


def _completion_logprob(model_dir, example) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    p = tok.apply_chat_template(example["prompt"], add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    full = tok.apply_chat_template(example["prompt"] + example["completion"], tokenize=True, return_dict=True)["input_ids"]
    ids = torch.tensor([full])
    with torch.no_grad():
        logp = model(ids).logits.log_softmax(-1)[0, :-1]
    tgt = ids[0, 1:]
    lp = logp.gather(-1, tgt[:, None])[:, 0]
    return float(lp[len(p) - 1 :].sum())


FAST = dict(learning_rate=5e-3, epochs=4, batch_size=2, per_device_batch_size=2, max_length=256, progress=False,
            warmup_ratio=0.0, lr_scheduler_type="constant")


@pytest.mark.parametrize("lora", [False, True])
def test_finetune_raises_target_likelihood(tiny_model_dir, tmp_path, lora):
    cfg = SFTRunConfig(lora=lora, lora_r=8, **FAST)
    out = finetune(tiny_model_dir, EXAMPLES, cfg, tmp_path / "gen")
    assert (out / "config.json").is_file() and (out / "tokenizer_config.json").is_file()
    assert not (out / "adapter_config.json").exists()  # LoRA is merged: a plain checkpoint
    stats = read_train_stats(out)
    assert stats["n_examples"] == 2 and stats["train_tokens"] > 0 and stats["global_steps"] >= 1
    for ex in EXAMPLES:
        assert _completion_logprob(out, ex) > _completion_logprob(tiny_model_dir, ex)
    # only the temp-free final directory remains
    assert [p.name for p in tmp_path.iterdir()] == ["gen"]


def test_finetune_drops_overlong_and_rejects_empty(tiny_model_dir, tmp_path):
    long_ex = {"prompt": [{"role": "user", "content": "x " * 400}], "completion": [{"role": "assistant", "content": "y"}]}
    out = finetune(tiny_model_dir, EXAMPLES + [long_ex], SFTRunConfig(**{**FAST, "epochs": 1}), tmp_path / "g")
    assert read_train_stats(out)["n_dropped_overlong"] == 1
    with pytest.raises(ValueError, match="at least one"):
        finetune(tiny_model_dir, [], SFTRunConfig(), tmp_path / "g2")
    with pytest.raises(ValueError, match="longer than max_length"):
        finetune(tiny_model_dir, [long_ex], SFTRunConfig(**FAST), tmp_path / "g3")
    assert not (tmp_path / "g3").exists()


def test_atomic_dir_keeps_old_on_failure(tmp_path):
    out = tmp_path / "d"
    out.mkdir()
    (out / "keep").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            (tmp / "new").write_text("2")
            raise RuntimeError("crash")
    assert [p.name for p in out.iterdir()] == ["keep"]
    assert [p.name for p in tmp_path.iterdir()] == ["d"]
    with atomic_dir(out) as tmp:
        (tmp / "new").write_text("2")
    assert [p.name for p in out.iterdir()] == ["new"]


def test_config_validation():
    with pytest.raises(ValueError):
        SFTRunConfig(learning_rate=0)
    with pytest.raises(ValueError):
        SFTRunConfig(torch_dtype="int8")
    assert SFTRunConfig(batch_size=32, per_device_batch_size=4).gradient_accumulation_steps == 8


@pytest.mark.parametrize("lora", [False, True])
def test_a_fine_tuning_killed_mid_run_resumes_from_its_checkpoint_to_the_same_weights(tiny_model_dir, tmp_path,
                                                                                       training_steps, lora):
    from safetensors.torch import load_file

    examples = EXAMPLES * 4  # 8 examples, batches of 2 (micro-batches of 1): 4 steps an epoch, 8 in all
    cfg = SFTRunConfig(**{**FAST, "epochs": 2, "per_device_batch_size": 1, "lora": lora, "lora_r": 8,
                          "lr_scheduler_type": "linear", "checkpoint_steps": 3})
    whole = finetune(tiny_model_dir, examples, cfg, tmp_path / "whole")
    assert not (tmp_path / "whole.checkpoints").exists()  # removed once the output is saved

    training_steps.update(calls=0, kill_at=9)  # micro-batch 9 is the first of optimizer step 5
    with pytest.raises(KeyboardInterrupt):
        finetune(tiny_model_dir, examples, cfg, tmp_path / "gen")
    assert not (tmp_path / "gen").exists()  # nothing half-written
    assert [p.name for p in (tmp_path / "gen.checkpoints").glob("checkpoint-*")] == ["checkpoint-3"]
    training_steps.update(calls=0, kill_at=None)
    resumed = finetune(tiny_model_dir, examples, cfg, tmp_path / "gen")
    assert training_steps["calls"] == 2 * (8 - 3)  # only the optimizer steps after the checkpoint were trained again
    stats = read_train_stats(resumed)
    assert stats["resumed_from_step"] == 3 and stats["global_steps"] == 8
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-6, msg=name)
    assert not (tmp_path / "gen.checkpoints").exists()


def test_checkpoints_of_other_examples_are_discarded_not_resumed(tiny_model_dir, tmp_path, caplog):
    cfg = SFTRunConfig(**{**FAST, "epochs": 1, "checkpoint_steps": 1})
    stale = tmp_path / "gen.checkpoints" / "checkpoint-1"
    stale.mkdir(parents=True)
    (tmp_path / "gen.checkpoints" / "identity.sha256").write_text("another run\n")
    with caplog.at_level("WARNING"):
        out = finetune(tiny_model_dir, EXAMPLES, cfg, tmp_path / "gen")
    assert "different run" in caplog.text and read_train_stats(out)["resumed_from_step"] == 0
    with pytest.raises(ValueError, match="checkpoint_steps"):
        SFTRunConfig(checkpoint_steps=0)
