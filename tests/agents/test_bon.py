"""agents.bon: multi-turn Best-of-N selectors, stopping rule, scoring and records."""

from __future__ import annotations

import pytest

from agents.bon import BoNConfig, best_of_n, pick, scored_candidates
from agents.episodes import Candidates
from agents.policy import Generation
from mucode_env.metrics import accuracy_by_turn

IDS = ("MBPP/11", "MBPP/12")
WRONG = "```python\ndef nope():\n    return None\n```"


class CandidatePolicy:
    """Candidate j of every call: `texts[j]` (per problem: a dict prompt-prefix -> list of texts)."""

    def __init__(self, table):
        self.table = table
        self.params = []

    def generate(self, chats, params):
        self.params.append(params)
        out = []
        for chat in chats:
            texts = next(v for k, v in self.table.items() if k in chat[0]["content"])
            out.append([Generation(texts[j % len(texts)], 3, 4) for j in range(params.n)])
        return out


@pytest.fixture(scope="module")
def problems(data_dir):
    from mucode_env.datasets import load_problems

    ps = {p.id: p for p in load_problems("mbpp", "test", data_dir=str(data_dir))}
    return [ps[i] for i in IDS]


def _good(p):
    return f"```python\n{p.reference_solution}\n```"


def test_pick_rules():
    import random

    rng = random.Random(0)
    def c(passed, scores=None):
        return Candidates(0, 0, "p", [Generation(f"x{i}") for i in range(len(passed))], passed, scores)

    assert pick("pt+lv", c([False, True, True], [9.0, 1.0, 2.0]), rng) == 2  # public pass first, then verifier
    assert pick("pt+lv", c([False, False], [1.0, 3.0]), rng) == 1  # none pass: verifier
    assert pick("lv", c([True, False], [1.0, 3.0]), rng) == 1
    assert all(pick("pt", c([False, True, False]), random.Random(s)) == 1 for s in range(5))
    picks = {pick("random", c([False] * 4), random.Random(s)) for s in range(40)}
    assert picks == {0, 1, 2, 3}
    # one distinct text in the pool: its first, no score read
    same = Candidates(0, 0, "p", [Generation("a"), Generation("b"), Generation("b")], [False, True, True],
                      [None, None, None])
    assert pick("pt+lv", same, rng) == 1


def _pick_scoring_all(selector, passed, scores):
    """The rule as it was when every candidate was scored (the reference for the lazy one)."""
    n = len(passed)
    pool = list(range(n)) if selector == "lv" else ([i for i in range(n) if passed[i]] or list(range(n)))
    best = max(scores[i] for i in pool)
    return min(i for i in pool if scores[i] == best)


@pytest.mark.parametrize("selector", ["pt+lv", "lv"])
def test_scoring_only_what_the_selector_reads_keeps_every_pick(selector):
    import random

    rng = random.Random(7)
    for _ in range(2000):
        n = rng.randint(1, 6)
        texts = [rng.choice("abcd") for _ in range(n)]  # duplicates are common at low temperature
        passed = [rng.random() < 0.4 for _ in range(n)]
        score_of = {t: rng.choice([0.0, 0.5, 1.0, rng.random()]) for t in "abcd"}  # a text's score is fixed
        wanted = scored_candidates(selector, passed, texts)
        lazy = [score_of[t] if i in wanted else None for i, t in enumerate(texts)]
        c = Candidates(0, 0, "p", [Generation(t) for t in texts], passed, lazy)
        assert pick(selector, c, rng) == _pick_scoring_all(selector, passed, [score_of[t] for t in texts])
    assert scored_candidates("pt", [True, False], ["a", "b"]) == []
    assert scored_candidates("pt+lv", [True, False, True], ["a", "b", "a"]) == []  # one text passes
    assert scored_candidates("pt+lv", [True, False, True], ["a", "b", "c"]) == [0, 2]
    assert scored_candidates("lv", [True, False, True], ["a", "b", "a"]) == [0, 1, 2]


def test_pt_lv_picks_the_passing_candidate_and_stops(problems, data_dir):
    table = {p.prompt[:60]: [WRONG, _good(p), WRONG] for p in problems}
    policy = CandidatePolicy(table)
    scored = []
    def scores(prompts, responses):  # the verifier prefers the wrong answer
        scored.extend(responses)
        return [1.0 if r == WRONG else 0.0 for r in responses]
    res = best_of_n(policy, "MuCode-MBPP-v0", BoNConfig(n=3, progress=False), verifier=scores,
                    problem_ids=IDS, split="test", data_dir=str(data_dir))
    assert scored == []  # one candidate passed each time: its score could not change the pick
    assert res.accuracy == 1.0 and res.n_problems == 2
    assert all(len(t.turns) == 1 and t.turns[0].public_passed for t in res.trajectories)
    assert res.accuracy_by_turn == [1.0, 1.0, 1.0]
    assert policy.params[0].temperature == 0.7 and policy.params[0].n == 3
    # LV alone follows the (bad) verifier: never passes, runs all T turns with feedback appended
    res_lv = best_of_n(CandidatePolicy(table), "MuCode-MBPP-v0", BoNConfig(n=3, selector="lv", progress=False),
                       verifier=scores, problem_ids=IDS, split="test", data_dir=str(data_dir))
    assert res_lv.accuracy == 0.0
    assert len(scored) == 2 * 3 * 2  # each distinct text of every turn once: 2 problems, 3 turns, 2 texts
    assert res_lv.stats["verifier_programs"] == 12
    assert all(len(t.turns) == 3 and t.turns[0].response == WRONG for t in res_lv.trajectories)


def test_multi_turn_feedback_and_greedy_n1_and_repeats(problems, data_dir):
    class SecondTurnRight:
        def __init__(self):
            self.seen = []

        def generate(self, chats, params):
            self.seen.append((params, [len(c) for c in chats], [c[-1]["content"] for c in chats]))
            return [[Generation(_good(next(p for p in problems if p.prompt[:60] in c[0]["content"])) if len(c) > 1 else WRONG)]
                    for c in chats]

    pol = SecondTurnRight()
    res = best_of_n(pol, "MuCode-MBPP-v0", BoNConfig(n=1, repeats=2, progress=False), problem_ids=IDS, split="test",
                    data_dir=str(data_dir))
    assert pol.seen[0][0].temperature == 0.0  # N = 1: greedy
    assert pol.seen[1][1] == [3, 3] and all(m.startswith("Feedback:\n") for m in pol.seen[1][2])
    assert len(res.trajectories) == 4 and res.accuracy == 1.0
    assert res.accuracy_by_turn[:2] == [0.0, 1.0]
    assert {t.sample_index for t in res.trajectories} == {0, 1}


def test_verifier_required_and_config_validation():
    with pytest.raises(ValueError, match="selector"):
        BoNConfig(selector="best")
    with pytest.raises(ValueError, match="needs a verifier"):
        best_of_n(CandidatePolicy({}), "MuCode-MBPP-v0", BoNConfig(n=2))


def test_accuracy_by_turn_averages_repeats_per_problem():
    rewards = [[0.0, 1.0], [0.0, 0.0, 0.0], [1.0]]
    assert accuracy_by_turn(rewards, 3, problem_ids=["A", "A", "B"]) == [0.5, 0.75, 0.75]
    assert accuracy_by_turn(rewards, 3) == [1 / 3, 2 / 3, 2 / 3]  # per episode


# ---- a stored evaluation resumes ------------------------------------------------------------------
RESUME_IDS = ("MBPP/11", "MBPP/12", "MBPP/13", "MBPP/14", "MBPP/15", "MBPP/16")


class _Killed(Exception):
    pass


class _DiesAfter:
    """Wraps a policy; its ``calls``-th generate call raises, as a killed run stops."""

    name = "seeded-scripted"

    def __init__(self, policy, calls):
        self.policy, self.calls = policy, calls

    def generate(self, chats, params, seeds=None):
        self.calls -= 1
        if self.calls < 0:
            raise _Killed
        return self.policy.generate(chats, params, seeds=seeds)


def _picks(res):
    return [(t.problem_id, t.sample_index, [u.response for u in t.turns]) for t in res.trajectories]


@pytest.fixture(scope="module")
def resume_problems(data_dir):
    from mucode_env.datasets import load_problems

    ps = {p.id: p for p in load_problems("mbpp", "test", data_dir=str(data_dir))}
    return [ps[i] for i in RESUME_IDS]


@pytest.mark.parametrize("continuous", [False, True], ids=["rounds", "continuous"])
def test_an_interrupted_stored_run_resumes_to_the_uninterrupted_result(resume_problems, data_dir, tmp_path,
                                                                       continuous):
    from agents.episode_store import load_trajectories
    from agents.scripted import SeededScriptedPolicy

    # the random selector: its picks depend on each episode's index in the run, which a resumed
    # run must keep
    config = BoNConfig(n=3, selector="random", repeats=2, progress=False)
    common = dict(problem_ids=RESUME_IDS, split="test", data_dir=str(data_dir),
                  policy_name="seeded")
    reference = best_of_n(SeededScriptedPolicy(resume_problems), "MuCode-MBPP-v0", config, **common)
    assert any(len(t.turns) > 1 for t in reference.trajectories)  # feedback turns too

    store = tmp_path / "cell"
    bounded = BoNConfig(n=3, selector="random", repeats=2, progress=False, max_live=2)
    dying = _DiesAfter(SeededScriptedPolicy(resume_problems), 9)
    dying.concurrent_generate = continuous  # continuous play: the kill comes from an episode's thread
    with pytest.raises(_Killed):  # killed in the middle of the second repeat
        best_of_n(dying, "MuCode-MBPP-v0", bounded, store_dir=store, **common)

    kept = load_trajectories(store / "shards")
    assert 0 < len(kept) < 2 * len(RESUME_IDS)  # some episodes were saved before the kill, not all
    resumed = best_of_n(SeededScriptedPolicy(resume_problems), "MuCode-MBPP-v0", bounded, store_dir=store, **common)
    assert resumed.stats["resumed_episodes"] == len(kept)
    assert resumed.stats["episodes"] == 2 * len(RESUME_IDS) - len(kept)  # only the missing ones were played
    assert _picks(resumed) == _picks(reference)  # same samples, same picks, same order
    assert resumed.per_problem == reference.per_problem
    assert resumed.accuracy_by_turn == reference.accuracy_by_turn
    stored = load_trajectories(store / "shards")
    assert sorted((t.problem_id, t.sample_index) for t in stored) == sorted(
        (pid, r) for pid in RESUME_IDS for r in range(2))  # each episode saved exactly once

    # a finished store is a complete answer: nothing is played again
    again = best_of_n(_DiesAfter(SeededScriptedPolicy(resume_problems), 0), "MuCode-MBPP-v0", bounded,
                      store_dir=store, **common)
    assert _picks(again) == _picks(reference) and again.stats["episodes"] == 0


def test_a_store_refuses_another_configuration(resume_problems, data_dir, tmp_path):
    from agents.scripted import SeededScriptedPolicy

    common = dict(problem_ids=RESUME_IDS[:2], split="test", data_dir=str(data_dir), store_dir=tmp_path / "cell")
    best_of_n(SeededScriptedPolicy(resume_problems), "MuCode-MBPP-v0", BoNConfig(n=2, selector="pt", progress=False),
              **common)
    with pytest.raises(ValueError, match="different configuration.*temperature"):
        best_of_n(SeededScriptedPolicy(resume_problems), "MuCode-MBPP-v0",
                  BoNConfig(n=2, selector="pt", temperature=0.9, progress=False), **common)
    with pytest.raises(ValueError, match="problem_ids"):
        best_of_n(SeededScriptedPolicy(resume_problems), "MuCode-MBPP-v0", BoNConfig(n=2, selector="pt", progress=False),
                  **{**common, "problem_ids": RESUME_IDS[:3]})
    # how episodes are played is not part of the identity
    best_of_n(SeededScriptedPolicy(resume_problems), "MuCode-MBPP-v0",
              BoNConfig(n=2, selector="pt", progress=False, max_live=1), **common)
    with pytest.raises(ValueError, match="max_live"):
        BoNConfig(max_live=0)
