"""A model argument as what each consumer needs: a Hugging Face checkpoint directory (training,
the transformers backend, a vLLM server), the GGUF it came from (llama.cpp exports), or the
generator and verifier of a training run directory (evaluation).

GGUF files are dequantised once, by transformers' own GGUF loader, into ONE cache
(``default_cache_dir()/hf/<stem>-<key>``, ``key`` the file's SHA-256 prefix when the registry
knows it) written atomically; the checkpoint records its source GGUF in ``source.json``.

>>> from agents.models.convert import hf_checkpoint
>>> hf_checkpoint("qwen2.5-coder-0.5b")  # doctest: +SKIP
'~/.cache/mucode/models/hf/qwen2.5-coder-0.5b-instruct-q4_k_m-1d9614638d18'  (expanded)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from agents.models.registry import MODELS, ResolvedModel, default_cache_dir, resolve_model
from mucode_env.atomic import atomic_dir
from mucode_env.errors import MuCodeError

__all__ = ["SOURCE_FILE", "ModelConversionError", "find_source_gguf", "gguf_to_hf", "hf_checkpoint",
           "resolve_run"]

log = logging.getLogger(__name__)

SOURCE_FILE = "source.json"


class ModelConversionError(MuCodeError, ImportError):
    """A GGUF cannot be dequantised here (the message names the missing package)."""


def _cache_key(gguf_path: Path) -> str:
    st = gguf_path.stat()
    return hashlib.sha256(f"{gguf_path}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]


def gguf_to_hf(gguf_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None, *,
               key: str | None = None) -> Path:
    """Dequantise a GGUF into a regular fp32 ``save_pretrained`` checkpoint once; return its directory.

    Args:
        gguf_path: the GGUF file.
        cache_dir: cache root (default :func:`agents.models.default_cache_dir`); the checkpoint
            goes to ``cache_dir/hf/<stem>-<key>``.
        key: a content key for the cache entry (default: a hash of the file's path, size and mtime).

    Returns:
        The checkpoint directory: fp32 weights, the tokenizer and chat template from the GGUF
        metadata, and ``source.json`` naming the GGUF.

    Raises:
        ModelConversionError: torch, transformers or gguf is missing.
    """
    gguf_path = Path(gguf_path).expanduser().resolve()
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = root / "hf" / f"{gguf_path.stem}-{key or _cache_key(gguf_path)}"
    if (target / "config.json").is_file() and (target / "tokenizer_config.json").is_file():
        return target
    try:
        import gguf  # noqa: F401  (transformers' GGUF loader needs it)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise ModelConversionError(f"dequantising {gguf_path.name} needs torch, transformers and gguf: "
                                   f"pip install 'mucode[agents]' ({exc})") from exc
    log.info("dequantizing %s once into %s (about a minute for 0.5B parameters)", gguf_path, target)
    tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32)
    # transformers marks GGUF-loaded models as quantized and refuses to save them; the weights are
    # already dequantized, so the quantizer settings are cleared before saving.
    model.hf_quantizer = None
    model.is_quantized = False
    model.quantization_method = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / SOURCE_FILE).write_text(json.dumps({"gguf": str(gguf_path)}))
    return target


def hf_checkpoint(model: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> str:
    """A Hugging Face checkpoint for ``model`` that loads offline where possible.

    - a checkpoint directory is used as is;
    - a ``.gguf`` file or a registry name (the embedded models ship as GGUF) is dequantised once
      (:func:`gguf_to_hf`) and the cached directory is returned;
    - a hub id is returned unchanged (loading it needs the network).

    Raises:
        UnknownModelError, ModelNotInstalledError, ModelIntegrityError: see :func:`resolve_model`.
    """
    resolved: ResolvedModel = resolve_model(model, cache_dir)
    if resolved.is_gguf:
        key = resolved.spec.sha256[:12] if resolved.spec else None
        return str(gguf_to_hf(resolved.path, cache_dir, key=key))
    return resolved.path


def find_source_gguf(model: str | os.PathLike | None, cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The GGUF whose metadata (tokenizer, chat template, hyperparameters) fits a model fine-tuned
    from ``model``, or ``None``.

    A registry name resolves to its GGUF; a ``.gguf`` path is itself; a checkpoint dequantised by
    :func:`gguf_to_hf` points at its GGUF through ``source.json``; anything else (an HF checkpoint
    with no GGUF, a hub id) has none.
    """
    if model is None:
        return None
    name = os.fspath(model)
    if name in MODELS:
        return Path(resolve_model(name, cache_dir).path)
    path = Path(name).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        return path
    source = path / SOURCE_FILE
    if path.is_dir() and source.is_file():
        gguf = json.loads(source.read_text()).get("gguf")
        if gguf and Path(gguf).is_file():
            return Path(gguf)
    return None


def resolve_run(path: str | os.PathLike, default_verifier: str | None = None) -> tuple[str, str | None]:
    """(generator, verifier) of a checkpoint argument: a training run directory or a generator.

    A µCODE or RFT run directory names its selected generator and verifier in ``best.json``; a
    PPO run directory holds its policy in ``checkpoint/``; anything else is a generator, paired
    with ``default_verifier``.
    """
    p = Path(path)
    best = p / "best.json"
    if best.is_file():
        record = json.loads(best.read_text())
        return str(record["generator"]), record.get("verifier") or default_verifier
    if (p / "checkpoint" / "config.json").is_file():
        return str(p / "checkpoint"), default_verifier
    return str(p), default_verifier
