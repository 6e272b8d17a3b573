"""A scripted policy: deterministic answers from a table of known programs, no model needed.

For tests and pipeline checks: a chat whose first message contains a key of ``solutions`` is
answered with that key's program. On the first turn every other chat (alternating across calls)
gets a wrong program instead, so the trajectories hold failures, feedback and fixes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from agents.policy import Chat, Generation, SamplingParams

WRONG_PROGRAM = "```python\ndef nope():\n    return None\n```"


class ScriptedPolicy:
    """Answers from ``solutions`` (key: a substring of the problem's prompt, value: a program)."""

    name = "scripted"

    def __init__(self, solutions: Mapping[str, str]) -> None:
        self.solutions = dict(solutions)
        self.calls = 0

    def generate(self, chats: Sequence[Chat], params: SamplingParams) -> list[list[Generation]]:
        out = []
        for k, chat in enumerate(chats):
            program = next(s for key, s in self.solutions.items() if key in chat[0]["content"])
            good = len(chat) > 1 or (k + self.calls) % 2 == 1
            text = f"```python\n{program}\n```" if good else WRONG_PROGRAM
            out.append([Generation(text, 10, 12) for _ in range(params.n)])
        self.calls += 1
        return out
