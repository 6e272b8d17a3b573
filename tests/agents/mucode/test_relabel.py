"""agents.mucode.relabel: every prefix state -> y*, rendered like the env; completion-only loss masking."""

from __future__ import annotations

import pytest
import torch

from agents.mucode.expert import ExpertConfig, select_experts
from agents.records import Trajectory, TurnRecord
from agents.mucode.relabel import relabel, render_state, state_messages
from mucode_env.prompts import FEEDBACK_PREFIX
from agents.tiny import make_tiny_causal_lm

torch.set_num_threads(1)


def turn(resp: str, ok: bool, fb: str = "") -> TurnRecord:
    return TurnRecord(resp, f"code:{resp}", fb or ("Code passed all tests" if ok else f"fail after {resp}"), ok, ok,
                      "passed" if ok else "wrong_answer")


def traj(pid: str, *turns: TurnRecord, i: int = 0) -> Trajectory:
    return Trajectory(problem_id=pid, env_id="MuCode-MBPP-v0", prompt=f"Write {pid}", turns=list(turns), sample_index=i)


DATA = [
    traj("A", turn("a1", False), turn("a2", False), turn("a3", True), i=0),
    traj("A", turn("a4", False), i=1),
    traj("B", turn("b1", False), turn("b2", False), i=0),
]


def test_every_prefix_state_gets_the_expert_target():
    experts = select_experts(DATA, ExpertConfig.oracle_only())
    rows = relabel(DATA, experts)
    assert len(rows) == 3 + 1 + 2  # one example per state of every trajectory
    a_rows = [r for r in rows if r["problem_id"] == "A"]
    assert all(r["completion"] == [{"role": "assistant", "content": "a3"}] for r in a_rows)
    assert [r["turn"] for r in a_rows] == [0, 1, 2, 0]
    s0, s1, s2 = (r["prompt"] for r in a_rows[:3])
    assert s0 == [{"role": "user", "content": "Write A"}]
    assert s1 == s0 + [{"role": "assistant", "content": "a1"}, {"role": "user", "content": FEEDBACK_PREFIX + "fail after a1"}]
    assert s2 == s1 + [{"role": "assistant", "content": "a2"}, {"role": "user", "content": FEEDBACK_PREFIX + "fail after a2"}]
    assert all(r["prompt"][-1]["role"] == "user" for r in rows)
    b_rows = [r for r in rows if r["problem_id"] == "B"]
    assert all(r["completion"][0]["content"] == "b1" for r in b_rows)  # ties -> earliest


def test_rendering_matches_the_environment():
    history = [{"response": "r1", "code": "c1", "feedback": "boom"}]
    assert render_state("P", history) == [{"role": "user", "content": "P"}, {"role": "assistant", "content": "r1"},
                                          {"role": "user", "content": "Feedback:\nboom"}]
    assert state_messages(DATA[0], 1) == render_state("Write A", [{"response": "a1", "code": "", "feedback": "fail after a1"}])
    with pytest.raises(ValueError):
        state_messages(DATA[1], 3)


def test_reference_variant_relabels_top_failed_and_keeps_successes():
    data = [
        traj("A", turn("ok", True), i=0),
        traj("A", turn("f1", False), i=1),
        traj("A", turn("f2", False), i=2),
        traj("A", turn("f3", False), i=3),
        traj("A", turn("f4", False), i=4),
    ]
    table = {"ok": 0.0, "f1": 0.1, "f2": 0.9, "f3": 0.5, "f4": 0.7}
    experts = select_experts(
        data, ExpertConfig(variant="reference", reference_top_k_failed=2),
        lambda p, r: [table[x] for x in r],
    )
    rows = relabel(data, experts)
    assert [(r["prompt"] == [{"role": "user", "content": "Write A"}], r["completion"][0]["content"], r["source"]) for r in rows] == [
        (True, "ok", "own"), (True, "ok", "expert"), (True, "ok", "expert")
    ]
    assert len(rows) == 3  # the success itself + f2 and f4 (the two best-scored failures)


def test_sft_pipeline_masks_prompt_and_history(tmp_path):
    """Tokenise a relabeled multi-turn example through SFTTrainer: loss only on the completion."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    path = make_tiny_causal_lm(tmp_path / "tiny")
    tok = AutoTokenizer.from_pretrained(path)
    experts = select_experts(DATA, ExpertConfig.oracle_only())
    rows = [{"prompt": r["prompt"], "completion": r["completion"]} for r in relabel(DATA, experts)]
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(path),
        args=SFTConfig(output_dir=str(tmp_path / "out"), report_to="none", bf16=False, max_length=512,
                       completion_only_loss=True, gradient_checkpointing=False, disable_tqdm=True, shuffle_dataset=False),
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
    )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
    for i, row in enumerate(rows):
        prompt_ids = tok.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
        full_ids = tok.apply_chat_template(row["prompt"] + row["completion"], tokenize=True, return_dict=True)["input_ids"]
        assert full_ids[: len(prompt_ids)] == prompt_ids
        ids, labels = batch["input_ids"][i], batch["labels"][i]
        n = len(full_ids)
        assert ids[:n].tolist() == full_ids
        assert (labels[: len(prompt_ids)] == -100).all()  # prompt + history (+ generation prompt) masked
        assert labels[len(prompt_ids) : n].tolist() == full_ids[len(prompt_ids) :]  # completion trained
        assert (labels[n:] == -100).all()  # padding masked
        completion_text = tok.decode(full_ids[len(prompt_ids) :])
        assert completion_text.startswith(row["completion"][0]["content"])
