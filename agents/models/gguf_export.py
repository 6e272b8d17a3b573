"""Export a Hugging Face causal LM (Qwen2 or Llama) to a GGUF file that llama.cpp loads.

llama.cpp's own converter (``convert_hf_to_gguf.py``) is not installable from PyPI, so this is a
small converter for the two architectures our models use, built on the ``gguf`` package:

- **metadata**: with ``template_gguf`` (the GGUF of the base model that was fine-tuned) every
  key/value of the template is copied (hyperparameters, tokenizer vocabulary, scores, token types,
  merges, special ids, chat template) and only the tensors are replaced; without one, it is built
  from ``config.json`` and ``tokenizer.json``/``tokenizer_config.json`` (a GPT-2 style byte-level
  BPE, as in Qwen2 and SmolLM2);
- **tensors**: HF names are mapped to GGUF names; for the Llama architecture the ``q_proj`` and
  ``k_proj`` rows are permuted as llama.cpp's converter does (its rotary embedding pairs adjacent
  dimensions where HF pairs the two halves of each head); Qwen2 is stored as is;
- **types**: ``f32``, ``f16`` or ``q8_0`` for the 2-D weights (1-D norms and biases stay f32, a
  matrix whose rows are not a multiple of 32 falls back to f16 under ``q8_0``).

The file is streamed tensor by tensor (peak memory: one tensor) into a temporary file renamed at
the end.

>>> from agents.models.gguf_export import export_for_llama_cpp
>>> export_for_llama_cpp("runs/mucode/iter1/generator", "qwen2.5-coder-0.5b")  # doctest: +SKIP
PosixPath('runs/mucode/iter1/generator/model-q8_0.gguf')
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mucode_env.atomic import atomic_path

__all__ = ["DTYPES", "SUPPORTED_ARCHS", "export_gguf", "export_for_llama_cpp", "gguf_tensor_name"]

logger = logging.getLogger(__name__)

SUPPORTED_ARCHS = ("llama", "qwen2")
DTYPES = ("f32", "f16", "q8_0")

# keys that are not model weights (rotary caches of old checkpoints)
_IGNORED = re.compile(r"(rotary_emb\.inv_freq|\.masked_bias|\.attn\.bias)$")


# ----------------------------------------------------------------------------- reading HF weights


class _HFWeights:
    """Lazy access to a checkpoint's tensors (safetensors, sharded or not; else pytorch_model*.bin)."""

    def __init__(self, model_dir: Path) -> None:
        self.dir = model_dir
        self._files: dict[str, Path] = {}
        self._bin: dict[str, Any] | None = None
        index = model_dir / "model.safetensors.index.json"
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
            self._files = {k: model_dir / v for k, v in weight_map.items()}
        elif (model_dir / "model.safetensors").is_file():
            from safetensors import safe_open

            f = model_dir / "model.safetensors"
            with safe_open(str(f), framework="pt") as fh:
                self._files = {k: f for k in fh.keys()}
        else:
            bins = sorted(model_dir.glob("pytorch_model*.bin"))
            if not bins:
                raise FileNotFoundError(f"{model_dir} has no model.safetensors(.index.json) or pytorch_model*.bin")
            import torch

            self._bin = {}
            for b in bins:
                self._bin.update(torch.load(b, map_location="cpu", weights_only=True))
        self.names = {self._canonical(k): k for k in (self._bin if self._bin is not None else self._files)}

    @staticmethod
    def _canonical(name: str) -> str:
        for prefix in ("base_model.model.", "_orig_mod."):
            if name.startswith(prefix):
                name = name[len(prefix):]
        return name

    def get(self, name: str) -> np.ndarray:
        """The tensor ``name`` (canonical HF name) as float32 numpy."""
        raw = self.names[name]
        if self._bin is not None:
            t = self._bin[raw]
        else:
            from safetensors import safe_open

            with safe_open(str(self._files[raw]), framework="pt") as fh:
                t = fh.get_tensor(raw)
        return t.detach().float().cpu().numpy()


# ----------------------------------------------------------------------------- config


def _read_config(model_dir: Path) -> dict[str, Any]:
    cfg_file = model_dir / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{model_dir} has no config.json: not a Hugging Face checkpoint directory")
    cfg = json.loads(cfg_file.read_text())
    arch = cfg.get("model_type")
    if arch not in SUPPORTED_ARCHS:
        raise NotImplementedError(f"GGUF export supports model_type {SUPPORTED_ARCHS}, got {arch!r} ({model_dir})")
    return cfg


def _rope_theta(cfg: dict[str, Any]) -> float:
    params = cfg.get("rope_parameters") or {}
    return float(params.get("rope_theta", cfg.get("rope_theta", 10000.0)))


def _rope_scaling(cfg: dict[str, Any]) -> dict[str, Any] | None:
    params = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    kind = params.get("rope_type", params.get("type", "default"))
    return None if kind in (None, "default") else params


def _heads(cfg: dict[str, Any]) -> tuple[int, int, int]:
    n_head = int(cfg["num_attention_heads"])
    n_kv = int(cfg.get("num_key_value_heads") or n_head)
    head_dim = int(cfg.get("head_dim") or cfg["hidden_size"] // n_head)
    return n_head, n_kv, head_dim


def llama_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's ``permute`` of q/k rows: per head, interleave the two rotary halves."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


# ----------------------------------------------------------------------------- metadata


def _field_value(field) -> Any:
    return field.contents()


def _template_kv(template: Path) -> tuple[list[tuple[str, Any, Any, Any]], set[str], str]:
    """(key, value, type, subtype) of every template field but GGUF.* and the architecture."""
    import gguf

    reader = gguf.GGUFReader(str(template))
    arch = reader.fields["general.architecture"].contents()
    kv = []
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == gguf.Keys.General.ARCHITECTURE:
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        kv.append((field.name, _field_value(field), vtype, sub))
    tensor_names = {t.name for t in reader.tensors}
    del reader
    return kv, tensor_names, arch


def _load_tokenizer(model_dir: Path):
    """The tokenizer as transformers runs it and its ``tokenizers`` JSON.

    transformers rebuilds some tokenizers by model type (a Qwen2 checkpoint gets Qwen2's
    pre-tokenizer whatever ``tokenizer.json`` says), so the GGUF describes the loaded one.
    """
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(model_dir))
    except (OSError, ValueError) as exc:
        raise FileNotFoundError(f"{model_dir} has no loadable tokenizer: without a template GGUF the export "
                                f"needs the checkpoint's (BPE) tokenizer: {exc}") from exc
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        raise NotImplementedError(f"GGUF export without a template needs a fast tokenizer; {model_dir} has "
                                  f"{type(tok).__name__}")
    return tok, json.loads(backend.to_str())


_QWEN2_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"


def _pre_tokenizer_name(tok_json: dict) -> str:
    """llama.cpp's ``tokenizer.ggml.pre`` for a byte-level BPE's pre-tokenizer (GPT-2, Qwen2, SmolLM)."""
    pre = tok_json.get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"
    parts = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else []
    kinds = [p.get("type") for p in parts]
    patterns = [(p.get("pattern") or {}).get("Regex") for p in parts if p.get("type") == "Split"]
    if _QWEN2_SPLIT in patterns:
        return "qwen2"
    if kinds[:1] == ["Digits"] and "ByteLevel" in kinds:
        return "smollm"
    logger.warning("unrecognised pre-tokenizer %s: llama.cpp will use its default BPE pre-tokenizer", kinds or pre)
    return "default"


def _tokenizer_kv(model_dir: Path, cfg: dict[str, Any], n_vocab: int) -> list[tuple[str, Any, Any, Any]]:
    import gguf

    T = gguf.GGUFValueType
    tok, tok_json = _load_tokenizer(model_dir)
    model = tok_json.get("model") or {}
    if model.get("type") != "BPE":
        raise NotImplementedError(f"GGUF export without a template supports BPE tokenizers, got {model.get('type')!r}")
    vocab: dict[str, int] = dict(model["vocab"])
    added = {a["content"]: a for a in tok_json.get("added_tokens", [])}
    for content, a in added.items():
        vocab[content] = a["id"]
    if max(vocab.values()) >= n_vocab:
        raise ValueError(f"tokenizer has ids up to {max(vocab.values())} but the embedding has {n_vocab} rows")
    tokens = [f"[PAD{i}]" for i in range(n_vocab)]
    types = [gguf.TokenType.UNUSED] * n_vocab
    for text, i in vocab.items():
        tokens[i] = text
        if text in added:
            types[i] = gguf.TokenType.CONTROL if added[text].get("special") else gguf.TokenType.USER_DEFINED
        else:
            types[i] = gguf.TokenType.NORMAL
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]

    kv: list[tuple[str, Any, Any, Any]] = [
        ("tokenizer.ggml.model", "gpt2", T.STRING, None),
        ("tokenizer.ggml.pre", _pre_tokenizer_name(tok_json), T.STRING, None),
        ("tokenizer.ggml.tokens", tokens, T.ARRAY, T.STRING),
        ("tokenizer.ggml.token_type", [int(t) for t in types], T.ARRAY, T.INT32),
        ("tokenizer.ggml.merges", merges, T.ARRAY, T.STRING),
    ]
    ids = {"bos": tok.bos_token_id, "eos": tok.eos_token_id, "unknown": tok.unk_token_id, "padding": tok.pad_token_id}
    if ids["eos"] is None and isinstance(cfg.get("eos_token_id"), int):
        ids["eos"] = cfg["eos_token_id"]
    probe = tok("a")["input_ids"]
    add_bos = ids["bos"] is not None and probe[:1] == [ids["bos"]]
    add_eos = ids["eos"] is not None and probe[-1:] == [ids["eos"]]
    if ids["bos"] is None and ids["padding"] is not None:
        ids["bos"] = ids["padding"]  # Qwen2's convention (bos = <|endoftext|>, never added)
    for k, v in ids.items():
        if v is not None:
            kv.append((f"tokenizer.ggml.{k}_token_id", int(v), T.UINT32, None))
    kv.append(("tokenizer.ggml.add_bos_token", add_bos, T.BOOL, None))
    kv.append(("tokenizer.ggml.add_eos_token", add_eos, T.BOOL, None))
    template = tok.chat_template
    if isinstance(template, dict):  # named templates
        template = template.get("default") or next(iter(template.values()), None)
    if template:
        kv.append(("tokenizer.chat_template", template, T.STRING, None))
    return kv


def _config_kv(cfg: dict[str, Any], arch: str, n_vocab: int, model_dir: Path) -> list[tuple[str, Any, Any, Any]]:
    import gguf

    T = gguf.GGUFValueType
    n_head, n_kv, head_dim = _heads(cfg)
    kv: list[tuple[str, Any, Any, Any]] = [
        ("general.type", "model", T.STRING, None),
        ("general.name", model_dir.name, T.STRING, None),
        (f"{arch}.block_count", int(cfg["num_hidden_layers"]), T.UINT32, None),
        (f"{arch}.context_length", int(cfg.get("max_position_embeddings", 4096)), T.UINT32, None),
        (f"{arch}.embedding_length", int(cfg["hidden_size"]), T.UINT32, None),
        (f"{arch}.feed_forward_length", int(cfg["intermediate_size"]), T.UINT32, None),
        (f"{arch}.attention.head_count", n_head, T.UINT32, None),
        (f"{arch}.attention.head_count_kv", n_kv, T.UINT32, None),
        (f"{arch}.rope.freq_base", _rope_theta(cfg), T.FLOAT32, None),
        (f"{arch}.attention.layer_norm_rms_epsilon", float(cfg.get("rms_norm_eps", 1e-6)), T.FLOAT32, None),
        (f"{arch}.vocab_size", n_vocab, T.UINT32, None),
        (f"{arch}.rope.dimension_count", head_dim, T.UINT32, None),
    ]
    if head_dim != int(cfg["hidden_size"]) // n_head:
        kv += [(f"{arch}.attention.key_length", head_dim, T.UINT32, None),
               (f"{arch}.attention.value_length", head_dim, T.UINT32, None)]
    scaling = _rope_scaling(cfg)
    if scaling is not None:
        kind = scaling.get("rope_type", scaling.get("type"))
        if kind != "linear":
            raise NotImplementedError(f"GGUF export without a template: rope scaling {kind!r} is not supported")
        kv += [(f"{arch}.rope.scaling.type", "linear", T.STRING, None),
               (f"{arch}.rope.scaling.factor", float(scaling["factor"]), T.FLOAT32, None)]
    return kv


# ----------------------------------------------------------------------------- tensors


def gguf_tensor_name(hf_name: str, arch: str, n_layer: int) -> str | None:
    """llama.cpp's name of a Hugging Face tensor (``model.layers.3.self_attn.q_proj.weight`` ->
    ``blk.3.attn_q.weight``), from the ``gguf`` package's own tables; None when it has none."""
    import gguf

    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], n_layer)
    return name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))


def _plan(weights: _HFWeights, cfg: dict[str, Any], want_output: bool | None) -> list[tuple[str, str]]:
    """(gguf name, hf name) of every tensor to write, in llama.cpp's usual order."""
    plan: list[tuple[str, str]] = [("token_embd.weight", "model.embed_tokens.weight")]
    n_layer = int(cfg["num_hidden_layers"])
    per_layer: dict[int, list[tuple[str, str]]] = {i: [] for i in range(n_layer)}
    unknown = []
    for name in sorted(weights.names):
        if name in ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight") or _IGNORED.search(name):
            continue
        gguf_name = gguf_tensor_name(name, cfg["model_type"], n_layer)
        if gguf_name is not None and gguf_name.startswith("blk."):
            per_layer[int(gguf_name.split(".")[1])].append((gguf_name, name))
        else:
            unknown.append(name)
    if unknown:
        raise NotImplementedError(f"GGUF export: no GGUF name for tensors {unknown[:5]} (+{max(0, len(unknown) - 5)})")
    for i in range(n_layer):
        plan += per_layer[i]
    plan.append(("output_norm.weight", "model.norm.weight"))
    has_head = "lm_head.weight" in weights.names
    if want_output is None:  # no template: as the checkpoint says
        want_output = has_head and not cfg.get("tie_word_embeddings", False)
    if want_output:
        plan.append(("output.weight", "lm_head.weight" if has_head else "model.embed_tokens.weight"))
    elif has_head and not cfg.get("tie_word_embeddings", False):
        # the template ties the head but this checkpoint has its own: keep it, llama.cpp reads it
        plan.append(("output.weight", "lm_head.weight"))
    for _, hf in plan:
        if hf not in weights.names:
            raise KeyError(f"checkpoint {weights.dir} has no tensor {hf!r}")
    return plan


def _ggml_type(gguf_name: str, shape: tuple[int, ...], dtype: str):
    import gguf

    Q = gguf.GGMLQuantizationType
    if len(shape) < 2 or dtype == "f32":
        return Q.F32
    if dtype == "q8_0" and shape[-1] % gguf.GGML_QUANT_SIZES[Q.Q8_0][0] == 0:
        return Q.Q8_0
    return Q.F16


def _nbytes(shape: tuple[int, ...], qtype) -> tuple[tuple[int, ...], int]:
    """(numpy byte/element shape as stored, nbytes)."""
    import gguf

    Q = gguf.GGMLQuantizationType
    n = int(np.prod(shape))
    if qtype == Q.F32:
        return shape, 4 * n
    if qtype == Q.F16:
        return shape, 2 * n
    byte_shape = gguf.quants.quant_shape_to_byte_shape(shape, qtype)
    return tuple(byte_shape), int(np.prod(byte_shape))


def _shape_of(weights: _HFWeights, hf_name: str) -> tuple[int, ...]:
    raw = weights.names[hf_name]
    if weights._bin is not None:
        return tuple(weights._bin[raw].shape)
    from safetensors import safe_open

    with safe_open(str(weights._files[raw]), framework="pt") as fh:
        return tuple(fh.get_slice(raw).get_shape())


def _tensor_data(weights: _HFWeights, gguf_name: str, hf_name: str, arch: str, cfg: dict[str, Any],
                 qtype, permute: bool) -> np.ndarray:
    import gguf

    Q = gguf.GGMLQuantizationType
    w = weights.get(hf_name)
    if permute and arch == "llama":
        n_head, n_kv, _ = _heads(cfg)
        if gguf_name.endswith(("attn_q.weight", "attn_q.bias")):
            w = llama_permute(w, n_head)
        elif gguf_name.endswith(("attn_k.weight", "attn_k.bias")):
            w = llama_permute(w, n_kv)
    w = np.ascontiguousarray(w, dtype=np.float32)
    if qtype == Q.F32:
        return w
    if qtype == Q.F16:
        return w.astype(np.float16)
    return gguf.quants.quantize(w, qtype)


# ----------------------------------------------------------------------------- export


@contextlib.contextmanager
def gguf_writer(out: Path, arch: str) -> Iterator[Any]:
    """A ``gguf.GGUFWriter`` on a temporary sibling of ``out``, renamed over it when the block
    succeeds and removed when it raises: a GGUF file is either whole or absent."""
    import gguf

    with atomic_path(out) as tmp:
        writer = gguf.GGUFWriter(str(tmp), arch)
        yield writer
        writer.close()


def export_gguf(
    hf_model_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    template_gguf: str | os.PathLike | None = None,
    dtype: str = "f16",
) -> Path:
    """Write ``hf_model_dir`` (a Qwen2 or Llama ``save_pretrained`` checkpoint) as a GGUF file.

    Args:
        hf_model_dir: checkpoint directory (``config.json`` + safetensors; a tokenizer is needed
            only without a template).
        out_path: the GGUF file to write (atomically: a temporary sibling renamed at the end).
        template_gguf: the base model's GGUF whose metadata (hyperparameters, tokenizer, chat
            template) is copied; ``None``: built from the checkpoint's config and tokenizer.
        dtype: ``"f32"``, ``"f16"`` or ``"q8_0"`` for the matrices (norms and biases stay f32).

    Returns:
        ``Path(out_path)``.

    Raises:
        NotImplementedError: another architecture, a non-BPE tokenizer without template, an
            unmapped tensor.
        ValueError: a bad ``dtype``, or a template that does not match the checkpoint
            (architecture, layers, width, vocabulary).
    """
    return _export(hf_model_dir, out_path, template_gguf, dtype)


def _export(hf_model_dir, out_path, template_gguf=None, dtype="f16", *, permute: bool = True) -> Path:
    """:func:`export_gguf`; ``permute=False`` skips the Llama q/k permutation (tests prove it is needed)."""
    import gguf

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    src = Path(hf_model_dir)
    out = Path(out_path)
    cfg = _read_config(src)
    arch = cfg["model_type"]
    weights = _HFWeights(src)
    emb_shape = _shape_of(weights, "model.embed_tokens.weight")
    n_vocab = emb_shape[0]

    T = gguf.GGUFValueType
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[dtype]
    if template_gguf is not None:
        kv, template_tensors, t_arch = _template_kv(Path(template_gguf))
        values = {k: v for k, v, _, _ in kv}
        expected = {
            "architecture": (t_arch, arch),
            "block_count": (values.get(f"{t_arch}.block_count"), cfg["num_hidden_layers"]),
            "embedding_length": (values.get(f"{t_arch}.embedding_length"), cfg["hidden_size"]),
            "vocabulary": (len(values.get("tokenizer.ggml.tokens", ())), n_vocab),
        }
        bad = {k: v for k, v in expected.items() if v[0] != v[1]}
        if bad:
            raise ValueError(
                f"template {template_gguf} does not match checkpoint {src}: "
                + ", ".join(f"{k} {a!r} (template) vs {b!r} (checkpoint)" for k, (a, b) in bad.items())
            )
        want_output = "output.weight" in template_tensors
        kv = [(k, v, t, s) for k, v, t, s in kv if k not in ("general.file_type", "general.quantization_version")]
    else:
        kv = _config_kv(cfg, arch, n_vocab, src) + _tokenizer_kv(src, cfg, n_vocab)
        want_output = None
    kv += [("general.file_type", int(file_type), T.UINT32, None),
           ("general.quantization_version", gguf.GGML_QUANT_VERSION, T.UINT32, None)]

    plan = _plan(weights, cfg, want_output)
    with gguf_writer(out, arch) as writer:
        for key, value, vtype, sub in kv:
            writer.add_key_value(key, value, vtype, sub_type=sub)
        infos = []
        for gguf_name, hf_name in plan:
            shape = _shape_of(weights, hf_name)
            qtype = _ggml_type(gguf_name, shape, dtype)
            stored_shape, nbytes = _nbytes(shape, qtype)
            np_dtype = {gguf.GGMLQuantizationType.F32: np.float32, gguf.GGMLQuantizationType.F16: np.float16}.get(
                qtype, np.uint8)
            writer.add_tensor_info(gguf_name, stored_shape, np.dtype(np_dtype), nbytes,
                                   raw_dtype=None if np_dtype is not np.uint8 else qtype)
            infos.append((gguf_name, hf_name, qtype, nbytes))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for gguf_name, hf_name, qtype, nbytes in infos:
            data = _tensor_data(weights, gguf_name, hf_name, arch, cfg, qtype, permute)
            if data.nbytes != nbytes:  # pragma: no cover - a bug in the size plan
                raise AssertionError(f"{gguf_name}: {data.nbytes} bytes, planned {nbytes}")
            writer.write_tensor_data(data)
    return out


def _newest_weight_mtime(model_dir: Path) -> float:
    files = [*model_dir.glob("*.safetensors"), *model_dir.glob("pytorch_model*.bin"), model_dir / "config.json"]
    return max(f.stat().st_mtime for f in files if f.is_file())


def export_for_llama_cpp(
    hf_model_dir: str | os.PathLike,
    base_model: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    *,
    dtype: str = "q8_0",
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """Export a fine-tuned checkpoint for llama.cpp rollouts, with its base model's GGUF metadata.

    Args:
        hf_model_dir: the fine-tuned checkpoint (e.g. ``run/iter1/generator``).
        base_model: what it was fine-tuned from: a registry name (``qwen2.5-coder-0.5b``), a GGUF
            file or a checkpoint directory (see :func:`agents.models.convert.find_source_gguf`); without a GGUF the
            metadata comes from the checkpoint's own config and tokenizer.
        out_dir: where ``model-<dtype>.gguf`` goes (default: ``hf_model_dir``).
        dtype: see :func:`export_gguf` (``q8_0``: about 1 byte per weight, close to fp16 quality).
        cache_dir: where registry models are assembled.

    Returns:
        The GGUF path; an existing export newer than the checkpoint's weights is reused.
    """
    src = Path(hf_model_dir)
    out = Path(out_dir if out_dir is not None else src) / f"model-{dtype}.gguf"
    if out.is_file() and out.stat().st_mtime >= _newest_weight_mtime(src):
        return out
    from agents.models.convert import find_source_gguf

    template = find_source_gguf(base_model, cache_dir)
    return export_gguf(src, out, template, dtype)

