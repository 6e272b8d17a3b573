"""Typed errors. Each message names the problem, the value received and how to fix it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class MuCodeError(Exception):
    """Base class of every error this package raises on purpose."""


class UnknownEnvError(MuCodeError, KeyError):
    """An environment id that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


class UnknownProblemError(MuCodeError, KeyError):
    """A problem id that is not in the loaded split."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class DatasetError(MuCodeError):
    """A dataset is missing, malformed or not available offline."""


class SandboxError(MuCodeError):
    """The sandbox itself failed (not the program under test). Never scored as a model failure."""


class EpisodeError(MuCodeError):
    """The environment was used out of order (step before reset, step after the episode ended)."""


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """A ' Did you mean: `x`?' hint for a mistyped id, or '' when nothing is close."""
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    return f" Did you mean: `{close[0]}`?" if close else ""
