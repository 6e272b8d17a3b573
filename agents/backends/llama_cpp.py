"""llama.cpp backend (llama-cpp-python): the fast CPU path for GGUF models.

Chats are rendered with the chat template stored in the GGUF; the n samples of a chat are drawn one
after another (the prompt's KV cache is reused between them), each with its own seed.

>>> from agents.backends.llama_cpp import LlamaCppPolicy
>>> policy = LlamaCppPolicy("smollm2-135m", n_threads=2)  # doctest: +SKIP
>>> policy.generate([[{"role": "user", "content": "hi"}]], SamplingParams(max_new_tokens=8))  # doctest: +SKIP
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from agents.backends.base import BackendError, BackendUnavailableError, sample_seed, validate_chats
from agents.models import resolve_model
from agents.policy import Chat, Generation, SamplingParams

__all__ = ["LlamaCppPolicy"]

_CTX_ERROR = re.compile(r"Requested tokens \((\d+)\) exceed context window of (\d+)")


class LlamaCppPolicy:
    """A :class:`~agents.policy.Policy` over a local GGUF model run by llama.cpp.

    Args:
        model: registry name (``qwen2.5-coder-0.5b``) or a path to a ``.gguf`` file.
        n_ctx: context length in tokens (prompt + completion); longer prompts are cut short with
            ``finish_reason="length"``.
        n_threads: CPU threads for generation and prompt evaluation (default: half the usable
            cores, at least 1). llama.cpp's threads spin at barriers, so more threads than free
            cores is many times slower, not faster: on a shared machine use 1.
        n_gpu_layers: layers offloaded to a GPU build of llama.cpp (0 on CPU).
        chat_format: a llama-cpp-python chat format name; default: the GGUF's own template.
        cache_dir: where registry models are assembled (see :func:`agents.models.resolve_model`).
        verbose: llama.cpp's own logging.

    Raises:
        BackendUnavailableError: llama-cpp-python is not installed.
        BackendError: the model is not a GGUF file or fails to load.
    """

    def __init__(
        self,
        model: str | os.PathLike,
        *,
        n_ctx: int = 8192,
        n_threads: int | None = None,
        n_batch: int = 512,
        n_gpu_layers: int = 0,
        chat_format: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        verbose: bool = False,
    ) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise BackendUnavailableError(
                "the llama_cpp backend needs llama-cpp-python: pip install 'mucode[llama]' "
                "(llama-cpp-python==0.3.36)"
            ) from exc
        resolved = resolve_model(model, cache_dir)
        if not resolved.is_gguf:
            raise BackendError(
                f"the llama_cpp backend needs a GGUF file, got {os.fspath(model)!r} ({resolved.kind}); "
                "use --backend transformers for hub ids and checkpoint directories"
            )
        self.model_path = Path(resolved.path)
        self.name = f"llama_cpp:{resolved.spec.name if resolved.spec else self.model_path.name}"
        self.n_ctx = n_ctx
        affinity = getattr(os, "sched_getaffinity", None)
        threads = n_threads or max(1, (len(affinity(0)) if affinity else os.cpu_count() or 1) // 2)
        try:
            self._llm = Llama(
                model_path=str(self.model_path),
                n_ctx=n_ctx,
                n_threads=threads,
                n_threads_batch=threads,
                n_batch=n_batch,
                n_gpu_layers=n_gpu_layers,
                chat_format=chat_format,
                verbose=verbose,
            )
        except (ValueError, RuntimeError) as exc:
            raise BackendError(f"llama.cpp could not load {self.model_path}: {exc}") from exc

    def generate(self, chats: Sequence[Chat], params: SamplingParams,
                 progress: Callable[[int, int], None] | None = None,
                 seeds: Sequence[int] | None = None) -> list[list[Generation]]:
        """Sample ``params.n`` responses for each chat (see :class:`agents.policy.Policy`);
        ``progress(generations, tokens)`` is called after each chat (llama.cpp runs one at a time).

        ``seeds``: one seed per chat (the episode engine's per-episode seeds); sample ``j`` of chat
        ``i`` then depends only on (chat, ``seeds[i]``, j), not on the chat's place in the call.
        Without it the call's ``params.seed`` and the chat's index seed the samples."""
        chats = validate_chats(chats)
        if seeds is not None and len(seeds) != len(chats):
            raise ValueError(f"seeds has {len(seeds)} entries for {len(chats)} chats")
        out = []
        done = tokens = 0
        for i, chat in enumerate(chats):
            # Re-evaluating a cached prefix in different chunks changes logits in the last bits, so
            # the cache is dropped per chat: a chat's samples then depend only on (chat, seed, j).
            self._llm.reset()
            seed, index = (params.seed, i) if seeds is None else (int(seeds[i]), 0)
            out.append([self._one(chat, params, sample_seed(seed, index, j)) for j in range(params.n)])
            if progress is not None:
                done += params.n
                tokens += sum(g.completion_tokens for g in out[-1])
                progress(done, tokens)
        return out

    def close(self) -> None:
        """Free the model and its context (idempotent)."""
        llm = getattr(self, "_llm", None)
        if llm is not None:
            llm.close()
            self._llm = None

    def _one(self, chat: Chat, params: SamplingParams, seed: int) -> Generation:
        max_tokens = params.max_new_tokens
        for _ in range(2):
            try:
                out = self._llm.create_chat_completion(
                    messages=chat,
                    temperature=params.temperature,
                    top_p=params.top_p,
                    top_k=0,  # plain temperature/top_p sampling, as the other backends do
                    min_p=0.0,
                    repeat_penalty=1.0,
                    max_tokens=max_tokens,
                    stop=list(params.stop) or None,
                    seed=seed,
                )
                break
            except ValueError as exc:
                match = _CTX_ERROR.search(str(exc))
                if not match:
                    raise BackendError(f"llama.cpp failed to generate: {exc}") from exc
                prompt_tokens = int(match.group(1)) - max_tokens
                room = int(match.group(2)) - prompt_tokens
                if room < 1:  # the prompt alone fills the context: nothing can be generated
                    return Generation("", prompt_tokens, 0, "length", {"error": "prompt exceeds n_ctx"})
                max_tokens = room
        else:  # pragma: no cover - the second try always fits
            raise BackendError("llama.cpp kept rejecting the request length")
        choice = out["choices"][0]
        usage = out.get("usage") or {}
        return Generation(
            text=choice["message"].get("content") or "",
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
            extra={"seed": seed},
        )
