"""Relabeling (µCODE Algorithm 1, step 5): every state s_t of every trajectory gets the target y*.

s_t = (x, y_1, o_1, ..., y_{t-1}, o_{t-1}) is rendered as chat messages exactly like the
environment renders observations (``mucode_env.to_messages``): ``[user: prompt, assistant:
response_1, user: "Feedback:\\n" + feedback_1, ...]``, ending with the user message before turn t.
The target is y*(x)'s full response text. Rows are TRL conversational prompt-completion
examples, so SFT puts the loss on the completion only (see :mod:`agents.training.sft`).

``variant="reference"`` (the reference code): only the ``reference_top_k_failed`` failed
trajectories with the highest verifier score (of their final turn) are relabeled to y*, and each
successful trajectory's states keep that trajectory's own final response as the target.

>>> rows = relabel(trajectories, experts)  # doctest: +SKIP
>>> rows[0]["prompt"][-1]["role"], rows[0]["completion"][0]["role"]  # doctest: +SKIP
('user', 'assistant')
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agents.mucode.expert import ExpertResult
from agents.records import Trajectory
from mucode_env.env import to_messages

__all__ = ["render_state", "relabel", "sft_example", "state_messages"]


def render_state(prompt: str, history: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """Chat messages of an observation ``{prompt, history}``, exactly as the environment renders them."""
    obs = {"problem_id": "", "turn": len(history), "prompt": prompt, "history": tuple(dict(h) for h in history)}
    return [dict(m) for m in to_messages(obs)]


def state_messages(traj: Trajectory, t: int) -> list[dict[str, str]]:
    """Messages of state s_t (0-based turn index ``t``): the prompt and turns ``0..t-1``."""
    if not 0 <= t < max(1, len(traj.turns)):
        raise ValueError(f"turn index {t} out of range for a trajectory of {len(traj.turns)} turns")
    history = [
        {"response": turn.response, "code": turn.code, "feedback": turn.feedback} for turn in traj.turns[:t]
    ]
    return render_state(traj.prompt, history)


def sft_example(traj: Trajectory, t: int, target: str, source: str) -> dict[str, Any]:
    """One prompt-completion training row: state s_t of ``traj`` -> ``target``."""
    return {
        "prompt": state_messages(traj, t),
        "completion": [{"role": "assistant", "content": target}],
        "problem_id": traj.problem_id,
        "turn": t,
        "source": source,
    }


def relabel(
    trajectories: Sequence[Trajectory],
    experts: ExpertResult,
    *,
    candidates_from: Sequence[Trajectory] | None = None,
) -> list[dict[str, Any]]:
    """The relabeled dataset D* = {(s_t -> y*(x))}.

    Args:
        trajectories: the aggregated data D (paper variant: every state of every trajectory).
        experts: :func:`agents.mucode.expert.select_experts` output (its config picks the variant).
        candidates_from: reference variant: the trajectories the expert chose from (this
            iteration's); defaults to ``trajectories``. Must be the list passed to
            ``select_experts`` so that its verifier scores line up.

    Returns:
        Rows ``{"prompt": [messages], "completion": [assistant msg], "problem_id", "turn",
        "source"}`` (``source``: "expert" or "own" for a reference-variant success), in
        trajectory order then turn order. Problems without an expert are skipped.
    """
    rows: list[dict[str, Any]] = []
    cfg = experts.config
    if cfg.variant == "paper":
        for traj in trajectories:
            if traj.problem_id not in experts:
                continue
            target = experts[traj.problem_id].response
            for t in range(len(traj.turns)):
                rows.append(sft_example(traj, t, target, "expert"))
        return rows

    source = list(candidates_from) if candidates_from is not None else list(trajectories)
    failed: dict[str, list[tuple[float, int]]] = {}
    for i, traj in enumerate(source):
        if traj.turns and not traj.success:
            score = experts.candidate_scores.get((i, len(traj.turns) - 1), 0.0)
            failed.setdefault(traj.problem_id, []).append((score, i))
    chosen: set[int] = set()
    for items in failed.values():
        items.sort(key=lambda si: (-si[0], si[1]))
        chosen.update(i for _, i in items[: cfg.reference_top_k_failed])
    for i, traj in enumerate(source):
        if traj.problem_id not in experts or not traj.turns:
            continue
        if traj.success:
            own = traj.turns[-1].response
            rows.extend(sft_example(traj, t, own, "own") for t in range(len(traj.turns)))
        elif i in chosen:
            target = experts[traj.problem_id].response
            rows.extend(sft_example(traj, t, target, "expert") for t in range(len(traj.turns)))
    return rows
