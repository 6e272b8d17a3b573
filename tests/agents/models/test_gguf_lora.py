"""agents.models.gguf_lora: a PEFT LoRA adapter loaded by llama.cpp on top of the base GGUF gives the
logits of the merged model in transformers (Qwen2 and Llama, whose q/k rows are permuted)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

llama_cpp = pytest.importorskip("llama_cpp")
pytest.importorskip("gguf")
pytest.importorskip("peft")

from agents.models.gguf_export import export_gguf  # noqa: E402
from agents.models.gguf_lora import export_lora_gguf  # noqa: E402
from agents.tiny import make_tiny_causal_lm  # noqa: E402

torch.set_num_threads(1)
TOKENS = list(range(3, 43))
GGML_F32 = 0


def _logits(model_path, tokens, lora_path=None) -> np.ndarray:
    llm = llama_cpp.Llama(model_path=str(model_path), lora_path=str(lora_path) if lora_path else None,
                          logits_all=True, n_ctx=64, n_threads=1, n_batch=64, verbose=False,
                          type_k=GGML_F32, type_v=GGML_F32)
    try:
        llm.eval(tokens)
        return np.array(llm.scores[: len(tokens)], dtype=np.float32)
    finally:
        llm.close()


def _rel_err(got, ref) -> float:
    return float(np.abs(got - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_adapter_on_base_gguf_matches_the_merged_model(tmp_path, arch):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base_dir = make_tiny_causal_lm(tmp_path / "base", arch=arch)
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=16, target_modules="all-linear",
                                                  lora_dropout=0.0, task_type="CAUSAL_LM"))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a "trained" adapter: B is zero at init, which would prove nothing
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    peft_model.save_pretrained(tmp_path / "adapter")
    merged = peft_model.merge_and_unload()
    with torch.no_grad():
        ref = merged(torch.tensor([TOKENS])).logits[0].numpy()
        base_ref = AutoModelForCausalLM.from_pretrained(str(base_dir))(torch.tensor([TOKENS])).logits[0].numpy()
    assert _rel_err(base_ref, ref) > 0.05  # the adapter changes the model enough to be tested

    base_gguf = export_gguf(base_dir, tmp_path / "base.gguf", dtype="f32")
    adapter = export_lora_gguf(tmp_path / "adapter", tmp_path / "adapter.gguf", base_model_dir=base_dir)
    got = _logits(base_gguf, TOKENS, adapter)
    err = _rel_err(got, ref)
    assert err < 1e-4, f"{arch}: base GGUF + adapter vs merged transformers: {err:.2e}"
    assert _rel_err(_logits(base_gguf, TOKENS), base_ref) < 1e-4  # without the adapter: the base


def test_refuses_dora_and_unknown_modules(tmp_path):
    base_dir = make_tiny_causal_lm(tmp_path / "base")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps({"r": 4, "lora_alpha": 8, "use_dora": True}))
    with pytest.raises(NotImplementedError, match="DoRA"):
        export_lora_gguf(tmp_path / "a", tmp_path / "a.gguf", base_model_dir=base_dir)
    from safetensors.numpy import save_file

    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps({"r": 2, "lora_alpha": 4}))
    save_file({"base_model.model.lm_head.lora_A.weight": np.zeros((2, 64), np.float32),
               "base_model.model.lm_head.lora_B.weight": np.zeros((600, 2), np.float32)},
              str(tmp_path / "a" / "adapter_model.safetensors"))
    with pytest.raises(NotImplementedError, match="no GGUF name"):
        export_lora_gguf(tmp_path / "a", tmp_path / "a.gguf", base_model_dir=base_dir)
    with pytest.raises(ValueError, match="dtype"):
        export_lora_gguf(tmp_path / "a", tmp_path / "a.gguf", base_model_dir=base_dir, dtype="q8_0")
