"""baselines.ppo_math: GAE over policy tokens, masking, clipping, KL estimators."""

from __future__ import annotations

import copy

import pytest
import torch

from baselines.ppo_math import (
    clipped_policy_loss,
    clipped_value_loss,
    gae,
    kl_estimate,
    masked_mean,
    masked_whiten,
    token_logprobs,
    token_rewards,
)

torch.set_num_threads(1)


def test_gae_matches_hand_computed_example_and_skips_masked_tokens():
    # prompt | a1 a2 | feedback | a3 | pad ; reward 1 at the last policy token
    mask = torch.tensor([[0.0, 1.0, 1.0, 0.0, 1.0, 0.0]])
    rewards = torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.0, 0.0]])
    values = torch.tensor([[7.0, 0.5, 0.4, 9.0, 0.2, 3.0]])  # values at masked positions are ignored
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    # t=4: delta = 1 - 0.2 = 0.8, A = 0.8
    # t=2: delta = 0.9*0.2 - 0.4 = -0.22, A = -0.22 + 0.72*0.8 = 0.356
    # t=1: delta = 0.9*0.4 - 0.5 = -0.14, A = -0.14 + 0.72*0.356 = 0.11632
    expected_adv = torch.tensor([[0.0, 0.11632, 0.356, 0.0, 0.8, 0.0]])
    assert torch.allclose(adv, expected_adv, atol=1e-6)
    assert torch.allclose(ret, torch.tensor([[0.0, 0.61632, 0.756, 0.0, 1.0, 0.0]]), atol=1e-6)


def test_gae_equals_gae_on_the_compressed_policy_token_sequence():
    gen = torch.Generator().manual_seed(0)
    batch, length = 3, 12
    mask = (torch.rand(batch, length, generator=gen) > 0.4).float()
    mask[:, 0] = 0.0
    rewards = torch.randn(batch, length, generator=gen) * mask
    values = torch.randn(batch, length, generator=gen)
    adv, ret = gae(rewards, values, mask, gamma=0.95, lam=0.9)
    for b in range(batch):
        idx = mask[b].nonzero().squeeze(-1)
        a_c, r_c = gae(rewards[b, idx][None], values[b, idx][None], torch.ones(1, len(idx)), gamma=0.95, lam=0.9)
        assert torch.allclose(adv[b, idx], a_c[0], atol=1e-6)
        assert torch.allclose(ret[b, idx], r_c[0], atol=1e-6)
        assert torch.all(adv[b][mask[b] == 0] == 0) and torch.all(ret[b][mask[b] == 0] == 0)


def test_gae_with_lambda_one_and_gamma_one_is_return_minus_value():
    mask = torch.ones(1, 4)
    rewards = torch.tensor([[0.0, -0.1, 0.0, 1.0]])
    values = torch.tensor([[0.3, 0.2, 0.1, 0.0]])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    assert torch.allclose(ret, torch.tensor([[0.9, 0.9, 1.0, 1.0]]))
    assert torch.allclose(adv, ret - values)


def test_rewards_on_masked_positions_are_rejected():
    mask = torch.tensor([[0.0, 1.0]])
    with pytest.raises(ValueError, match="masked position"):
        gae(torch.tensor([[1.0, 0.0]]), torch.zeros(1, 2), mask)
    with pytest.raises(ValueError, match="masked position"):
        token_rewards(torch.tensor([[1.0, 0.0]]), torch.zeros(1, 2), mask, 0.1)
    with pytest.raises(ValueError, match="gamma"):
        gae(torch.zeros(1, 2), torch.zeros(1, 2), mask, gamma=1.5)


def test_token_rewards_subtract_kl_only_on_policy_tokens():
    mask = torch.tensor([[0.0, 1.0, 1.0]])
    kl = torch.tensor([[5.0, 0.2, -0.1]])
    r = token_rewards(torch.tensor([[0.0, 0.0, 1.0]]), kl, mask, kl_coef=0.5)
    assert torch.allclose(r, torch.tensor([[0.0, -0.1, 1.05]]))


def test_masked_tokens_get_no_policy_or_value_loss_gradient():
    mask = torch.tensor([[0.0, 1.0, 1.0, 0.0]])
    old = torch.zeros(1, 4)
    adv = torch.tensor([[3.0, 1.0, -1.0, 2.0]])
    logp = torch.tensor([[0.5, 0.1, -0.1, 0.7]], requires_grad=True)
    loss, _ = clipped_policy_loss(logp, old, adv, mask, clip_eps=0.2)
    loss.backward()
    assert logp.grad[0, 0] == 0 and logp.grad[0, 3] == 0
    assert logp.grad[0, 1] != 0 and logp.grad[0, 2] != 0
    # changing anything at masked positions leaves the loss unchanged
    other, _ = clipped_policy_loss(torch.tensor([[9.0, 0.1, -0.1, -9.0]]), old, torch.tensor([[-5.0, 1.0, -1.0, 5.0]]),
                                   mask, clip_eps=0.2)
    assert torch.isclose(loss.detach(), other)
    values = torch.tensor([[4.0, 0.1, 0.2, -4.0]], requires_grad=True)
    v_loss, _ = clipped_value_loss(values, torch.zeros(1, 4), torch.ones(1, 4), mask, clip_eps=0.2)
    v_loss.backward()
    assert values.grad[0, 0] == 0 and values.grad[0, 3] == 0 and values.grad[0, 1] != 0


def test_ratio_clipping_stops_the_gradient_only_past_the_trust_region():
    mask = torch.ones(1, 1)
    old = torch.zeros(1, 1)
    eps = 0.2
    # ratio 1.5 > 1 + eps with a positive advantage: clipped, constant loss, no gradient
    logp = torch.full((1, 1), float(torch.log(torch.tensor(1.5))), requires_grad=True)
    loss, stats = clipped_policy_loss(logp, old, torch.ones(1, 1), mask, eps)
    loss.backward()
    assert torch.isclose(loss, torch.tensor(-1.2)) and logp.grad.abs().item() == 0 and stats["clipfrac"] == 1.0
    # same ratio, negative advantage: the pessimistic (unclipped) term is active
    logp = torch.full((1, 1), float(torch.log(torch.tensor(1.5))), requires_grad=True)
    loss, stats = clipped_policy_loss(logp, old, -torch.ones(1, 1), mask, eps)
    loss.backward()
    assert torch.isclose(loss, torch.tensor(1.5)) and logp.grad.abs().item() > 0 and stats["clipfrac"] == 0.0
    # ratio 0.5 < 1 - eps with a negative advantage: clipped
    logp = torch.full((1, 1), float(torch.log(torch.tensor(0.5))), requires_grad=True)
    loss, _ = clipped_policy_loss(logp, old, -torch.ones(1, 1), mask, eps)
    loss.backward()
    assert torch.isclose(loss, torch.tensor(0.8)) and logp.grad.abs().item() == 0
    # inside the region: plain -A * ratio
    logp = torch.zeros(1, 1, requires_grad=True)
    loss, stats = clipped_policy_loss(logp, old, torch.full((1, 1), 2.0), mask, eps)
    loss.backward()
    assert torch.isclose(loss, torch.tensor(-2.0)) and torch.isclose(logp.grad, torch.tensor([[-2.0]]))
    assert stats["approx_kl"] == 0.0


def test_value_clipping():
    mask = torch.ones(1, 1)
    # new value moved 1.0 away from the old one toward the return: clipped to 0.2, the larger loss wins
    values = torch.full((1, 1), 1.0, requires_grad=True)
    loss, stats = clipped_value_loss(values, torch.zeros(1, 1), torch.full((1, 1), 2.0), mask, clip_eps=0.2)
    assert torch.isclose(loss, torch.tensor(0.5 * 1.8**2)) and stats["value_clipfrac"] == 1.0
    loss.backward()
    assert values.grad.item() == 0


def test_kl_estimators():
    logp = torch.tensor([-1.0, -2.0, -0.5])
    assert all(torch.all(kl_estimate(logp, logp, k) == 0) for k in ("k1", "k2", "k3"))
    ref = torch.tensor([-1.5, -1.0, -0.5])
    k3 = kl_estimate(logp, ref, "k3")
    assert torch.all(k3 >= 0) and k3[2] == 0
    diff = logp - ref
    assert torch.allclose(k3, torch.exp(-diff) - 1 + diff)
    assert torch.allclose(kl_estimate(logp, ref, "k1"), diff)
    with pytest.raises(ValueError, match="k1"):
        kl_estimate(logp, ref, "k4")


def test_kl_is_zero_when_the_policy_is_the_reference_on_a_tiny_model(tiny_model):
    from baselines.ppo import policy_forward

    ref = copy.deepcopy(tiny_model).eval()
    ids = torch.tensor([[5, 17, 42, 99, 3, 250, 8], [5, 6, 7, 8, 9, 10, 0]])
    attn = torch.tensor([[1] * 7, [1] * 6 + [0]])
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1, 0]], dtype=torch.float32)
    with torch.no_grad():
        a = policy_forward(tiny_model, ids, attn, temperature=0.7)["logp"]
        b = policy_forward(ref, ids, attn, temperature=0.7)["logp"]
    for kind in ("k1", "k2", "k3"):
        assert float(masked_mean(kl_estimate(a, b, kind).abs(), mask)) == 0.0
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.05 * torch.randn_like(p))
        c = policy_forward(ref, ids, attn, temperature=0.7)["logp"]
    assert float(masked_mean(kl_estimate(a, c, "k3"), mask)) > 0.0


def test_policy_forward_shifts_logprobs_and_values(tiny_model):
    from baselines.ppo import ValueHead, policy_forward

    ids = torch.tensor([[5, 17, 42, 99, 3]])
    attn = torch.ones_like(ids)
    head = ValueHead(tiny_model.config.hidden_size)
    with torch.no_grad():
        head.linear.bias.fill_(0.25)
        out = policy_forward(tiny_model, ids, attn, temperature=2.0, value_head=head, with_entropy=True)
        logits = tiny_model(ids).logits[0] / 2.0
    manual = torch.log_softmax(logits[:-1], -1).gather(-1, ids[0, 1:, None])[:, 0]
    assert out["logp"][0, 0] == 0 and torch.allclose(out["logp"][0, 1:], manual, atol=1e-5)
    assert torch.allclose(out["values"][0, 1:], torch.full((4,), 0.25)) and out["values"][0, 0] == 0
    assert torch.all(out["entropy"][0, 1:] > 0)
    assert torch.allclose(token_logprobs(logits[:-1], ids[0, 1:]), manual, atol=1e-5)


def test_masked_whiten():
    x = torch.tensor([[100.0, 1.0, 2.0, 3.0, -100.0]])
    mask = torch.tensor([[0.0, 1.0, 1.0, 1.0, 0.0]])
    w = masked_whiten(x, mask)
    assert w[0, 0] == 0 and w[0, 4] == 0
    assert abs(float(masked_mean(w, mask))) < 1e-6
    assert torch.allclose(w[0, 1:4], torch.tensor([-1.0, 0.0, 1.0]), atol=1e-4)


def test_policy_forward_on_the_policy_positions_only_equals_the_dense_path(tiny_model):
    from baselines.ppo import ValueHead, policy_forward

    torch.manual_seed(0)
    ids = torch.tensor([[5, 17, 42, 99, 3, 250, 8], [5, 6, 7, 8, 9, 10, 0]])
    attn = torch.tensor([[1] * 7, [1] * 6 + [0]])
    mask = torch.tensor([[0, 0, 0, 1, 1, 0, 1], [0, 0, 1, 1, 1, 1, 0]], dtype=torch.float32)
    head = ValueHead(tiny_model.config.hidden_size)

    def run(positions):
        tiny_model.zero_grad(set_to_none=True)
        out = policy_forward(tiny_model, ids, attn, temperature=0.7, value_head=head, with_entropy=True,
                             positions=positions)
        loss = masked_mean(out["logp"] * 1.3 + out["entropy"] * 0.1, mask)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in tiny_model.named_parameters() if p.grad is not None}
        return out, grads

    dense, dense_grads = run(None)
    sparse, sparse_grads = run(mask)
    for key in ("logp", "entropy"):
        torch.testing.assert_close(sparse[key] * mask, dense[key] * mask, rtol=1e-5, atol=1e-5)
        assert torch.all(sparse[key][mask == 0] == 0)  # nothing computed off the policy's tokens
    torch.testing.assert_close(sparse["values"], dense["values"])
    assert dense_grads.keys() == sparse_grads.keys() and dense_grads
    for name, grad in dense_grads.items():
        torch.testing.assert_close(sparse_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
