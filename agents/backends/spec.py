"""A policy as a picklable recipe: what to build, not the built engine.

An engine in memory (a llama.cpp context, a model on a GPU, an HTTP client) does not travel
between processes; its recipe does. :mod:`agents.ray_episodes` sends a :class:`PolicySpec` to each
episode actor, which builds its own replica once; :func:`agents.rollout.run_rollouts` and
:func:`agents.bon.best_of_n` also take one in place of a policy and build it locally.

>>> spec = PolicySpec("llama_cpp", "qwen2.5-coder-0.5b", {"n_ctx": 4096})
>>> spec.name
'llama_cpp:qwen2.5-coder-0.5b'
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agents.policy import Policy

__all__ = ["PolicySpec"]


@dataclass(frozen=True)
class PolicySpec:
    """How to build a policy: :func:`agents.backends.make_policy` ``(backend, model, **kwargs)``.

    Attributes:
        backend: ``llama_cpp``, ``transformers``, ``openai`` or ``sglang``.
        model: what the backend loads (registry name, GGUF file, checkpoint directory, hub id), or
            for ``openai`` the served model name (None: the server's first model). A path must
            exist on every machine that builds the policy (a shared file system on a cluster).
        kwargs: the backend's keyword arguments (``base_url`` for ``openai``, ``n_threads``...).
    """

    backend: str
    model: str | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from agents.backends import BACKENDS

        if self.backend not in BACKENDS:
            from mucode_env.errors import did_you_mean

            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}."
                             f"{did_you_mean(self.backend, BACKENDS)}")
        if self.model is not None:
            object.__setattr__(self, "model", os.fspath(self.model))
        object.__setattr__(self, "kwargs", dict(self.kwargs))

    @property
    def name(self) -> str:
        """``backend:model``, the name a run records before any replica is built."""
        return f"{self.backend}:{self.model or self.kwargs.get('base_url', '')}"

    def build(self, **overrides: Any) -> Policy:
        """Build the policy here; ``overrides`` replace or add keyword arguments."""
        from agents.backends import make_policy

        return make_policy(self.backend, self.model, **{**self.kwargs, **overrides})
