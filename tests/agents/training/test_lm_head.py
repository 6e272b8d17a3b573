"""agents.training.lm_head: TRL's fused LM head scores only labelled positions on the CPU too,
with the same loss and gradients as scoring every position."""

from __future__ import annotations

import logging

import pytest
import torch

import trl.trainer.utils as trl_utils
from agents.training.lm_head import compact_lm_head
from agents.training.sft import SFTRunConfig, finetune, read_train_stats

torch.set_num_threads(1)


@pytest.fixture
def fused_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    trl_utils.add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    return model


@pytest.fixture
def projected_rows(monkeypatch):
    """How many positions each call of TRL's chunked LM head projected."""
    seen: list[int] = []
    real = trl_utils._ChunkedLogProbFunction

    class Spy:
        @staticmethod
        def apply(hidden, *args):
            seen.append(int(hidden.shape[0]))
            return real.apply(hidden, *args)

    monkeypatch.setattr(trl_utils, "_ChunkedLogProbFunction", Spy)
    return seen


def _batch(n_prompt: int = 40, n_completion: int = 7):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 500, (2, n_prompt + n_completion), generator=g)
    labels = ids.clone()
    labels[:, :n_prompt] = -100
    labels[1, -2:] = -100  # padding at the end of the second row
    return ids, labels


def _loss_and_grads(model, ids, labels):
    model.zero_grad(set_to_none=True)
    out = model(input_ids=ids, labels=labels, fused_lm_head=True)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, grads


def test_cpu_scores_only_the_labelled_positions_with_the_same_loss_and_gradients(fused_model, projected_rows):
    ids, labels = _batch()
    dense, dense_grads = _loss_and_grads(fused_model, ids, labels)
    with compact_lm_head() as active:
        assert active
        compact, compact_grads = _loss_and_grads(fused_model, ids, labels)
    n_labelled = int((labels[:, 1:] != -100).sum())
    # without the switch TRL projects every shifted position of both rows; with it only the labelled ones
    assert projected_rows == [2 * (ids.shape[1] - 1), n_labelled]
    assert n_labelled == 7 + 5  # the completions, less the second row's padding
    torch.testing.assert_close(compact.loss, dense.loss)
    torch.testing.assert_close(compact.log_probs, dense.log_probs)
    mask = dense.label_mask
    torch.testing.assert_close(compact.entropy[mask], dense.entropy[mask])
    assert torch.equal(compact.is_top1[mask], dense.is_top1[mask])
    assert dense_grads.keys() == compact_grads.keys() and dense_grads
    for name, g in dense_grads.items():
        torch.testing.assert_close(compact_grads[name], g, rtol=1e-4, atol=1e-6, msg=name)


def test_the_switch_is_undone_on_exit_nested_and_on_error():
    original = trl_utils._use_triton
    cpu = torch.device("cpu")
    assert not original(cpu)
    with compact_lm_head():
        with compact_lm_head():
            assert trl_utils._use_triton(cpu)
        assert trl_utils._use_triton(cpu)  # the outer use still holds it
    assert trl_utils._use_triton is original
    with pytest.raises(RuntimeError):
        with compact_lm_head():
            raise RuntimeError("training failed")
    assert trl_utils._use_triton is original


def test_a_trl_without_the_switch_trains_as_before_with_a_warning(monkeypatch, caplog):
    monkeypatch.delattr(trl_utils, "_use_triton")
    with caplog.at_level(logging.WARNING, logger="agents.training.lm_head"):
        with compact_lm_head() as active:
            assert not active
    assert "_use_triton not found" in caplog.text
    assert not hasattr(trl_utils, "_use_triton")


def test_finetune_trains_the_same_model_with_and_without_the_compact_head(tiny_model_dir, tmp_path, projected_rows):
    from transformers import AutoModelForCausalLM

    examples = [
        {"prompt": [{"role": "user", "content": "Write a function add " + "please " * k}],
         "completion": [{"role": "assistant", "content": "def add(a, b):\n    return a + b"}]}
        for k in range(3)
    ]
    base = dict(learning_rate=5e-3, epochs=1, batch_size=3, per_device_batch_size=1, max_length=256,
                progress=False, warmup_ratio=0.0, lr_scheduler_type="constant", lora=True, lora_r=4)
    outs = {}
    for compact in (False, True):
        projected_rows.clear()
        out = finetune(tiny_model_dir, examples, SFTRunConfig(compact_lm_head=compact, **base), tmp_path / str(compact))
        outs[compact] = (out, list(projected_rows), read_train_stats(out)["train_loss"])
    (dense_dir, dense_rows, dense_loss), (compact_dir, compact_rows, compact_loss) = outs[False], outs[True]
    assert len(dense_rows) == len(compact_rows) == 3
    assert all(c < d for c, d in zip(sorted(compact_rows), sorted(dense_rows)))
    assert compact_loss == pytest.approx(dense_loss, rel=1e-5)
    dense_sd = AutoModelForCausalLM.from_pretrained(dense_dir).state_dict()
    compact_sd = AutoModelForCausalLM.from_pretrained(compact_dir).state_dict()
    base_sd = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    changed = [k for k in base_sd if not torch.equal(base_sd[k], dense_sd[k])]
    assert changed  # the LoRA update was merged into the weights
    for k in base_sd:
        torch.testing.assert_close(compact_sd[k], dense_sd[k], rtol=1e-4, atol=1e-6, msg=k)
