"""Evaluation metrics: per-turn accuracy, unbiased pass@k, turns-to-solve, confidence intervals."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al., 2021): 1 - C(n-c, k) / C(n, k).

    >>> round(pass_at_k(10, 3, 1), 3)
    0.3
    """
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def accuracy_by_turn(turn_rewards: Sequence[Sequence[float]], max_turns: int) -> list[float]:
    """Accuracy after each turn t = 1..max_turns.

    Each episode is its list of per-turn oracle rewards. An episode that stopped early keeps its
    last answer, so accuracy after turn t is the oracle of turn min(t, len(episode)).
    """
    if max_turns < 1:
        raise ValueError(f"max_turns must be >= 1, got {max_turns}")
    if not turn_rewards:
        return [0.0] * max_turns
    out = []
    for t in range(1, max_turns + 1):
        scores = [float(ep[min(t, len(ep)) - 1]) if ep else 0.0 for ep in turn_rewards]
        out.append(sum(scores) / len(scores))
    return out


def turns_to_solve(turn_rewards: Sequence[Sequence[float]]) -> float | None:
    """Mean number of turns used by the episodes whose final answer is correct (None if none)."""
    solved = [len(ep) for ep in turn_rewards if ep and ep[-1] == 1.0]
    return sum(solved) / len(solved) if solved else None


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a proportion (well-behaved at 0 and n)."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))
