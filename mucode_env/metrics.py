"""Evaluation metrics, all in one place: accuracy by turn, unbiased pass@k, turns-to-solve,
confidence intervals of an accuracy and paired-bootstrap intervals of a difference."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

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


def accuracy_by_turn(turn_rewards: Sequence[Sequence[float]], max_turns: int,
                     problem_ids: Sequence[str] | None = None) -> list[float]:
    """Accuracy after each turn t = 1..max_turns.

    Each episode is its list of per-turn oracle rewards. An episode that stopped early keeps its
    last answer, so accuracy after turn t is the oracle of turn min(t, len(episode)). The mean is
    over episodes; with ``problem_ids`` (one per episode) it is over problems, each problem
    counting once whatever its number of episodes (independent Best-of-N repeats).

    >>> accuracy_by_turn([[0, 1], [1]], 3)
    [0.5, 1.0, 1.0]
    >>> accuracy_by_turn([[0], [0], [1]], 1, problem_ids=["a", "a", "b"])
    [0.5]
    """
    if max_turns < 1:
        raise ValueError(f"max_turns must be >= 1, got {max_turns}")
    if not turn_rewards:
        return [0.0] * max_turns
    if problem_ids is not None and len(problem_ids) != len(turn_rewards):
        raise ValueError(f"got {len(problem_ids)} problem ids for {len(turn_rewards)} episodes")
    groups: dict[object, list[Sequence[float]]] = {}
    for i, episode in enumerate(turn_rewards):
        groups.setdefault(problem_ids[i] if problem_ids is not None else i, []).append(episode)
    out = []
    for t in range(1, max_turns + 1):
        means = [sum(float(ep[min(t, len(ep)) - 1]) if ep else 0.0 for ep in eps) / len(eps)
                 for eps in groups.values()]
        out.append(sum(means) / len(means))
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



def accuracy_interval(values: Sequence[float], *, n_bootstrap: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% interval of a mean accuracy over problems: Wilson for 0/1 scores, else a percentile
    bootstrap over problems (scores averaged over repeats)."""
    v = np.asarray(list(values), dtype=float)
    if v.size == 0:
        return (0.0, 1.0)
    if np.all((v == 0) | (v == 1)):
        return wilson_interval(int(v.sum()), int(v.size))
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_bootstrap, v.size))].mean(axis=1)
    return (float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975)))


def paired_bootstrap(a: Mapping[str, float], b: Mapping[str, float], *, n_bootstrap: int = 2000,
                     seed: int = 0) -> dict[str, float]:
    """Mean difference a - b over the problems both evaluated, with a paired-bootstrap 95% CI.

    Returns:
        ``{"diff", "lo", "hi", "n", "p_le_0"}``: ``p_le_0`` is the bootstrap share of resamples
        with a difference <= 0 (a one-sided p-value for "a beats b").
    """
    common = sorted(set(a) & set(b))
    if not common:
        return {"diff": float("nan"), "lo": float("nan"), "hi": float("nan"), "n": 0, "p_le_0": float("nan")}
    d = np.array([a[k] - b[k] for k in common], dtype=float)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(n_bootstrap, d.size))].mean(axis=1)
    return {"diff": float(d.mean()), "lo": float(np.quantile(means, 0.025)), "hi": float(np.quantile(means, 0.975)),
            "n": int(d.size), "p_le_0": float((means <= 0).mean())}


def paired_detectable_difference(n: int, discordance: float, *, alpha: float = 0.05,
                                 power: float = 0.8) -> dict[str, float]:
    """How small a paired accuracy difference an evaluation on ``n`` problems can detect.

    Two methods scored 0/1 on the same problems differ on a fraction ``discordance`` of them (the
    problems one solves and the other does not). Their mean difference has a standard error of
    about ``sqrt(discordance / n)`` (McNemar's normal approximation, exact when the difference is
    small), so:

    - ``half_width``: the half-width of the two-sided ``1 - alpha`` interval of a difference
      (an observed difference larger than this excludes zero);
    - ``mde``: the minimum detectable difference, detected with probability ``power`` at level
      ``alpha`` (two-sided): ``(z_{1-alpha/2} + z_{power}) * se``.

    >>> round(paired_detectable_difference(500, 0.15)["mde"], 3)
    0.049
    """
    from statistics import NormalDist

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 < discordance <= 1:
        raise ValueError(f"discordance must be in (0, 1], got {discordance}")
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError(f"alpha and power must be in (0, 1), got {alpha}, {power}")
    se = math.sqrt(discordance / n)
    z_alpha = NormalDist().inv_cdf(1 - alpha / 2)
    z_power = NormalDist().inv_cdf(power)
    return {"n": n, "discordance": discordance, "se": se, "half_width": z_alpha * se,
            "mde": (z_alpha + z_power) * se}


def discordance(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    """The fraction of the problems both scored where 0/1 outcomes differ (scores rounded)."""
    common = sorted(set(a) & set(b))
    if not common:
        raise ValueError("the two score sets share no problem")
    return sum(round(a[k]) != round(b[k]) for k in common) / len(common)
