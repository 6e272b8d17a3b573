"""RLEF-style PPO (Gehring et al., 2024) over whole multi-turn episodes of the environment.

The policy (a Hugging Face causal LM) plays complete episodes: at each turn it samples a response
to the chat rendered from the observation (``mucode_env.to_messages``), the environment runs the
code and returns the public-test feedback as the next observation, and the episode's reward is
the private-test oracle of the final program (``reward_mode="final"``), optionally minus a small
penalty for every turn whose response had no code or did not compile.

A scalar value head on the policy's last hidden state (shared backbone), per-token rewards
``r_t = score_t - kl_coef * KL_t`` to the frozen initial policy, GAE over the policy's OWN tokens
across all turns (prompt, feedback and template tokens are masked; see :mod:`baselines.ppo_math`),
whitened advantages, the clipped surrogate and the clipped value loss, an optional entropy bonus.

TRL has no PPO trainer with a value head over multi-turn tokens (TRL 1.16 ships none at all),
hence this compact loop; GRPO needs no value head and runs on TRL's own ``GRPOTrainer``
(:mod:`baselines.grpo`). Episodes are played by the shared episode engine
(:func:`agents.episodes.play_episodes`) with a sampler that keeps its tokens. Each episode is
stored as token segments: the next turn's context is appended to the running sequence when it
extends it token for token (the usual case), otherwise a new segment starts from the
re-tokenised state, so the log-probabilities are always those of the tokens the policy actually
saw and sampled.

Checkpoints (``output_dir/checkpoint``: a plain HF checkpoint plus ``value_head.pt``,
``optimizer.pt`` and ``trainer_state.json``) are written atomically every ``save_every`` updates
and at the end; ``train()`` resumes from one. Per-update statistics go to ``output_dir/log.jsonl``.

>>> from baselines.ppo import PPOConfig, PPOTrainer
>>> path = PPOTrainer(PPOConfig(model="qwen2.5-coder-0.5b", output_dir="runs/ppo")).train()  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.episodes import EpisodeSpec, StepOutcome, derive_seed, play_episodes
from agents.policy import SamplingParams
from agents.records import Trajectory, TurnRecord
from mucode_env.atomic import write_text_atomic
from mucode_env.env import select_problems
from mucode_env.registration import env_problems
from agents.training.precision import resolve_bf16
from baselines.rl_run import RLRunConfig, read_run_state
from baselines.ppo_math import (
    KL_ESTIMATORS,
    clipped_policy_loss,
    clipped_value_loss,
    entropy_from_logits,
    gae,
    kl_estimate,
    masked_mean,
    masked_whiten,
    token_logprobs,
    token_rewards,
)

__all__ = ["PPOConfig", "PPOTrainer", "Episode", "Segment", "ValueHead", "policy_forward",
           "TRAINER_STATE_FILE", "CHECKPOINT_DIR", "LOG_FILE"]

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
TRAINER_STATE_FILE = "trainer_state.json"
VALUE_HEAD_FILE = "value_head.pt"
OPTIMIZER_FILE = "optimizer.pt"
LOG_FILE = "log.jsonl"
INVALID_CODE_STATUSES = ("compile_error",)
# Fields that may change between a run and its resumption without changing what is trained.
_RESUMABLE_FIELDS = ("total_updates", "save_every", "progress", "resume", "output_dir", "device")


@dataclass(frozen=True)
class PPOConfig(RLRunConfig):
    """Settings of a PPO run. ``asdict(config)`` is the run record.

    Attributes (besides :class:`~baselines.rl_run.RLRunConfig`'s model, run directory, problems,
    environment rules and sampling):
        total_updates: number of (rollout, optimise) iterations.
        episodes_per_update: episodes collected per update.
        ppo_epochs: passes over each update's data.
        minibatch_size: token segments per optimizer step.
        micro_batch_size: segments per forward pass (gradient accumulation inside a minibatch).
        learning_rate, max_grad_norm, weight_decay: optimizer settings (AdamW).
        clip_eps / value_clip_eps: the ratio and value clipping ranges.
        gamma / lam: GAE's discount and lambda, over policy tokens.
        kl_coef: beta of the KL penalty to the reference policy.
        kl_estimator: ``"k1"``, ``"k2"`` or ``"k3"`` (see :func:`baselines.ppo_math.kl_estimate`).
        kl_in_reward: True: ``-kl_coef * KL`` is added to the per-token rewards (classic PPO);
            False: ``kl_coef * KL`` is a loss term.
        value_coef: weight of the value loss.
        entropy_coef: weight of the entropy bonus (0: off).
        whiten_advantages: normalise the advantages over the batch's policy tokens.
        invalid_code_penalty: subtracted at the last token of every turn with no code or a
            syntax error (RLEF's invalid-code penalty; 0 disables it).
        max_prompt_tokens: longer contexts keep their last tokens.
        generation_batch_size: contexts per ``generate`` call.
        seed: everything random (problem draws, sampling, minibatch order) derives from it and
            the update index, so a resumed run draws what the uninterrupted run would have.
        save_every: checkpoint period in updates (the last update always saves).
        save_optimizer: include the optimizer state in the checkpoint (needed for exact resume).
        resume: continue from ``output_dir/checkpoint`` when it exists.
        torch_dtype: weights' dtype; device: ``"cpu"``, ``"cuda"``... (default: CUDA if present).
        gradient_checkpointing: trade compute for memory in the training forward.
        progress: show a tqdm bar.
    """

    total_updates: int = 100
    episodes_per_update: int = 16
    ppo_epochs: int = 1
    minibatch_size: int = 8
    micro_batch_size: int = 2
    learning_rate: float = 1e-6
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    clip_eps: float = 0.2
    value_clip_eps: float = 0.2
    gamma: float = 1.0
    lam: float = 0.95
    kl_coef: float = 0.05
    kl_estimator: str = "k1"
    kl_in_reward: bool = True
    value_coef: float = 0.1
    entropy_coef: float = 0.0
    whiten_advantages: bool = True
    invalid_code_penalty: float = 0.0
    max_prompt_tokens: int = 3072
    generation_batch_size: int = 16
    save_every: int = 10
    save_optimizer: bool = True
    device: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"kl_estimator must be one of {KL_ESTIMATORS}, got {self.kl_estimator!r}")
        for name in ("total_updates", "episodes_per_update", "ppo_epochs", "minibatch_size",
                     "micro_batch_size", "max_prompt_tokens", "generation_batch_size", "save_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not (0 < self.clip_eps < 1 and self.value_clip_eps > 0):
            raise ValueError(f"need 0 < clip_eps < 1 and value_clip_eps > 0, "
                             f"got {self.clip_eps}, {self.value_clip_eps}")
        if not (0 <= self.gamma <= 1 and 0 <= self.lam <= 1):
            raise ValueError(f"gamma and lam must be in [0, 1], got {self.gamma}, {self.lam}")
        if self.learning_rate <= 0 or self.max_grad_norm <= 0:
            raise ValueError("learning_rate and max_grad_norm must be > 0")
        if min(self.kl_coef, self.value_coef, self.entropy_coef, self.invalid_code_penalty, self.weight_decay) < 0:
            raise ValueError("kl_coef, value_coef, entropy_coef, invalid_code_penalty and weight_decay must be >= 0")

    @classmethod
    def cpu(cls, output_dir: str, model: str = "qwen2.5-coder-0.5b", **overrides: Any) -> "PPOConfig":
        """A 2-core CPU preset on the embedded 0.5B model: a short run, not a converged one.

        Deviations from RLEF (Gehring et al. 2024) forced by ~15 min per update here: 8 training
        problems (the first 8 of the split, as the µCODE cpu experiment uses), 2 updates of 8
        episodes (one PPO epoch, one minibatch), 384 new tokens per turn, learning rate 1e-5 (more
        than RLEF's 2e-7-scale rates: so few updates would not move the policy at all), micro
        batch 1 with gradient checkpointing (fp32 AdamW on 0.5B parameters needs ~8 GB already).
        """
        base: dict[str, Any] = {
            "model": model, "output_dir": output_dir, "limit": 8, "total_updates": 2,
            "episodes_per_update": 8, "ppo_epochs": 1, "minibatch_size": 8, "micro_batch_size": 1,
            "learning_rate": 1e-5, "kl_coef": 0.05, "max_new_tokens": 384, "max_prompt_tokens": 2048,
            "generation_batch_size": 8, "save_every": 1, "gradient_checkpointing": True, "device": "cpu",
        }
        return cls(**{**base, **overrides})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PPOConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown PPOConfig field(s) {sorted(unknown)}")
        return cls(**d)


# ----------------------------------------------------------------------------- data records


@dataclass
class Segment:
    """A token sequence of one episode: context and sampled tokens, with per-token annotations."""

    input_ids: list[int] = field(default_factory=list)
    policy_mask: list[int] = field(default_factory=list)  # 1 on tokens the policy sampled
    scores: list[float] = field(default_factory=list)  # environment rewards, at policy tokens
    # filled by the trainer (1-D tensors of len(input_ids))
    tensors: dict[str, Any] = field(default_factory=dict, repr=False)

    def extend(self, ids: Sequence[int], is_policy: bool) -> None:
        self.input_ids.extend(int(i) for i in ids)
        self.policy_mask.extend([int(is_policy)] * len(ids))
        self.scores.extend([0.0] * len(ids))


@dataclass
class Episode:
    """One multi-turn episode as token segments, with its outcome."""

    problem_id: str
    segments: list[Segment] = field(default_factory=list)
    turns: list[TurnRecord] = field(default_factory=list)
    reward: float = 0.0  # the environment's final reward (the oracle of the last program)
    return_: float = 0.0  # reward minus invalid-code penalties: what the policy maximises
    done: bool = False
    trajectory: Trajectory | None = None  # the episode as the engine recorded it

    def last_policy_position(self) -> tuple[int, int]:
        seg = len(self.segments) - 1
        return seg, len(self.segments[seg].input_ids) - 1

    def add_score(self, value: float) -> None:
        """Add a reward at the last sampled token (the end of the current turn)."""
        seg, pos = self.last_policy_position()
        self.segments[seg].scores[pos] += float(value)


# ----------------------------------------------------------------------------- model pieces


class ValueHead(torch.nn.Module):
    """A scalar value read from the policy's last hidden state (zero-initialised)."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = torch.nn.Linear(hidden_size, 1)
        torch.nn.init.zeros_(self.linear.weight)
        torch.nn.init.zeros_(self.linear.bias)

    def forward(self, hidden):
        return self.linear(hidden.float()).squeeze(-1)


def policy_forward(model, input_ids, attention_mask, *, temperature: float = 1.0, value_head=None,
                   with_entropy: bool = False, positions: torch.Tensor | None = None) -> dict[str, Any]:
    """Per-position log-probabilities (and values, entropies) of a right-padded batch.

    Position ``i`` holds the quantities of the decision that emitted token ``i``: ``logp[:, i] =
    log pi(ids[i] | ids[<i])`` from the logits at ``i - 1`` (divided by ``temperature``) and
    ``values[:, i]`` read from the hidden state at ``i - 1``. Position 0 holds 0.

    ``positions`` (``[B, L]``, nonzero where a log-probability is wanted: the policy's own
    tokens): the LM head, the log-softmax and the entropy are computed there only, and the other
    positions hold 0. PPO reads log-probabilities only under the policy mask, and a multi-turn
    segment is mostly prompt and feedback: projecting every position on a 150k-token vocabulary
    (and keeping its float32 logits for the backward pass) was most of the head's cost.

    Returns:
        ``{"logp": [B, L], "values": [B, L] or None, "entropy": [B, L] or None}``.
    """
    batch, length = input_ids.shape
    zeros = torch.zeros(batch, 1, device=input_ids.device)
    if positions is None:
        out = model(input_ids=input_ids, attention_mask=attention_mask,
                    output_hidden_states=value_head is not None, use_cache=False)
        logits = out.logits[:, :-1].float() / temperature
        logp = torch.cat([zeros, token_logprobs(logits, input_ids[:, 1:])], dim=1)
        entropy = torch.cat([zeros, entropy_from_logits(logits)], dim=1) if with_entropy else None
    else:
        # the final hidden states, and logits only where they are read (one position is the least
        # the model computes; it is not used)
        out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, use_cache=False,
                    logits_to_keep=1)
        keep = positions[:, 1:].bool()
        hidden = out.hidden_states[-1][:, :-1][keep]
        logits = model.get_output_embeddings()(hidden).float() / temperature
        logp = torch.zeros(batch, length, dtype=logits.dtype, device=input_ids.device)
        logp[:, 1:][keep] = token_logprobs(logits, input_ids[:, 1:][keep])
        entropy = None
        if with_entropy:
            entropy = torch.zeros(batch, length, dtype=logits.dtype, device=input_ids.device)
            entropy[:, 1:][keep] = entropy_from_logits(logits)
    result: dict[str, Any] = {"logp": logp, "values": None, "entropy": entropy}
    if value_head is not None:
        hidden = out.hidden_states[-1][:, :-1]
        result["values"] = torch.cat([zeros, value_head(hidden)], dim=1)
    return result


def _pad_rows(rows: Sequence[Sequence[int]], pad_id: int, device):
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(list(r), dtype=torch.long)
        attn[i, : len(r)] = 1
    return ids.to(device), attn.to(device)


def _pad_float(rows: Sequence[Any], width: int, device):
    out = torch.zeros((len(rows), width), dtype=torch.float32, device=device)
    for i, r in enumerate(rows):
        r = torch.as_tensor(r, dtype=torch.float32, device=device)
        out[i, : r.shape[0]] = r
    return out


# ----------------------------------------------------------------------------- trainer


class PPOTrainer:
    """PPO on the multi-turn environment. ``train()`` runs (or resumes) and returns the
    checkpoint directory, which loads like any HF causal-LM checkpoint.

    Args:
        config: the run's settings.
        problems: train on these in-memory problems instead of loading ``config.env_id``'s split.
        sandbox: a shared ``mucode_env.sandbox.Sandbox`` (default: the process-wide one).
    """

    def __init__(self, config: PPOConfig, *, problems: Sequence[Any] | None = None, sandbox: Any = None):
        self.config = config
        self._problems_arg = list(problems) if problems is not None else None
        self._sandbox = sandbox
        self.output_dir = Path(config.output_dir)
        self.checkpoint_dir = self.output_dir / CHECKPOINT_DIR
        self.history: list[dict[str, Any]] = []

    # ---- setup --------------------------------------------------------------------------------
    def _load_problems(self) -> list[Any]:
        cfg = self.config
        if self._problems_arg is not None:
            return select_problems(self._problems_arg, cfg.problem_ids, cfg.limit, where="the given problems")
        return env_problems(cfg.env_id, split=cfg.split, problem_ids=cfg.problem_ids, limit=cfg.limit,
                            data_dir=cfg.data_dir)

    def _setup(self) -> None:
        from transformers import AutoModelForCausalLM

        from agents.backends.transformers import TransformersPolicy
        from agents.models.convert import hf_checkpoint
        from agents.training.sft import load_tokenizer

        cfg = self.config
        self.device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = getattr(torch, cfg.torch_dtype)
        self.base_path = hf_checkpoint(cfg.model)
        state = self._read_state()
        start_path = str(self.checkpoint_dir) if state is not None else self.base_path
        self.tokenizer = load_tokenizer(start_path)
        self.model = AutoModelForCausalLM.from_pretrained(start_path, dtype=dtype).to(self.device)
        self.ref_model = AutoModelForCausalLM.from_pretrained(self.base_path, dtype=dtype).to(self.device)
        self.ref_model.eval().requires_grad_(False)
        if cfg.gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
        self.value_head = ValueHead(self.model.config.hidden_size).to(self.device)
        if state is not None and (self.checkpoint_dir / VALUE_HEAD_FILE).is_file():
            self.value_head.load_state_dict(torch.load(self.checkpoint_dir / VALUE_HEAD_FILE,
                                                       map_location=self.device))
        params = list(self.model.parameters()) + list(self.value_head.parameters())
        self.optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        if state is not None and (self.checkpoint_dir / OPTIMIZER_FILE).is_file():
            self.optimizer.load_state_dict(torch.load(self.checkpoint_dir / OPTIMIZER_FILE, map_location=self.device))
        self.start_update = int(state["update"]) if state is not None else 0
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.tokenizer.eos_token_id
        self.problems = self._load_problems()
        self.bf16 = resolve_bf16(cfg.bf16, self.device.type)
        # the policy as a sampler that keeps the exact tokens it saw and sampled
        self.sampler = TransformersPolicy.from_model(
            self.model, self.tokenizer, batch_size=cfg.generation_batch_size, max_prompt_tokens=cfg.max_prompt_tokens,
            return_tokens=True, name="ppo:policy")

    def _autocast(self):
        """bf16 autocast of forward passes (sampling, scoring, the loss) when ``config.bf16`` resolves so."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def _read_state(self) -> dict[str, Any] | None:
        if not self.config.resume:
            return None
        return read_run_state(self.checkpoint_dir / TRAINER_STATE_FILE, self.config, _RESUMABLE_FIELDS)

    # ---- rollouts -----------------------------------------------------------------------------
    def _problem_draw(self, update: int) -> list[str]:
        cfg = self.config
        rng = np.random.default_rng(derive_seed(cfg.seed, "draw", update))
        n_problems = cfg.episodes_per_update
        picks = rng.choice(len(self.problems), size=n_problems, replace=n_problems > len(self.problems))
        return [self.problems[int(p)].id for p in picks]

    def rollout(self, update: int) -> list[Episode]:
        """Play ``episodes_per_update`` episodes with the current policy on the shared episode engine
        (one batched generate call and one sandbox batch per turn), keeping every turn's tokens."""
        import gymnasium as gym

        cfg = self.config
        draws = self._problem_draw(update)
        episodes = [Episode(problem_id=pid) for pid in draws]
        env_kwargs = {"split": cfg.split, "max_turns": cfg.max_turns, "termination": cfg.termination,
                      "reward_mode": "final", "problems": self.problems}
        if self._sandbox is not None:  # else every env uses the process-wide sandbox
            env_kwargs["sandbox"] = self._sandbox

        def on_turn(step: StepOutcome) -> None:
            ep = episodes[step.episode]
            self._append_turn(ep, step.generation.extra["prompt_ids"], step.generation.extra["completion_ids"])
            if cfg.invalid_code_penalty and step.info["status"] in INVALID_CODE_STATUSES:
                ep.add_score(-cfg.invalid_code_penalty)
                ep.return_ -= cfg.invalid_code_penalty
            if step.terminated or step.truncated:
                ep.done = True
                ep.reward = step.reward
                ep.return_ += step.reward
                ep.add_score(step.reward)

        self.model.eval()
        with self._autocast():
            trajectories = play_episodes(
                self.sampler, lambda: gym.make(cfg.env_id, disable_env_checker=True, **env_kwargs),
                [EpisodeSpec(pid, i) for i, pid in enumerate(draws)],
                sampling=lambda call: SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p,
                                                     max_new_tokens=cfg.max_new_tokens,
                                                     seed=derive_seed(cfg.seed, "rollout", update, call)),
                on_turn=on_turn, env_id=cfg.env_id, seed=derive_seed(cfg.seed, "rollout", update),
                policy_name=f"ppo:update{update}",
            )
        for ep, traj in zip(episodes, trajectories):
            ep.trajectory, ep.turns = traj, traj.turns
        return episodes

    @staticmethod
    def _append_turn(ep: Episode, context: list[int], action: list[int]) -> None:
        seg = ep.segments[-1] if ep.segments else None
        if seg is not None and len(context) >= len(seg.input_ids) and context[: len(seg.input_ids)] == seg.input_ids:
            seg.extend(context[len(seg.input_ids):], is_policy=False)
        else:
            seg = Segment()
            seg.extend(context, is_policy=False)
            ep.segments.append(seg)
        seg.extend(action, is_policy=True)

    @staticmethod
    def trajectories(episodes: Sequence[Episode]) -> list[Trajectory]:
        """The episodes as :class:`agents.records.Trajectory` records (for logs and reuse)."""
        return [ep.trajectory for ep in episodes if ep.trajectory is not None]

    # ---- advantages ---------------------------------------------------------------------------
    def _score(self, segments: list[Segment]) -> None:
        """Old log-probs, reference log-probs and old values of every segment (no gradient)."""
        cfg = self.config
        self.model.eval()
        with torch.no_grad():
            for start in range(0, len(segments), cfg.micro_batch_size):
                chunk = segments[start: start + cfg.micro_batch_size]
                ids, attn = _pad_rows([s.input_ids for s in chunk], self.pad_id, self.device)
                wanted, _ = _pad_rows([s.policy_mask for s in chunk], 0, self.device)  # log-probs read there only
                with self._autocast():
                    cur = policy_forward(self.model, ids, attn, temperature=cfg.temperature, value_head=self.value_head,
                                         positions=wanted)
                    ref = policy_forward(self.ref_model, ids, attn, temperature=cfg.temperature, positions=wanted)
                for row, seg in enumerate(chunk):
                    n = len(seg.input_ids)
                    seg.tensors = {
                        "mask": torch.tensor(seg.policy_mask, dtype=torch.float32, device=self.device),
                        "scores": torch.tensor(seg.scores, dtype=torch.float32, device=self.device),
                        "old_logp": cur["logp"][row, :n].clone(),
                        "ref_logp": ref["logp"][row, :n].clone(),
                        "old_values": cur["values"][row, :n].clone(),
                    }

    def compute_advantages(self, episodes: Sequence[Episode]) -> dict[str, float]:
        """Fill every segment's ``advantages`` and ``returns`` (after :meth:`_score`)."""
        cfg = self.config
        stats: dict[str, float] = {}
        all_segments = [s for ep in episodes for s in ep.segments]
        for ep in episodes:
            t = {k: torch.cat([s.tensors[k] for s in ep.segments])[None]
                 for k in ("mask", "scores", "old_logp", "ref_logp", "old_values")}
            kl = kl_estimate(t["old_logp"], t["ref_logp"], cfg.kl_estimator) * t["mask"]
            kl_coef = cfg.kl_coef if cfg.kl_in_reward else 0.0
            rewards = token_rewards(t["scores"], kl, t["mask"], kl_coef)
            adv, ret = gae(rewards, t["old_values"], t["mask"], gamma=cfg.gamma, lam=cfg.lam)
            offset = 0
            for seg in ep.segments:
                n = len(seg.input_ids)
                seg.tensors["advantages"] = adv[0, offset: offset + n]
                seg.tensors["returns"] = ret[0, offset: offset + n]
                offset += n
        if cfg.whiten_advantages:
            mask = torch.cat([s.tensors["mask"] for s in all_segments])
            flat = masked_whiten(torch.cat([s.tensors["advantages"] for s in all_segments]), mask)
            offset = 0
            for seg in all_segments:
                n = len(seg.input_ids)
                seg.tensors["advantages"] = flat[offset: offset + n]
                offset += n
        mask = torch.cat([s.tensors["mask"] for s in all_segments])
        kl_all = kl_estimate(torch.cat([s.tensors["old_logp"] for s in all_segments]),
                             torch.cat([s.tensors["ref_logp"] for s in all_segments]), cfg.kl_estimator)
        stats["kl_ref"] = float(masked_mean(kl_all, mask))
        stats["policy_tokens"] = float(mask.sum())
        return stats

    # ---- optimisation -------------------------------------------------------------------------
    def _optimise(self, segments: list[Segment], update: int) -> dict[str, float]:
        cfg = self.config
        rng = np.random.default_rng(derive_seed(cfg.seed, "minibatches", update))
        sums: dict[str, float] = {}
        steps = 0
        if cfg.gradient_checkpointing:
            self.model.train()  # HF checkpointing is active in train mode only
        for _ in range(cfg.ppo_epochs):
            order = rng.permutation(len(segments)).tolist()
            for mb_start in range(0, len(order), cfg.minibatch_size):
                mb = [segments[i] for i in order[mb_start: mb_start + cfg.minibatch_size]]
                mb_tokens = sum(float(s.tensors["mask"].sum()) for s in mb)
                if mb_tokens == 0:
                    continue
                self.optimizer.zero_grad(set_to_none=True)
                for mi in range(0, len(mb), cfg.micro_batch_size):
                    micro = mb[mi: mi + cfg.micro_batch_size]
                    loss, parts = self._micro_loss(micro)
                    weight = sum(float(s.tensors["mask"].sum()) for s in micro) / mb_tokens
                    (loss * weight).backward()
                    for k, v in parts.items():
                        sums[k] = sums.get(k, 0.0) + v * weight
                params = [p for group in self.optimizer.param_groups for p in group["params"]]
                grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                sums["grad_norm"] = sums.get("grad_norm", 0.0) + float(grad_norm)
                self.optimizer.step()
                steps += 1
        self.optimizer.zero_grad(set_to_none=True)
        self.model.eval()
        out = {k: v / max(steps, 1) for k, v in sums.items()}
        out["optimizer_steps"] = float(steps)
        return out

    def _micro_loss(self, micro: list[Segment]):
        cfg = self.config
        ids, attn = _pad_rows([s.input_ids for s in micro], self.pad_id, self.device)
        width = ids.shape[1]
        t = {k: _pad_float([s.tensors[k] for s in micro], width, self.device)
             for k in ("mask", "old_logp", "ref_logp", "old_values", "advantages", "returns")}
        mask = t["mask"]
        with self._autocast():
            fwd = policy_forward(self.model, ids, attn, temperature=cfg.temperature, value_head=self.value_head,
                                 with_entropy=cfg.entropy_coef > 0, positions=mask)
        loss, stats = clipped_policy_loss(fwd["logp"], t["old_logp"], t["advantages"], mask, cfg.clip_eps)
        parts = {"policy_loss": float(loss.detach()), **stats}
        v_loss, v_stats = clipped_value_loss(fwd["values"], t["old_values"], t["returns"], mask, cfg.value_clip_eps)
        loss = loss + cfg.value_coef * v_loss
        parts.update(value_loss=float(v_loss.detach()), **v_stats)
        if not cfg.kl_in_reward and cfg.kl_coef > 0:
            kl = masked_mean(kl_estimate(fwd["logp"], t["ref_logp"], cfg.kl_estimator), mask)
            loss = loss + cfg.kl_coef * kl
            parts["kl_loss"] = float(kl.detach())
        if fwd["entropy"] is not None:
            entropy = masked_mean(fwd["entropy"], mask)
            loss = loss - cfg.entropy_coef * entropy
            parts["entropy"] = float(entropy.detach())
        return loss, parts

    # ---- checkpoints ---------------------------------------------------------------------------
    def _save(self, next_update: int) -> None:
        from mucode_env.atomic import atomic_dir

        with atomic_dir(self.checkpoint_dir) as tmp:
            self.model.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            torch.save(self.value_head.state_dict(), tmp / VALUE_HEAD_FILE)
            if self.config.save_optimizer:
                torch.save(self.optimizer.state_dict(), tmp / OPTIMIZER_FILE)
            (tmp / TRAINER_STATE_FILE).write_text(json.dumps(
                {"update": next_update, "config": asdict(self.config), "base_model": self.base_path,
                 "saved_at": time.time()}, indent=2, default=str))

    def _log(self, row: dict[str, Any]) -> None:
        self.history.append(row)
        with open(self.output_dir / LOG_FILE, "a") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")

    def _trim_log(self) -> None:
        """Drop log rows of updates after the checkpoint (a crash between log and save)."""
        path = self.output_dir / LOG_FILE
        if not path.is_file():
            return
        keep = [line for line in path.read_text().splitlines()
                if line.strip() and json.loads(line).get("update", -1) < self.start_update]
        write_text_atomic(path, "".join(line + "\n" for line in keep))
        self.history = [json.loads(line) for line in keep]

    # ---- the loop ------------------------------------------------------------------------------
    def step(self, update: int) -> dict[str, Any]:
        """One update: roll out, score, compute advantages, optimise. Returns its statistics."""
        t0 = time.perf_counter()
        episodes = self.rollout(update)
        t_roll = time.perf_counter() - t0
        segments = [s for ep in episodes for s in ep.segments]
        self._score(segments)
        stats: dict[str, Any] = {"update": update}
        stats.update(self.compute_advantages(episodes))
        stats.update(self._optimise(segments, update))
        n = len(episodes)
        stats.update(
            reward=sum(ep.reward for ep in episodes) / n,
            return_=sum(ep.return_ for ep in episodes) / n,
            turns=sum(len(ep.turns) for ep in episodes) / n,
            response_tokens=sum(t.completion_tokens for ep in episodes for t in ep.turns) / max(
                1, sum(len(ep.turns) for ep in episodes)),
            segments_per_episode=len(segments) / n,
            rollout_s=t_roll,
            update_s=time.perf_counter() - t0,
        )
        return stats

    def train(self) -> Path:
        """Run (or resume) training; returns the checkpoint directory (a HF causal-LM checkpoint)."""
        from tqdm.auto import tqdm

        cfg = self.config
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._setup()
        self._trim_log()
        if self.start_update >= cfg.total_updates:
            return self.checkpoint_dir
        bar = tqdm(range(self.start_update, cfg.total_updates), initial=self.start_update, total=cfg.total_updates,
                   desc="ppo", unit="update", disable=not cfg.progress)
        for update in bar:
            stats = self.step(update)
            self._log(stats)
            bar.set_postfix(reward=f"{stats['reward']:.3f}", kl=f"{stats['kl_ref']:.4f}")
            if (update + 1) % cfg.save_every == 0 or update + 1 == cfg.total_updates:
                self._save(update + 1)
        bar.close()
        return self.checkpoint_dir


