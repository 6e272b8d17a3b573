"""baselines.rft: the RFT / STaR training sets (paper, reference, RFT_LV) and the trainer end to end."""

from __future__ import annotations

import json

import pytest
import torch

import mucode_env
from agents.mucode.expert import ExpertConfig, select_experts
from agents.scripted import ScriptedPolicy
from agents.records import Trajectory, TurnRecord
from agents.mucode.relabel import relabel
from baselines.rft import RFTConfig, RFTTrainer, build_rft_dataset

torch.set_num_threads(1)



def turn(response: str, ok: bool, public: bool | None = None) -> TurnRecord:
    public = ok if public is None else public
    return TurnRecord(response=response, code=response, feedback="Code passed all tests" if public else "boom",
                      public_passed=public, private_passed=ok, status="passed" if public else "wrong_answer")


def trajectories() -> list[Trajectory]:
    return [
        Trajectory("P/1", "E", "Q1", [turn("a1", False), turn("a2", True)], sample_index=0),  # correct after retry
        Trajectory("P/1", "E", "Q1", [turn("b1", False), turn("b2", False)], sample_index=1),  # wrong
        Trajectory("P/1", "E", "Q1", [turn("c1", True)], sample_index=2),  # correct at once
        Trajectory("P/2", "E", "Q2", [turn("d1", False, public=True)], sample_index=0),  # public only
        Trajectory("P/2", "E", "Q2", [turn("e1", False), turn("e2", False)], sample_index=1),
    ]


def obs_messages(traj: Trajectory, t: int):
    history = tuple({"response": x.response, "code": x.code, "feedback": x.feedback} for x in traj.turns[:t])
    return mucode_env.to_messages({"problem_id": traj.problem_id, "turn": t, "prompt": traj.prompt, "history": history})


def test_paper_variant_maps_each_state_of_correct_trajectories_to_its_own_action():
    trajs = trajectories()
    rows = build_rft_dataset(trajs)
    assert [(r["problem_id"], r["turn"], r["completion"][0]["content"]) for r in rows] == [
        ("P/1", 0, "a1"), ("P/1", 1, "a2"), ("P/1", 0, "c1")]
    assert rows[0]["prompt"] == obs_messages(trajs[0], 0) == [{"role": "user", "content": "Q1"}]
    assert rows[1]["prompt"] == obs_messages(trajs[0], 1)
    assert rows[1]["prompt"][-1] == {"role": "user", "content": "Feedback:\nboom"}
    assert all(r["source"] == "own" and r["completion"][0]["role"] == "assistant" for r in rows)


def test_reference_variant_maps_every_prefix_to_the_final_correct_code():
    rows = build_rft_dataset(trajectories(), "reference")
    assert [(r["turn"], r["completion"][0]["content"]) for r in rows] == [(0, "a2"), (1, "a2"), (0, "c1")]
    assert {r["source"] for r in rows} == {"final"}


def test_lv_variant_keeps_the_top_k_by_verifier_without_relabeling():
    scores = {"a2": 0.1, "b2": 0.9, "c1": 0.5, "d1": 2.0, "e2": -1.0}
    calls = []

    def score_fn(prompts, responses):
        calls.append(list(zip(prompts, responses)))
        return [scores[r] for r in responses]

    rows = build_rft_dataset(trajectories(), "lv", score_fn=score_fn, top_k=1)
    # per prompt the best final response: b2 (a wrong trajectory) for Q1, d1 for Q2; own actions kept
    assert [(r["problem_id"], r["completion"][0]["content"]) for r in rows] == [("P/1", "b1"), ("P/1", "b2"),
                                                                                ("P/2", "d1")]
    assert calls[0][0] == ("Q1", "a2")  # the verifier sees the problem and the final response only
    rows3 = build_rft_dataset(trajectories(), "lv", score_fn=score_fn, top_k=3)
    assert {r["completion"][0]["content"] for r in rows3} == {"a1", "a2", "b1", "b2", "c1", "d1", "e1", "e2"}
    with pytest.raises(ValueError, match="score_fn"):
        build_rft_dataset(trajectories(), "lv")
    with pytest.raises(ValueError, match="variant"):
        build_rft_dataset(trajectories(), "star")


def test_rows_have_the_relabel_format_and_dedupe():
    trajs = trajectories()
    ours = build_rft_dataset(trajs)
    theirs = relabel(trajs, select_experts(trajs, ExpertConfig.oracle_only()))
    assert set(ours[0]) == set(theirs[0])
    same_state = next(r for r in theirs if r["problem_id"] == "P/1" and r["turn"] == 1)
    assert same_state["prompt"] == ours[1]["prompt"]
    dup = trajs + [trajs[2]]
    assert len(build_rft_dataset(dup)) == 4 and len(build_rft_dataset(dup, deduplicate=True)) == 3


def test_config_validation_and_presets():
    with pytest.raises(ValueError, match="rft_variant"):
        RFTConfig(rft_variant="nope")
    cfg = RFTConfig.cpu(run_dir="x", rft_variant="lv")
    assert isinstance(cfg, RFTConfig) and cfg.rft_variant == "lv" and cfg.iterations == 2
    assert RFTConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_rft_trainer_one_iteration_end_to_end(tmp_path, tiny_model_dir, data_dir):
    from agents.training.sft import SFTRunConfig
    from agents.mucode import RolloutSettings, ValidationSettings
    from agents.mucode.verifier import VerifierConfig
    from mucode_env.datasets import load_problems

    ids = ("MBPP/602", "MBPP/603")
    problems = {p.id: p for p in load_problems("mbpp", "train", data_dir=str(data_dir))}
    sols = {problems[i].prompt[:60]: problems[i].reference_solution for i in ids}
    fast = dict(warmup_ratio=0.0, lr_scheduler_type="constant", progress=False)
    cfg = RFTConfig(
        run_dir=str(tmp_path / "rft"), env_id="MuCode-MBPP-v0", train_problem_ids=ids, data_dir=str(data_dir),
        generator=str(tiny_model_dir), rollout_backend="scripted", iterations=1,
        rollout=RolloutSettings(rollouts_per_problem=2, max_new_tokens=8, max_turns=2, max_live_episodes=8),
        verifier=VerifierConfig(pairs_per_prompt=2, learning_rate=1e-3, epochs=1, batch_size=4, per_device_batch_size=4,
                                max_length=1024, **fast),
        sft=SFTRunConfig(learning_rate=1e-3, epochs=1, batch_size=4, per_device_batch_size=4, max_length=1024, **fast),
        validation=ValidationSettings(enabled=False), progress=False, rft_variant="paper",
    )
    report = RFTTrainer(cfg, lambda model, backend: ScriptedPolicy(sols)).train()
    it = tmp_path / "rft" / "iter1"
    rows = [json.loads(x) for x in (it / "rft_dataset.jsonl").read_text().splitlines()]
    rollouts = [Trajectory.from_row(json.loads(x)) for x in (it / "rollouts.jsonl").read_text().splitlines()]
    assert rows == json.loads(json.dumps(build_rft_dataset(rollouts)))
    done = json.loads((it / "relabel.done").read_text())
    assert done["method"] == "rft:paper" and done["n_examples"] == len(rows) > 0
    assert (it / "generator" / "config.json").is_file()
    assert report["best"]["generator"] == str(it / "generator")

    # a second RFT run (reference variant) shares the first run's rollouts and verifier: it must
    # not roll out or train a verifier again, and it trains on the very same trajectories
    from agents.mucode import share_stages

    def no_rollouts(model, backend):
        raise AssertionError("shared rollouts must not be redone")

    cfg2 = RFTConfig(**{**cfg.__dict__, "run_dir": str(tmp_path / "rft2"), "rft_variant": "reference"})
    assert share_stages(cfg.run_dir, cfg2.run_dir) == ["rollouts", "verifier"]
    assert share_stages(cfg.run_dir, cfg2.run_dir) == []  # already there: left alone
    verifier_done = (tmp_path / "rft2" / "iter1" / "verifier.done").read_text()
    RFTTrainer(cfg2, no_rollouts).train()
    it2 = tmp_path / "rft2" / "iter1"
    assert (it2 / "rollouts.jsonl").read_text() == (it / "rollouts.jsonl").read_text()
    assert (it2 / "verifier.done").read_text() == verifier_done
    rows2 = [json.loads(x) for x in (it2 / "rft_dataset.jsonl").read_text().splitlines()]
    assert rows2 == json.loads(json.dumps(build_rft_dataset(rollouts, "reference")))
    assert (it2 / "generator" / "config.json").is_file()


def test_share_stages_refuses_unfinished_or_unknown_stages(tmp_path):
    from agents.mucode import share_stages

    src = tmp_path / "src" / "iter1"
    (src / "rollouts").mkdir(parents=True)
    (src / "rollouts.jsonl").write_text("{}\n")
    with pytest.raises(ValueError, match=r"\[.rollouts.\] are not finished"):
        share_stages(tmp_path / "src", tmp_path / "dst", stages=("rollouts",))
    assert not (tmp_path / "dst").exists()
    with pytest.raises(ValueError, match="cannot share stage"):
        share_stages(tmp_path / "src", tmp_path / "dst", stages=("generator",))
    (src / "rollouts.done").write_text("{}")
    assert share_stages(tmp_path / "src", tmp_path / "dst", stages=("rollouts",)) == ["rollouts"]
    assert (tmp_path / "dst" / "iter1" / "rollouts.jsonl").read_text() == "{}\n"
