"""The pure tensor maths of PPO over token sequences with a policy mask.

Every function takes padded ``[B, L]`` tensors and a ``mask`` that is 1 on the policy's own
tokens (the responses it sampled) and 0 everywhere else (the prompt, the environment's feedback,
chat-template glue, padding). Masked positions never receive an advantage, a return or a loss:
GAE runs over the policy tokens only, carrying the bootstrap value across the masked spans, so
an episode of several turns is one trajectory of policy tokens whose feedback tokens are part of
the state, not of the action.

Conventions: ``logp``, ``ref_logp`` and ``values`` at position ``i`` belong to the decision that
emitted token ``i`` (the trainer shifts the model outputs accordingly).

>>> import torch
>>> mask = torch.tensor([[0., 1., 1., 0., 1.]])
>>> adv, ret = gae(torch.tensor([[0., 0., 0., 0., 1.]]), torch.zeros(1, 5), mask, gamma=1.0, lam=1.0)
>>> adv.tolist()
[[0.0, 1.0, 1.0, 0.0, 1.0]]
"""

from __future__ import annotations

import torch

__all__ = [
    "KL_ESTIMATORS",
    "masked_sum",
    "masked_mean",
    "masked_whiten",
    "token_logprobs",
    "entropy_from_logits",
    "kl_estimate",
    "token_rewards",
    "gae",
    "clipped_policy_loss",
    "clipped_value_loss",
]

KL_ESTIMATORS = ("k1", "k2", "k3")


def masked_sum(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of ``x`` over the positions where ``mask`` is 1."""
    return (x * mask).sum()


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over the positions where ``mask`` is 1 (0 when the mask is empty)."""
    return (x * mask).sum() / mask.sum().clamp_min(1.0)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, *, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Normalise ``x`` to unit variance (and zero mean) over the masked positions; 0 elsewhere.

    With fewer than two masked positions the variance is undefined and ``x`` is only centred.
    """
    n = mask.sum()
    mean = masked_mean(x, mask)
    centred = x - mean
    if n < 2:
        out = centred if shift_mean else x
    else:
        var = masked_sum(centred**2, mask) / (n - 1)
        out = centred * torch.rsqrt(var + eps)
        if not shift_mean:
            out = out + mean
    return out * mask


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(labels) under ``logits`` (``[..., V]`` and ``[...]``), without a full log-softmax copy."""
    picked = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical distribution at every position (``[..., V]`` -> ``[...]``)."""
    logp = torch.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from the sampled tokens' log-probabilities.

    ``k1 = log pi - log pi_ref`` (unbiased, can be negative), ``k2 = (log pi - log pi_ref)^2 / 2``,
    ``k3 = exp(log pi_ref - log pi) - (log pi_ref - log pi) - 1`` (unbiased, >= 0; Schulman 2020).
    All three are exactly 0 where the two policies agree.

    Raises:
        ValueError: on an unknown ``kind``.
    """
    if kind not in KL_ESTIMATORS:
        raise ValueError(f"kind must be one of {KL_ESTIMATORS}, got {kind!r}")
    diff = logp - ref_logp
    if kind == "k1":
        return diff
    if kind == "k2":
        return 0.5 * diff**2
    return torch.expm1(-diff) + diff


def token_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """Per-token rewards of RLHF-style PPO: the sparse task rewards minus ``kl_coef * kl``.

    Args:
        scores: ``[B, L]``, the environment's rewards placed at policy tokens (typically the last
            token of a turn or of the episode), 0 elsewhere.
        kl: ``[B, L]`` per-token KL estimate to the reference policy.
        mask: ``[B, L]`` policy mask.
        kl_coef: the KL penalty coefficient (beta).

    Raises:
        ValueError: when a score sits on a masked (non-policy) position: it would be lost.
    """
    if bool(((scores != 0) & (mask == 0)).any()):
        raise ValueError("a reward sits on a masked position; place rewards on the policy's own tokens")
    return (scores - kl_coef * kl) * mask


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    *,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over the policy tokens of each row.

    Masked positions are skipped: for policy token ``t`` the "next" value is the value at the
    next POLICY token of the row (0 after the last one, the episode's end), so an episode's
    prompt and feedback tokens neither earn nor pass on advantage, and discounting counts policy
    tokens only.

    ``delta_t = r_t + gamma * V_next - V_t``, ``A_t = delta_t + gamma * lam * A_next``,
    ``R_t = A_t + V_t``.

    Args:
        rewards, values, mask: ``[B, L]``; rewards on masked positions must be 0.

    Returns:
        ``(advantages, returns)``, ``[B, L]``, 0 on masked positions.

    Raises:
        ValueError: on mismatched shapes, gamma/lam outside [0, 1], or rewards on masked positions.
    """
    if rewards.shape != values.shape or rewards.shape != mask.shape:
        raise ValueError(f"shapes differ: rewards {tuple(rewards.shape)}, values {tuple(values.shape)}, "
                         f"mask {tuple(mask.shape)}")
    if not (0.0 <= gamma <= 1.0 and 0.0 <= lam <= 1.0):
        raise ValueError(f"gamma and lam must be in [0, 1], got gamma={gamma}, lam={lam}")
    if bool(((rewards != 0) & (mask == 0)).any()):
        raise ValueError("a reward sits on a masked position; place rewards on the policy's own tokens")
    rewards, values, mask = rewards.detach().float(), values.detach().float(), mask.detach().float()
    batch, length = rewards.shape
    adv = torch.zeros_like(rewards)
    next_value = torch.zeros(batch, dtype=rewards.dtype, device=rewards.device)
    next_adv = torch.zeros_like(next_value)
    for t in range(length - 1, -1, -1):
        m = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        a = delta + gamma * lam * next_adv
        adv[:, t] = a * m
        next_value = torch.where(m > 0, values[:, t], next_value)
        next_adv = torch.where(m > 0, a, next_adv)
    returns = (adv + values) * mask
    return adv, returns


def clipped_policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO's clipped surrogate, ``mean(max(-A r, -A clip(r, 1-eps, 1+eps)))`` over policy tokens.

    Returns:
        ``(loss, stats)`` with ``clipfrac`` (fraction of policy tokens whose ratio was clipped
        in the direction that matters) and ``approx_kl`` (mean of ``(r - 1) - log r``).
    """
    if clip_eps <= 0:
        raise ValueError(f"clip_eps must be > 0, got {clip_eps}")
    log_ratio = (logp - old_logp) * mask
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        clipfrac = masked_mean((clipped > unclipped).float(), mask)
        approx_kl = masked_mean(torch.expm1(log_ratio) - log_ratio, mask)
    return loss, {"clipfrac": float(clipfrac), "approx_kl": float(approx_kl)}


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO's clipped value loss, ``0.5 * mean(max((V - R)^2, (clip(V, V_old +- eps) - R)^2))``."""
    if clip_eps <= 0:
        raise ValueError(f"clip_eps must be > 0, got {clip_eps}")
    v_clipped = old_values + torch.clamp(values - old_values, -clip_eps, clip_eps)
    loss_unclipped = (values - returns) ** 2
    loss_clipped = (v_clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(loss_unclipped, loss_clipped), mask)
    with torch.no_grad():
        clipfrac = masked_mean((loss_clipped > loss_unclipped).float(), mask)
    return loss, {"value_clipfrac": float(clipfrac)}

