"""Metrics against hand-computed values and the brute-force definition of pass@k."""

from __future__ import annotations

import itertools
import math

import pytest

from mucode_env.metrics import (accuracy_by_turn, accuracy_interval, paired_bootstrap, pass_at_k, turns_to_solve,
                                wilson_interval)


def brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    samples = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n,c,k", [(5, 0, 1), (5, 1, 1), (5, 2, 3), (6, 3, 2), (8, 8, 4), (7, 1, 7)])
def test_pass_at_k_matches_its_definition(n, c, k):
    assert math.isclose(pass_at_k(n, c, k), brute_force_pass_at_k(n, c, k), rel_tol=1e-9, abs_tol=1e-12)


def test_pass_at_k_rejects_bad_arguments():
    for args in ((5, 6, 1), (5, 1, 0), (5, 1, 6), (5, -1, 1)):
        with pytest.raises(ValueError):
            pass_at_k(*args)


def test_accuracy_by_turn_keeps_the_last_answer_of_early_stoppers():
    episodes = [[1.0], [0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    assert accuracy_by_turn(episodes, 3) == [0.25, 0.5, 0.75]
    assert accuracy_by_turn([], 2) == [0.0, 0.0]
    assert turns_to_solve(episodes) == pytest.approx((1 + 2 + 3) / 3)
    assert turns_to_solve([[0.0]]) is None


def test_wilson_interval_contains_the_estimate_and_stays_in_range():
    for successes, n in ((0, 10), (10, 10), (37, 100)):
        low, high = wilson_interval(successes, n)
        assert 0.0 <= low <= successes / n <= high <= 1.0
    low, high = wilson_interval(50, 100)
    assert high - low == pytest.approx(0.19, abs=0.01)


def test_intervals():
    assert accuracy_interval([1.0, 0.0, 1.0, 1.0]) == wilson_interval(3, 4)
    lo, hi = accuracy_interval([0.5, 0.7, 0.2, 0.9, 0.4], n_bootstrap=500)
    assert 0.2 <= lo < 0.54 < hi <= 0.9
    d = paired_bootstrap({"a": 1.0, "b": 1.0, "c": 0.0, "x": 1.0}, {"a": 0.0, "b": 1.0, "c": 0.0})
    assert d["n"] == 3 and d["diff"] == pytest.approx(1 / 3) and d["lo"] <= 1 / 3 <= d["hi"]
    assert paired_bootstrap({"a": 1.0}, {"b": 1.0})["n"] == 0


def test_detectable_difference_shrinks_with_n_and_grows_with_discordance():
    from mucode_env.metrics import discordance, paired_detectable_difference

    small, large = paired_detectable_difference(100, 0.15), paired_detectable_difference(400, 0.15)
    assert large["mde"] == pytest.approx(small["mde"] / 2)  # 1/sqrt(n)
    assert paired_detectable_difference(400, 0.3)["mde"] > large["mde"]
    assert large["half_width"] == pytest.approx(1.959964 * math.sqrt(0.15 / 400), rel=1e-5)
    # a simulation: with 15% discordance and a true 5-point gain, 500 problems detect it ~80% of the time
    import random

    rng, hits = random.Random(0), 0
    for _ in range(400):
        d = [(1 if rng.random() < 0.10 else -1 if rng.random() < 0.05 / 0.9 else 0) for _ in range(500)]
        mean = sum(d) / 500
        se = math.sqrt(sum(x * x for x in d) / 500 / 500)
        hits += mean - 1.96 * se > 0
    assert 0.65 < hits / 400 < 0.95
    assert discordance({"a": 1, "b": 0, "c": 1}, {"a": 1, "b": 1, "x": 0}) == 0.5
    with pytest.raises(ValueError):
        paired_detectable_difference(0, 0.1)
