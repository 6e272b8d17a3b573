"""Inference backends, one module each, all implementing :class:`agents.policy.Policy`.

Engines are imported lazily: ``make_policy`` imports only the backend asked for.

>>> from agents.backends import make_policy
>>> policy = make_policy("llama_cpp", "qwen2.5-coder-0.5b", n_threads=2)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import os

from agents.backends.base import BackendError, BackendUnavailableError
from agents.backends.spec import PolicySpec
from agents.policy import Policy
from mucode_env.errors import did_you_mean

__all__ = ["BACKENDS", "BackendError", "BackendUnavailableError", "PolicySpec", "make_policy"]

BACKENDS: dict[str, tuple[str, str]] = {
    "llama_cpp": ("agents.backends.llama_cpp", "LlamaCppPolicy"),
    "transformers": ("agents.backends.transformers", "TransformersPolicy"),
    "openai": ("agents.backends.openai", "OpenAIPolicy"),
    "sglang": ("agents.backends.sglang", "SGLangPolicy"),
    "vllm": ("agents.backends.vllm", "VLLMPolicy"),
}


def make_policy(backend: str, model: str | os.PathLike | None, **kw) -> Policy:
    """Build the policy of ``backend`` for ``model``.

    Args:
        backend: ``llama_cpp``, ``transformers``, ``openai``, ``sglang`` or ``vllm`` (a vLLM server
            that the policy starts and stops: ``bash scripts/setup_vllm.sh`` installs it).
        model: registry name, GGUF path, checkpoint directory or hub id; for ``openai`` the served
            model name (``None``: the server's first model), with ``base_url=`` in ``kw``.
        **kw: the backend class's keyword arguments.

    Returns:
        A policy.

    Raises:
        ValueError: unknown backend (with a close-match hint) or missing ``base_url`` for openai.
    """
    if backend not in BACKENDS:
        raise ValueError(
            f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}.{did_you_mean(backend, BACKENDS)}"
        )
    module_name, class_name = BACKENDS[backend]
    cls = getattr(importlib.import_module(module_name), class_name)
    if backend == "openai":
        base_url = kw.pop("base_url", None)
        if not base_url:
            raise ValueError("the openai backend needs base_url (e.g. http://127.0.0.1:8000/v1)")
        return cls(base_url, None if model is None else os.fspath(model), **kw)
    if model is None:
        raise ValueError(f"the {backend} backend needs a model")
    return cls(model, **kw)
