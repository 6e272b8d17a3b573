"""Scripted policies: deterministic answers from known programs, no model needed.

For tests, benchmarks and pipeline checks:

- :class:`ScriptedPolicy`: a chat whose first message contains a key of ``solutions`` is answered
  with that key's program; on the first turn every other chat (alternating across calls) gets a
  wrong program instead, so the trajectories hold failures, feedback and fixes.
- :class:`SeededScriptedPolicy`: answers drawn from a hash of the episode's seed and the chat, so
  results are the same however episodes are batched or distributed.
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


class SeededScriptedPolicy:
    """Right or wrong programs drawn from a hash of (seed, chat, sample): a deterministic sampler.

    Like a real model sampled with a seed, but free: the answer to a chat is the problem's reference
    solution, a wrong value or a syntax error, chosen by a hash of the chat's seed, the chat itself
    and the sample index (right with probability ~1/2 on the first turn, ~3/4 later, so episodes hold
    failures, feedback and fixes). Given the engine's per-episode ``seeds`` an answer depends on its
    episode alone, so the same episodes give the same trajectories however they are batched or
    spread over processes (:mod:`agents.ray_episodes`); without them the call's seed and the chat's
    index in the call stand in, as in a backend. Greedy calls (temperature 0) ignore the seed.

    Args:
        problems: the problems it may be asked about (matched by the start of their prompt).
        cpu_s_per_generation: CPU time burnt per generation (a stand-in for a model's compute).
        sleep_s_per_call: seconds slept per ``generate`` call (a stand-in for a remote model).
    """

    name = "seeded-scripted"

    def __init__(self, problems, *, cpu_s_per_generation: float = 0.0, sleep_s_per_call: float = 0.0) -> None:
        self.answers = [(p.prompt[:60], p.reference_solution, p.entry_point or "f") for p in problems]
        self.cpu_s_per_generation = cpu_s_per_generation
        self.sleep_s_per_call = sleep_s_per_call

    def generate(self, chats: Sequence[Chat], params: SamplingParams,
                 seeds: Sequence[int] | None = None) -> list[list[Generation]]:
        import json
        import time

        from agents.episodes import derive_seed

        if seeds is not None and len(seeds) != len(chats):
            raise ValueError(f"seeds has {len(seeds)} entries for {len(chats)} chats")
        if self.sleep_s_per_call > 0:
            time.sleep(self.sleep_s_per_call)
        out = []
        for i, chat in enumerate(chats):
            solution, entry = next((s, e) for key, s, e in self.answers if key in chat[0]["content"])
            if params.temperature == 0:
                seed: object = "greedy"
            else:
                seed = seeds[i] if seeds is not None else f"{params.seed}:{i}"
            gens = []
            for j in range(params.n):
                h = derive_seed(seed, json.dumps(chat), j)
                if (h % 4 != 0) if len(chat) > 1 else (h % 2 == 0):
                    text = f"Here you go.\n```python\n{solution}\n```"
                elif h % 3 == 0:
                    text = "```python\ndef broken(:\n    pass\n```"
                else:
                    text = f"```python\ndef {entry}(*args):\n    return None\n```"
                if self.cpu_s_per_generation > 0:
                    _burn(self.cpu_s_per_generation)
                gens.append(Generation(text, 10 + len(chat), 5 + h % 7))
            out.append(gens)
        return out


def _burn(seconds: float) -> None:
    """Keep one core busy for ``seconds`` of this thread's CPU time."""
    import time

    end = time.thread_time() + seconds
    x = 0
    while time.thread_time() < end:
        x += 1
