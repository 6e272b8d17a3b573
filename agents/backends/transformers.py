"""Hugging Face transformers backend: any causal LM, CPU or GPU, batched sampling with left padding.

Also loads GGUF files (registry names included): the first load dequantizes the GGUF (slow, about
a minute for 0.5B parameters) and saves a regular checkpoint into the cache, which later loads
take in seconds.

>>> from agents.backends.transformers import TransformersPolicy
>>> policy = TransformersPolicy("Qwen/Qwen2.5-Coder-0.5B-Instruct", batch_size=8)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from agents.backends.base import BackendError, BackendUnavailableError, truncate_at_stop, validate_chats
from agents.models import ResolvedModel, default_cache_dir, resolve_model
from agents.policy import Chat, Generation, SamplingParams

__all__ = ["TransformersPolicy", "convert_gguf"]

log = logging.getLogger(__name__)


def _import_torch_transformers():
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise BackendUnavailableError(
            "the transformers backend needs torch and transformers: pip install 'mucode[agents]' "
            "(install a torch build for your machine first)"
        ) from exc
    return torch, transformers


def convert_gguf(gguf_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None, *, key: str | None = None) -> Path:
    """Dequantize a GGUF into a regular ``save_pretrained`` checkpoint once, and return its directory.

    The checkpoint is cached under ``cache_dir/hf/<stem>-<key>`` (``key``: the file's SHA-256 prefix
    when known, else a hash of its path, size and mtime) and written atomically.

    Args:
        gguf_path: the GGUF file.
        cache_dir: cache root (default :func:`agents.models.default_cache_dir`).
        key: a content key for the cache entry.

    Returns:
        The checkpoint directory (model weights in float32, tokenizer, chat template).
    """
    torch, transformers = _import_torch_transformers()
    gguf_path = Path(gguf_path).resolve()
    if key is None:
        st = gguf_path.stat()
        key = hashlib.sha256(f"{gguf_path}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = root / "hf" / f"{gguf_path.stem}-{key}"
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("dequantizing %s once into %s (this takes a while)", gguf_path, target)
    try:
        tok = transformers.AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
        )
    except ImportError as exc:
        raise BackendUnavailableError(f"loading GGUF files in transformers needs the gguf package: pip install gguf ({exc})") from exc
    # transformers 5.x marks GGUF-loaded models as quantized and refuses to save them; the weights
    # are already dequantized, so the quantizer settings are cleared before saving.
    model.hf_quantizer = None
    model.is_quantized = False
    model.quantization_method = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


class TransformersPolicy:
    """A :class:`~agents.policy.Policy` over a transformers causal LM.

    Args:
        model: registry name, GGUF file, checkpoint directory or hub id (loaded offline-first).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; default CUDA when available.
        dtype: torch dtype name; default float32 on CPU, bfloat16 on CUDA.
        batch_size: chats per forward batch (each expanded to ``n`` samples).
        cache_dir: cache root for assembled and dequantized models.
        torch_threads: if given, ``torch.set_num_threads`` (a process-wide setting).
        model_kwargs: extra ``from_pretrained`` arguments.

    Raises:
        BackendUnavailableError: torch/transformers are missing.
        BackendError: the model cannot be loaded.
    """

    def __init__(
        self,
        model: str | os.PathLike,
        *,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int = 8,
        cache_dir: str | os.PathLike | None = None,
        torch_threads: int | None = None,
        model_kwargs: dict | None = None,
    ) -> None:
        torch, transformers = _import_torch_transformers()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if torch_threads:
            torch.set_num_threads(torch_threads)
        self._torch = torch
        self.batch_size = batch_size
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        torch_dtype = getattr(torch, dtype) if dtype else (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        resolved: ResolvedModel = resolve_model(model, cache_dir)
        if resolved.is_gguf:
            key = resolved.spec.sha256[:12] if resolved.spec else None
            location = str(convert_gguf(resolved.path, cache_dir, key=key))
        else:
            location = resolved.path
        self.name = f"transformers:{resolved.spec.name if resolved.spec else os.fspath(model)}"
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(location)
            self.model = transformers.AutoModelForCausalLM.from_pretrained(
                location, dtype=torch_dtype, **(model_kwargs or {})
            ).to(self.device)
        except OSError as exc:
            raise BackendError(f"transformers could not load model {os.fspath(model)!r}: {exc}") from exc
        self.model.eval()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if not self.tokenizer.chat_template:
            raise BackendError(f"model {os.fspath(model)!r} has no chat template; use an instruct/chat model")
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            eos_ids.add(self.tokenizer.eos_token_id)
        self.eos_token_ids = sorted(eos_ids)

    def generate(self, chats: Sequence[Chat], params: SamplingParams) -> list[list[Generation]]:
        """Sample ``params.n`` responses for each chat (see :class:`agents.policy.Policy`).

        Chats are sorted by length and run in batches of ``batch_size`` (left padded); the sampling
        RNG is seeded with ``params.seed`` inside a forked RNG, so global torch state is untouched.
        """
        chats = validate_chats(chats)
        texts = [
            self.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) for chat in chats
        ]
        lengths = [len(self.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: lengths[i])
        results: list[list[Generation] | None] = [None] * len(texts)
        torch = self._torch
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(params.seed)
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                for i, gens in zip(idx, self._batch([texts[i] for i in idx], params)):
                    results[i] = gens
        return results  # type: ignore[return-value]

    def _batch(self, texts: list[str], params: SamplingParams) -> list[list[Generation]]:
        torch = self._torch
        from transformers import GenerationConfig

        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        sample = params.temperature > 0
        config = GenerationConfig(
            do_sample=sample,
            temperature=params.temperature if sample else None,
            top_p=params.top_p if sample else None,
            top_k=0 if sample else None,
            max_new_tokens=params.max_new_tokens,
            num_return_sequences=params.n,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.eos_token_ids,
            stop_strings=list(params.stop) or None,
            repetition_penalty=1.0,
        )
        with torch.inference_mode():
            out = self.model.generate(**enc, generation_config=config, tokenizer=self.tokenizer)
        width = enc["input_ids"].shape[1]
        prompt_counts = enc["attention_mask"].sum(dim=1).tolist()
        eos = set(self.eos_token_ids) | {self.tokenizer.pad_token_id}  # rows stopped early are padded
        gens: list[list[Generation]] = [[] for _ in texts]
        for row, seq in enumerate(out[:, width:].tolist()):
            chat_i = row // params.n
            n_tokens, hit_eos = len(seq), False
            for k, tok in enumerate(seq):
                if tok in eos:
                    n_tokens, hit_eos = k, True
                    break
            text = self.tokenizer.decode(seq[:n_tokens], skip_special_tokens=True)
            text, hit_stop = truncate_at_stop(text, params.stop)
            finish = "stop" if hit_eos or hit_stop or n_tokens < params.max_new_tokens else "length"
            gens[chat_i].append(Generation(text, int(prompt_counts[chat_i]), n_tokens, finish))
        return gens
