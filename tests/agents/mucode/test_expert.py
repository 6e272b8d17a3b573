"""agents.mucode.expert: the local search expert's argmax, betas, variants and tie-breaking."""

from __future__ import annotations

import pytest

from agents.mucode.expert import ExpertConfig, collect_candidates, select_experts
from agents.records import Trajectory, TurnRecord


def turn(resp: str, ok: bool, public: bool | None = None) -> TurnRecord:
    public = ok if public is None else public
    return TurnRecord(resp, f"code:{resp}", "" if public else "AssertionError", public, ok, "passed" if public else "wrong_answer")


def traj(pid: str, *turns: TurnRecord, i: int = 0) -> Trajectory:
    return Trajectory(problem_id=pid, env_id="MuCode-MBPP-v0", prompt=f"prompt {pid}", turns=list(turns), sample_index=i)


def fixed_scores(table: dict[str, float]):
    calls = []

    def score(prompts, responses):
        calls.append(len(responses))
        return [table.get(r, 0.0) for r in responses]

    score.calls = calls
    return score


DATA = [
    traj("A", turn("a1", False), turn("a2", False), turn("a3", True), i=0),
    traj("A", turn("a4", False), turn("a5", False), turn("a6", False), i=1),
    traj("B", turn("b1", False), turn("b2", False), i=0),
    traj("B", turn("b3", False), i=1),
]
SCORES = {"a1": 5.0, "a2": 0.0, "a3": 1.0, "a4": 9.0, "a5": 0.0, "a6": 0.5, "b1": 0.2, "b2": 3.0, "b3": 0.1}


def test_candidates_are_all_turns_in_data_order():
    groups = collect_candidates(DATA)
    assert [c.response for c in groups["A"]] == ["a1", "a2", "a3", "a4", "a5", "a6"]
    assert [c.response for c in groups["B"]] == ["b1", "b2", "b3"]
    assert [c.oracle for c in groups["A"]] == [0, 0, 1, 0, 0, 0]
    finals = collect_candidates(DATA, final_turns_only=True)
    assert [c.response for c in finals["A"]] == ["a3", "a6"]


def test_paper_betas_prefer_oracle_then_verifier():
    res = select_experts(DATA, ExpertConfig(), fixed_scores(SCORES))
    # A: a3 scores 1 + 0.1*1.0 = 1.1 > a4's 0 + 0.1*9 = 0.9
    assert res["A"].response == "a3" and res["A"].oracle == 1.0
    assert res["A"].score == pytest.approx(1.1)
    # B: nothing correct, the verifier decides, over ALL turns (an intermediate one wins)
    assert res["B"].response == "b2" and (res["B"].traj_index, res["B"].turn_index) == (2, 1)
    assert res["A"].n_candidates == 6
    assert res.accuracy() == pytest.approx(0.5)


def test_verifier_weight_can_override_oracle():
    res = select_experts(DATA, ExpertConfig(beta_oracle=1.0, beta_verifier=1.0), fixed_scores(SCORES))
    assert res["A"].response == "a4"  # 0 + 9 > 1 + 1


def test_ablation_betas():
    ov = select_experts(DATA, ExpertConfig.oracle_only())  # no verifier needed
    assert ov["A"].response == "a3"
    assert ov["B"].response == "b1"  # all tie at 0: the earliest candidate wins
    lv = select_experts(DATA, ExpertConfig.verifier_only(), fixed_scores(SCORES))
    assert lv["A"].response == "a4" and lv["B"].response == "b2"


def test_ties_are_broken_deterministically():
    data = [traj("C", turn("x", False), i=0), traj("C", turn("y", False), i=1), traj("C", turn("z", True), i=2)]
    flat = fixed_scores({})
    res = select_experts(data, ExpertConfig(beta_oracle=0.0, beta_verifier=1.0), flat)
    assert res["C"].response == "z"  # equal objective: the correct one first
    res2 = select_experts(data[:2], ExpertConfig(beta_oracle=0.0, beta_verifier=1.0), flat)
    assert res2["C"].response == "x"  # then data order
    again = select_experts(data[:2], ExpertConfig(beta_oracle=0.0, beta_verifier=1.0), flat)
    assert again.choices == res2.choices


def test_duplicate_responses_are_scored_once():
    data = [traj("D", turn("same", False), i=k) for k in range(5)]
    score = fixed_scores({})
    select_experts(data, ExpertConfig(), score)
    assert score.calls == [1]


def test_reference_variant_uses_this_iterations_final_turns():
    old = [traj("A", turn("old-correct", True), i=9)]
    cfg = ExpertConfig(variant="reference")
    scores = dict(SCORES, **{"old-correct": 100.0})
    res = select_experts(old + DATA, cfg, fixed_scores(scores), candidates_from=DATA)
    assert res["A"].response == "a3"  # 100*1 + 1 ; a4 (score 9) is not a final turn
    assert res["A"].score == pytest.approx(101.0)
    assert res["B"].response == "b2"  # finals b2 (3.0) vs b3 (0.1)


def test_config_validation_and_missing_verifier():
    with pytest.raises(ValueError, match="variant"):
        ExpertConfig(variant="nope")
    with pytest.raises(ValueError, match="both 0"):
        ExpertConfig(beta_oracle=0.0, beta_verifier=0.0)
    with pytest.raises(ValueError, match="needs a verifier"):
        select_experts(DATA, ExpertConfig())
