"""The one protocol every policy implements: a batch of chats in, n sampled responses each out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

Message = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": str}
Chat = list[Message]


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. temperature 0 means greedy (then n must be 1 or the samples are equal)."""

    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 1000
    stop: tuple[str, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


@dataclass(frozen=True)
class Generation:
    """One sampled response with its token counts."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"  # "stop" | "length"
    extra: dict = field(default_factory=dict, compare=False)


@runtime_checkable
class Policy(Protocol):
    """Anything that maps chats to sampled responses.

    ``generate(chats, params)`` returns one list per chat, each of ``params.n`` Generations.
    Implementations must be deterministic for a fixed ``params.seed`` where the engine allows.
    """

    def generate(self, chats: Sequence[Chat], params: SamplingParams) -> list[list[Generation]]: ...
