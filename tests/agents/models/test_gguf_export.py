"""agents.models.gguf_export: HF checkpoints -> GGUF that llama.cpp runs with the same logits.

The real check is numerical: a tiny random model of each architecture is exported, evaluated by
llama.cpp on a token sequence and compared with transformers' logits. The tiny models' q/k
projections are scaled up (and Qwen2's q/k biases randomised) so attention is sharp: with the
default 0.02 init attention is nearly uniform and a wrong q/k permutation would go unnoticed (the
negative control below shows it does not). llama.cpp runs with an f32 KV cache so f32 exports can
be held to a tight tolerance (its default f16 cache alone costs ~1e-4 relative).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("gguf")
llama_cpp = pytest.importorskip("llama_cpp")

from agents.models.convert import find_source_gguf, hf_checkpoint  # noqa: E402
from agents.models.gguf_export import _export, export_for_llama_cpp, export_gguf  # noqa: E402
from agents.tiny import make_tiny_causal_lm  # noqa: E402

TOKENS = list(range(3, 43))  # 40 ordinary tokens of the tiny BPE
GGML_F32 = 0


def _llama(path, n_ctx=64, **kw):
    return llama_cpp.Llama(model_path=str(path), logits_all=True, n_ctx=n_ctx, n_threads=1, n_batch=64,
                           verbose=False, type_k=GGML_F32, type_v=GGML_F32, **kw)


def _cpp_logits(path, tokens) -> np.ndarray:
    llm = _llama(path)
    try:
        llm.eval(tokens)
        return np.array(llm.scores[: len(tokens)], dtype=np.float32)
    finally:
        llm.close()


def _hf_logits(model_dir, tokens) -> np.ndarray:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    with torch.no_grad():
        return model(torch.tensor([tokens])).logits[0].numpy()


def _rel_err(got, ref) -> float:
    return float(np.abs(got - ref).max() / np.abs(ref).max())


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def tiny(request, tmp_path_factory):
    """(arch, plain tiny dir, sharp tiny dir, transformers logits of both on TOKENS)."""
    from transformers import AutoModelForCausalLM

    arch = request.param
    root = tmp_path_factory.mktemp(f"gguf-{arch}")
    plain = make_tiny_causal_lm(root / "plain", arch=arch)
    model = AutoModelForCausalLM.from_pretrained(str(plain), dtype=torch.float32)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in model.model.layers:
            attn = layer.self_attn
            attn.q_proj.weight.mul_(30.0)
            attn.k_proj.weight.mul_(30.0)
            if attn.q_proj.bias is not None:
                attn.q_proj.bias.copy_(torch.randn(attn.q_proj.bias.shape, generator=gen))
                attn.k_proj.bias.copy_(torch.randn(attn.k_proj.bias.shape, generator=gen))
    sharp = root / "sharp"
    model.save_pretrained(sharp)
    for f in plain.iterdir():
        if f.name.startswith("tokenizer") or f.name == "chat_template.jinja":
            shutil.copy(f, sharp / f.name)
    return arch, plain, sharp, _hf_logits(plain, TOKENS), _hf_logits(sharp, TOKENS)


@pytest.mark.parametrize("dtype,tol", [("f32", 1e-4), ("f16", 3e-2)])
def test_logits_match_transformers(tiny, tmp_path, dtype, tol):
    arch, _, sharp, _, ref = tiny
    out = export_gguf(sharp, tmp_path / f"{arch}-{dtype}.gguf", dtype=dtype)
    got = _cpp_logits(out, TOKENS)
    assert got.shape == ref.shape
    err = _rel_err(got, ref)
    assert err < tol, f"{arch} {dtype}: max |llama.cpp - transformers| / max |logit| = {err:.2e}"
    assert (got.argmax(-1) == ref.argmax(-1)).mean() >= 0.9
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary file left behind


def test_q8_0_logits_close(tiny, tmp_path):
    arch, plain, _, ref, _ = tiny
    out = export_gguf(plain, tmp_path / f"{arch}-q8_0.gguf", dtype="q8_0")
    import gguf

    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(out)).tensors}
    assert types["blk.0.attn_q.weight"] == "Q8_0" and types["token_embd.weight"] == "Q8_0"
    assert types["blk.0.attn_norm.weight"] == "F32" and types["output_norm.weight"] == "F32"
    got = _cpp_logits(out, TOKENS)
    assert _rel_err(got, ref) < 3e-2
    assert (got.argmax(-1) == ref.argmax(-1)).mean() >= 0.9


def test_llama_needs_the_qk_permutation(tiny, tmp_path):
    """Negative control: without llama.cpp's q/k permutation a Llama export is wrong, Qwen2 is not."""
    arch, _, sharp, _, ref = tiny
    err = _rel_err(_cpp_logits(_export(sharp, tmp_path / "noperm.gguf", None, "f32", permute=False), TOKENS), ref)
    if arch == "llama":
        assert err > 0.1, f"the test model is not sensitive to the permutation (err {err:.2e})"
    else:
        assert err < 1e-4


def test_metadata_tokenizer_and_template_roundtrip(tiny, tmp_path):
    from transformers import AutoTokenizer

    arch, plain, _, ref, _ = tiny
    first = export_gguf(plain, tmp_path / "first.gguf", dtype="f32")
    tok = AutoTokenizer.from_pretrained(str(plain))
    llm = _llama(first)
    try:
        md = llm.metadata
        assert md["general.architecture"] == arch
        assert md["tokenizer.chat_template"] == tok.chat_template
        assert int(md["tokenizer.ggml.eos_token_id"]) == tok.eos_token_id
        text = "def add(a, b):\n    return a + b  # 12 sums\n<|im_end|>\nThe quick brown fox."
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == tok(text)["input_ids"]
        assert llm.n_vocab() == len(tok)
    finally:
        llm.close()

    # with a template: its key/values are copied, only the tensors (and file type) change
    second = export_gguf(plain, tmp_path / "second.gguf", template_gguf=first, dtype="f16")
    import gguf

    a, b = gguf.GGUFReader(str(first)), gguf.GGUFReader(str(second))
    keys_a = {k: f.contents() for k, f in a.fields.items() if not k.startswith("GGUF.") and k != "general.file_type"}
    keys_b = {k: f.contents() for k, f in b.fields.items() if not k.startswith("GGUF.") and k != "general.file_type"}
    assert keys_a == keys_b
    assert a.fields["general.file_type"].contents() == 0 and b.fields["general.file_type"].contents() == 1
    assert [t.name for t in a.tensors] == [t.name for t in b.tensors]
    assert "output.weight" not in {t.name for t in a.tensors}  # tied embeddings: llama.cpp reuses token_embd
    assert _rel_err(_cpp_logits(second, TOKENS), ref) < 3e-2


def test_errors(tiny, tmp_path):
    arch, plain, _, _, _ = tiny
    with pytest.raises(ValueError, match="dtype"):
        export_gguf(plain, tmp_path / "x.gguf", dtype="q4_0")
    cfg = json.loads((plain / "config.json").read_text())
    bad = tmp_path / "bad"
    shutil.copytree(plain, bad)
    (bad / "config.json").write_text(json.dumps({**cfg, "model_type": "gpt2"}))
    with pytest.raises(NotImplementedError, match="model_type"):
        export_gguf(bad, tmp_path / "x.gguf")
    template = export_gguf(plain, tmp_path / "templates" / "t.gguf", dtype="f32")
    other = {"llama": "qwen2", "qwen2": "llama"}[arch]
    (bad / "config.json").write_text(json.dumps({**cfg, "model_type": other}))
    with pytest.raises(ValueError, match="does not match"):  # refused before anything is written
        export_gguf(bad, tmp_path / "x.gguf", template_gguf=template)
    assert not list(tmp_path.glob("*.gguf")) and not list(tmp_path.glob(".*tmp"))


@pytest.fixture(scope="module")
def smollm2_gguf_or_none():
    from agents.models import ModelNotInstalledError, resolve_model

    try:
        return Path(resolve_model("smollm2-135m").path)
    except ModelNotInstalledError:
        return None


def test_export_for_llama_cpp_reuses_and_finds_templates(tiny, tmp_path, smollm2_gguf_or_none):
    arch, plain, _, _, _ = tiny
    gen = tmp_path / "generator"
    shutil.copytree(plain, gen)
    out = export_for_llama_cpp(gen, str(plain), dtype="q8_0")
    assert out == gen / "model-q8_0.gguf" and out.is_file()
    mtime = out.stat().st_mtime_ns
    assert export_for_llama_cpp(gen, str(plain), dtype="q8_0").stat().st_mtime_ns == mtime  # reused
    assert find_source_gguf(str(plain)) is None and find_source_gguf(None) is None
    assert find_source_gguf(out) == out
    (gen / "source.json").write_text(json.dumps({"gguf": str(out)}))  # as agents.models.convert.gguf_to_hf writes
    assert find_source_gguf(gen) == out
    if smollm2_gguf_or_none is not None:
        assert find_source_gguf("smollm2-135m") == smollm2_gguf_or_none


# ----------------------------------------------------------------------------- a real model


def _greedy_cpp(path, prompt_ids, n, n_threads=1):
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=512, n_threads=n_threads, n_threads_batch=n_threads,
                          verbose=False)
    try:
        out = []
        t0 = time.perf_counter()
        for tok in llm.generate(prompt_ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0):
            out.append(tok)
            if len(out) == n:
                break
        return out, n / (time.perf_counter() - t0)
    finally:
        llm.close()


@pytest.mark.slow
def test_smollm2_roundtrip_q8_0(tmp_path, smollm2_gguf_or_none, capsys):
    """Dequantised SmolLM2 (Llama arch, Q4_1 GGUF) -> HF -> q8_0 GGUF with the original as template."""
    if smollm2_gguf_or_none is None:
        pytest.skip("smollm2-135m is not installed")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = hf_checkpoint("smollm2-135m")
    t0 = time.perf_counter()
    out = export_for_llama_cpp(hf, "smollm2-135m", tmp_path, dtype="q8_0")
    export_s = time.perf_counter() - t0

    tok = AutoTokenizer.from_pretrained(hf)
    chat = [{"role": "user", "content": "Write a Python function that adds two numbers."}]
    ids = tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32)
    with torch.no_grad():
        hf_out = model.generate(torch.tensor([ids]), max_new_tokens=10, do_sample=False)[0, len(ids):].tolist()
    del model
    cpp_out, _ = _greedy_cpp(out, ids, 10)
    assert cpp_out == hf_out, (tok.decode(cpp_out), tok.decode(hf_out))

    n = 64
    _, new_tps = _greedy_cpp(out, ids, n)
    _, orig_tps = _greedy_cpp(smollm2_gguf_or_none, ids, n)
    with capsys.disabled():
        print(f"\nSmolLM2-135M: export {export_s:.1f}s; q8_0 {out.stat().st_size / 1e6:.1f} MB at {new_tps:.1f} tok/s, "
              f"original Q4_1 {smollm2_gguf_or_none.stat().st_size / 1e6:.1f} MB at {orig_tps:.1f} tok/s "
              f"(1 thread, {n} greedy tokens)")
