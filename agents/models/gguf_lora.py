"""Export a PEFT LoRA adapter to llama.cpp's adapter GGUF (the alternative to merging).

A fine-tuned generator can reach llama.cpp two ways: merge the adapter and export the whole model
(:func:`agents.models.gguf_export.export_for_llama_cpp`, what the trainer does), or load the base GGUF
plus a small adapter file at run time (``Llama(model_path=base, lora_path=adapter)``).
``benchmarks/finetuned_generator_path.py`` measures both; this module makes the second possible.

The file follows llama.cpp's ``convert_lora_to_gguf.py`` conventions: ``general.type = adapter``,
``adapter.type = lora``, ``adapter.lora.alpha``, and for each adapted weight ``W`` (GGUF name,
e.g. ``blk.0.attn_q.weight``) the tensors ``W.lora_a`` (r x in) and ``W.lora_b`` (out x r).
llama.cpp scales the product by ``alpha / r``, as PEFT does.

>>> export_lora_gguf("runs/x/adapter", "runs/x/adapter.gguf")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import numpy as np

from agents.models.gguf_export import (
    SUPPORTED_ARCHS,
    _heads,
    _read_config,
    gguf_writer,
    gguf_tensor_name,
    llama_permute,
)

__all__ = ["export_lora_gguf"]

_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(.+)\.lora_([AB])(?:\.default)?\.weight$")


def export_lora_gguf(adapter_dir: str | os.PathLike, out_path: str | os.PathLike, *,
                     base_model_dir: str | os.PathLike | None = None, dtype: str = "f32") -> Path:
    """Write the PEFT adapter in ``adapter_dir`` as a llama.cpp LoRA adapter GGUF.

    Args:
        adapter_dir: ``save_pretrained`` output of a PEFT LoRA model (``adapter_config.json`` and
            ``adapter_model.safetensors``).
        out_path: the GGUF to write (atomically).
        base_model_dir: the base checkpoint (its ``config.json`` gives the architecture and, for
            Llama, the head counts of the q/k permutation); default: the adapter's
            ``base_model_name_or_path``.
        dtype: ``"f32"`` or ``"f16"``.

    Raises:
        NotImplementedError: DoRA, an unsupported architecture, or an adapted module with no
            GGUF name (embeddings, the head).
        ValueError: a bad dtype or an adapter without A/B pairs.
    """
    from safetensors.numpy import load_file

    if dtype not in ("f32", "f16"):
        raise ValueError(f"dtype must be 'f32' or 'f16', got {dtype!r}")
    src = Path(adapter_dir)
    acfg = json.loads((src / "adapter_config.json").read_text())
    if acfg.get("use_dora"):
        raise NotImplementedError("DoRA adapters have no llama.cpp adapter format; merge them instead")
    base_dir = Path(base_model_dir if base_model_dir is not None else acfg["base_model_name_or_path"])
    cfg = _read_config(base_dir)
    arch = cfg["model_type"]
    if arch not in SUPPORTED_ARCHS:
        raise NotImplementedError(f"architecture {arch!r}; supported: {SUPPORTED_ARCHS}")
    r = int(acfg["r"])
    # llama.cpp scales by alpha / r; rsLoRA scales by alpha / sqrt(r): fold the difference into alpha
    alpha = float(acfg["lora_alpha"]) * (math.sqrt(r) if acfg.get("use_rslora") else 1.0)

    files = sorted(src.glob("adapter_model*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{src} has no adapter_model.safetensors")
    tensors: dict[str, np.ndarray] = {}
    for f in files:
        tensors.update(load_file(str(f)))
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        m = _LORA_KEY.match(key)
        if m:
            pairs.setdefault(m.group(1), {})[m.group(2)] = value.astype(np.float32)
    if not pairs:
        raise ValueError(f"{src}: no lora_A/lora_B tensors among {sorted(tensors)[:4]}")

    plan: list[tuple[str, np.ndarray, np.ndarray]] = []
    for module in sorted(pairs, key=_layer_order):
        ab = pairs[module]
        if set(ab) != {"A", "B"}:
            raise ValueError(f"{module}: LoRA needs both lora_A and lora_B, found {sorted(ab)}")
        name = gguf_tensor_name(module + ".weight", cfg["model_type"], int(cfg["num_hidden_layers"]))
        if name is None or not name.startswith("blk."):
            raise NotImplementedError(f"adapted module {module!r} has no GGUF name (llama.cpp adapts layer matrices)")
        a, b = ab["A"], ab["B"]
        if arch == "llama" and name.endswith(("attn_q.weight", "attn_k.weight")):
            n_head, n_kv, _ = _heads(cfg)
            b = llama_permute(b, n_head if name.endswith("attn_q.weight") else n_kv)  # rows, as the base's
        plan.append((name, a, b))

    out = Path(out_path)
    np_type = np.float32 if dtype == "f32" else np.float16
    with gguf_writer(out, arch) as writer:
        writer.add_string("general.type", "adapter")
        writer.add_string("adapter.type", "lora")
        writer.add_float32("adapter.lora.alpha", alpha)
        for name, a, b in plan:
            writer.add_tensor(f"{name}.lora_a", np.ascontiguousarray(a, dtype=np_type))
            writer.add_tensor(f"{name}.lora_b", np.ascontiguousarray(b, dtype=np_type))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    return out


def _layer_order(module: str) -> tuple[int, str]:
    m = re.search(r"\.layers\.(\d+)\.", module)
    return (int(m.group(1)) if m else -1, module)
