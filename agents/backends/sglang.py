"""SGLang offline-engine backend (optional extra: ``pip install mucode[sglang]``; needs a GPU).

>>> from agents.backends.sglang import SGLangPolicy
>>> policy = SGLangPolicy("Qwen/Qwen2.5-Coder-1.5B-Instruct", mem_fraction_static=0.8)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from agents.backends.base import BackendError, BackendUnavailableError, sample_seed, validate_chats
from agents.models import resolve_model
from agents.policy import Chat, Generation, SamplingParams

__all__ = ["SGLangPolicy"]


class SGLangPolicy:
    """A :class:`~agents.policy.Policy` over ``sglang.Engine`` (one batched call per ``generate``).

    Args:
        model: hub id or checkpoint directory (registry GGUF names are passed as their file path).
        cache_dir: cache root for registry models.
        engine_kwargs: passed to ``sglang.Engine`` (``tp_size``, ``mem_fraction_static``...).

    Raises:
        BackendUnavailableError: sglang is not installed.
    """

    def __init__(self, model: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None, **engine_kwargs) -> None:
        try:
            import sglang
            from transformers import AutoTokenizer
        except ImportError as exc:
            raise BackendUnavailableError(
                "the sglang backend needs SGLang (GPU only): pip install 'mucode[sglang]'"
            ) from exc
        resolved = resolve_model(model, cache_dir)
        self.name = f"sglang:{os.fspath(model)}"
        self.tokenizer = AutoTokenizer.from_pretrained(resolved.path)
        self.engine = sglang.Engine(model_path=resolved.path, **engine_kwargs)

    def generate(self, chats: Sequence[Chat], params: SamplingParams) -> list[list[Generation]]:
        """Sample ``params.n`` responses per chat in one engine call (see :class:`agents.policy.Policy`)."""
        chats = validate_chats(chats)
        prompts, sampling = [], []
        for i, chat in enumerate(chats):
            text = self.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
            for j in range(params.n):
                prompts.append(text)
                sampling.append({
                    "temperature": params.temperature,
                    "top_p": params.top_p,
                    "max_new_tokens": params.max_new_tokens,
                    "stop": list(params.stop) or None,
                    "sampling_seed": sample_seed(params.seed, i, j),
                })
        try:
            outputs = self.engine.generate(prompt=prompts, sampling_params=sampling)
        except Exception as exc:  # the engine raises many types; report them as one
            raise BackendError(f"sglang generation failed: {exc}") from exc
        gens = []
        for out in outputs:
            meta = out.get("meta_info", {})
            reason = meta.get("finish_reason") or {}
            kind = reason.get("type") if isinstance(reason, dict) else str(reason)
            gens.append(Generation(
                text=out.get("text", ""),
                prompt_tokens=int(meta.get("prompt_tokens", 0)),
                completion_tokens=int(meta.get("completion_tokens", 0)),
                finish_reason="length" if kind == "length" else "stop",
            ))
        return [gens[i * params.n : (i + 1) * params.n] for i in range(len(chats))]

    def close(self) -> None:
        """Shut the engine down (frees the GPU)."""
        self.engine.shutdown()
