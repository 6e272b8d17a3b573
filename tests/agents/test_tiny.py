"""agents.tiny: offline tiny causal LMs with a tokenizer and a chat template."""

from __future__ import annotations

import pytest
import torch

from agents.tiny import make_tiny_causal_lm

torch.set_num_threads(1)


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_tiny_model_loads_and_generates(tmp_path, arch):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    path = make_tiny_causal_lm(tmp_path / arch, arch=arch, seed=0)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.model_type == arch
    assert tok.pad_token is not None and tok.eos_token == "<|im_end|>"
    chat = [{"role": "user", "content": "Write a function add"}]
    prompt = tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    full = tok.apply_chat_template(chat + [{"role": "assistant", "content": "x"}], tokenize=False)
    assert full.startswith(prompt)
    ids = tok(prompt, return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > ids.shape[1]
    clf = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    assert clf(ids).logits.shape == (1, 1)


def test_tiny_model_is_deterministic_per_seed(tmp_path):
    from safetensors.torch import load_file

    a = load_file(str(make_tiny_causal_lm(tmp_path / "a", seed=3) / "model.safetensors"))
    b = load_file(str(make_tiny_causal_lm(tmp_path / "b", seed=3) / "model.safetensors"))
    c = load_file(str(make_tiny_causal_lm(tmp_path / "c", seed=4) / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_tiny_rejects_unknown_arch(tmp_path):
    with pytest.raises(ValueError, match="arch"):
        make_tiny_causal_lm(tmp_path / "x", arch="gpt9")
