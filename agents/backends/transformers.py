"""Hugging Face transformers backend: any causal LM, CPU or GPU, batched sampling with left padding.

Also loads GGUF files (registry names included) through :func:`agents.models.convert.hf_checkpoint`:
the first load dequantizes the GGUF (about a minute for 0.5B parameters) into the model cache,
which later loads take in seconds.

>>> from agents.backends.transformers import TransformersPolicy
>>> policy = TransformersPolicy("Qwen/Qwen2.5-Coder-0.5B-Instruct", batch_size=8)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

from agents.backends.base import BackendError, BackendUnavailableError, truncate_at_stop, validate_chats
from agents.models.convert import hf_checkpoint
from agents.policy import Chat, Generation, SamplingParams

__all__ = ["TransformersPolicy"]

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
        max_prompt_tokens: longer prompts keep their last tokens (None: no limit).
        return_tokens: put the token ids in every :class:`Generation`'s ``extra``:
            ``prompt_ids`` (what the model saw) and ``completion_ids`` (what it sampled, the stop
            token included), for trainers that need the exact tokens (PPO).

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
        max_prompt_tokens: int | None = None,
        return_tokens: bool = False,
    ) -> None:
        torch, transformers = _import_torch_transformers()
        if torch_threads:
            torch.set_num_threads(torch_threads)
        device_ = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        torch_dtype = getattr(torch, dtype) if dtype else (torch.bfloat16 if device_.type == "cuda" else torch.float32)
        location = hf_checkpoint(model, cache_dir)
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(location)
            lm = transformers.AutoModelForCausalLM.from_pretrained(location, dtype=torch_dtype,
                                                                   **(model_kwargs or {})).to(device_)
        except OSError as exc:
            raise BackendError(f"transformers could not load model {os.fspath(model)!r}: {exc}") from exc
        lm.eval()
        self._setup(lm, tokenizer, f"transformers:{os.fspath(model)}", batch_size, max_prompt_tokens, return_tokens)

    @classmethod
    def from_model(cls, model, tokenizer, *, batch_size: int = 8, max_prompt_tokens: int | None = None,
                   return_tokens: bool = False, name: str = "transformers:in-memory") -> "TransformersPolicy":
        """A policy over a model already in memory (a trainer's policy, updated in place).

        The tokenizer is not modified; generation uses left padding of its own.
        """
        self = cls.__new__(cls)
        self._setup(model, tokenizer, name, batch_size, max_prompt_tokens, return_tokens)
        return self

    def _setup(self, model, tokenizer, name: str, batch_size: int, max_prompt_tokens: int | None,
               return_tokens: bool) -> None:
        torch, _ = _import_torch_transformers()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_prompt_tokens is not None and max_prompt_tokens < 1:
            raise ValueError(f"max_prompt_tokens must be >= 1 or None, got {max_prompt_tokens}")
        if not tokenizer.chat_template:
            raise BackendError(f"model {name!r} has no chat template; use an instruct/chat model")
        self._torch = torch
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.batch_size, self.max_prompt_tokens, self.return_tokens = batch_size, max_prompt_tokens, return_tokens
        self.device = next(model.parameters()).device
        pad = tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else tokenizer.eos_token_id
        eos = model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if tokenizer.eos_token_id is not None:
            eos_ids.add(tokenizer.eos_token_id)
        self.eos_token_ids = sorted(eos_ids)

    def generate(self, chats: Sequence[Chat], params: SamplingParams,
                 progress: Callable[[int, int], None] | None = None) -> list[list[Generation]]:
        """Sample ``params.n`` responses for each chat (see :class:`agents.policy.Policy`).

        Chats are sorted by length and run in batches of ``batch_size`` (left padded); the sampling
        RNG is seeded with ``params.seed`` inside a forked RNG, so global torch state is untouched.
        ``progress(generations, tokens)`` is called after every batch.
        """
        chats = validate_chats(chats)
        prompts = []
        for chat in chats:
            text = self.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            prompts.append(ids[-self.max_prompt_tokens:] if self.max_prompt_tokens else ids)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        results: list[list[Generation] | None] = [None] * len(prompts)
        torch = self._torch
        devices = [self.device] if self.device.type == "cuda" else []
        done = tokens = 0
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(params.seed)
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                for i, gens in zip(idx, self._batch([prompts[i] for i in idx], params)):
                    results[i] = gens
                    done += len(gens)
                    tokens += sum(g.completion_tokens for g in gens)
                if progress is not None:
                    progress(done, tokens)
        return results  # type: ignore[return-value]

    def _batch(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Generation]]:
        torch = self._torch
        from transformers import GenerationConfig

        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):  # left padding
            ids[row, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
            attention[row, width - len(prompt):] = 1
        sample = params.temperature > 0
        config = GenerationConfig(
            do_sample=sample,
            temperature=params.temperature if sample else None,
            top_p=params.top_p if sample else None,
            top_k=0 if sample else None,
            max_new_tokens=params.max_new_tokens,
            num_return_sequences=params.n,
            pad_token_id=self.pad_token_id,
            eos_token_id=self.eos_token_ids,
            stop_strings=list(params.stop) or None,
            repetition_penalty=1.0,
        )
        with torch.inference_mode():
            out = self.model.generate(input_ids=ids.to(self.device), attention_mask=attention.to(self.device),
                                      generation_config=config, tokenizer=self.tokenizer)
        stops = set(self.eos_token_ids) | {self.pad_token_id}  # rows stopped early are padded
        gens: list[list[Generation]] = [[] for _ in prompts]
        for row, seq in enumerate(out[:, width:].tolist()):
            chat_i = row // params.n
            n_tokens, hit_eos = len(seq), False
            for k, tok in enumerate(seq):
                if tok in stops:
                    n_tokens, hit_eos = k, True
                    break
            text = self.tokenizer.decode(seq[:n_tokens], skip_special_tokens=True)
            text, hit_stop = truncate_at_stop(text, params.stop)
            finish = "stop" if hit_eos or hit_stop or n_tokens < params.max_new_tokens else "length"
            extra = {}
            if self.return_tokens:
                extra = {"prompt_ids": list(prompts[chat_i]), "completion_ids": seq[: n_tokens + int(hit_eos)]}
            gens[chat_i].append(Generation(text, len(prompts[chat_i]), n_tokens, finish, extra))
        return gens
