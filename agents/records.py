"""Trajectory records: everything training needs, one row per episode.

Rows are plain dicts of builtin types (so they store as a Hugging Face ``datasets`` table);
these dataclasses are the typed view used in code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class TurnRecord:
    """One turn of an episode."""

    response: str  # the model's full text for this turn
    code: str  # the program extracted from it
    feedback: str  # the public-test feedback shown to the model next turn
    public_passed: bool
    private_passed: bool  # oracle for this turn's code = public_passed and private_passed
    status: str  # mucode_env.sandbox.Status value of the public run
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def reward(self) -> float:
        return float(self.public_passed and self.private_passed)


@dataclass
class Trajectory:
    """One episode: a problem, its first user message, and its turns."""

    problem_id: str
    env_id: str
    prompt: str  # the first user message (the problem), as the verifier sees it
    turns: list[TurnRecord]
    sample_index: int = 0  # which of the n samples for this problem
    seed: int = 0
    sampling: dict[str, Any] = field(default_factory=dict)  # asdict(SamplingParams)
    policy_name: str = ""

    @property
    def success(self) -> bool:
        """Whether the final turn is correct (oracle reward 1)."""
        return bool(self.turns) and self.turns[-1].reward == 1.0

    def to_row(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "Trajectory":
        row = dict(row)
        row["turns"] = [TurnRecord(**t) for t in row["turns"]]
        return cls(**row)


def jsonable(value: Any) -> Any:
    """``value`` in plain JSON types (mappings with string keys, lists for tuples, ``repr`` of
    anything else), as a stored record or manifest reads back: fresh and resumed records then
    compare equal."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)
