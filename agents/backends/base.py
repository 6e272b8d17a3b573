"""Shared pieces of the backends: errors, per-sample seeds, stop-string handling."""

from __future__ import annotations

from collections.abc import Sequence

from agents.episodes import derive_seed
from agents.policy import Chat
from mucode_env.errors import MuCodeError

__all__ = ["BackendError", "BackendUnavailableError", "sample_seed", "truncate_at_stop", "validate_chats"]


class BackendError(MuCodeError):
    """The inference engine failed, refused a request or could not be reached."""


class BackendUnavailableError(BackendError, ImportError):
    """An optional engine is not installed (the message names the pip extra)."""


def sample_seed(seed: int, chat_index: int, sample_index: int) -> int:
    """A 31-bit seed for sample ``sample_index`` of chat ``chat_index`` in a call seeded ``seed``.

    Distinct samples of one call get distinct seeds, so identical chats in a batch still differ.

    >>> sample_seed(0, 0, 0) == sample_seed(0, 0, 0) != sample_seed(0, 0, 1)
    True
    """
    return derive_seed(seed, chat_index, sample_index)


def truncate_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut ``text`` before the earliest stop string (excluded, as OpenAI does). Returns (text, hit)."""
    cut = min((i for s in stop if s and (i := text.find(s)) >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def validate_chats(chats: Sequence[Chat]) -> list[Chat]:
    """Check the chat shape early, with a clear message (engines fail obscurely otherwise)."""
    out = []
    for i, chat in enumerate(chats):
        if not isinstance(chat, (list, tuple)) or not chat:
            raise ValueError(f"chat {i} must be a non-empty list of messages, got {chat!r:.80}")
        for m in chat:
            if not isinstance(m, dict) or "role" not in m or "content" not in m:
                raise ValueError(f"chat {i} has a message without 'role'/'content': {m!r:.80}")
        out.append([{"role": m["role"], "content": m["content"]} for m in chat])
    return out
