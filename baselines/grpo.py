"""GRPO over whole multi-turn episodes, trained by TRL's ``GRPOTrainer``.

The episodes are the paper's MDP (answer, public-test feedback as the next user turn, up to T
turns, stop when the public tests pass), played by :class:`agents.integrations.trl.MuCodeRolloutFunc`
inside TRL's ``rollout_func`` hook; feedback tokens are masked out of the loss (``env_mask``).
The reward is the environment's oracle of the episode's last program (public and private tests),
optionally plus a weighted public-test pass rate. TRL does the rest: ``num_generations`` episodes
per problem, group-relative advantages, the clipped loss, the KL to the reference (``beta``),
optimisation, logging and checkpoints.

Outputs under ``output_dir``: ``checkpoint/`` (a plain HF checkpoint of the final policy and
``trainer_state.json``, written atomically; ``mucode bench`` reads it like a PPO run),
``log.jsonl`` (TRL's log rows) and ``trl/`` (TRL's own resumable checkpoints when ``save_every``
is set; ``train()`` resumes from the latest).

>>> from baselines.grpo import GRPOBaseline, GRPOBaselineConfig
>>> GRPOBaseline(GRPOBaselineConfig(model="qwen2.5-coder-0.5b", output_dir="runs/grpo")).train()  # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from baselines.rl_run import RLRunConfig, read_run_state

__all__ = ["GRPOBaselineConfig", "GRPOBaseline", "CHECKPOINT_DIR", "LOG_FILE", "TRAINER_STATE_FILE", "TRL_DIR"]

CHECKPOINT_DIR = "checkpoint"
TRAINER_STATE_FILE = "trainer_state.json"
LOG_FILE = "log.jsonl"
TRL_DIR = "trl"
_SCALE_REWARDS = ("group", "batch", "none")
# Fields that may change between a run and its resumption without changing what is trained.
_RESUMABLE_FIELDS = ("max_steps", "save_every", "logging_steps", "progress", "resume", "output_dir")


@dataclass(frozen=True)
class GRPOBaselineConfig(RLRunConfig):
    """Settings of a GRPO run. ``asdict(config)`` is the run record.

    Attributes (besides :class:`~baselines.rl_run.RLRunConfig`'s model, run directory, problems,
    environment rules and sampling):
        max_steps: optimizer steps.
        num_generations: episodes per problem (G), the group of the relative advantage.
        per_device_train_batch_size: episodes per forward/backward pass (TRL counts completions).
        gradient_accumulation_steps: passes per optimizer step; problems per optimizer step =
            ``per_device_train_batch_size * gradient_accumulation_steps * processes / num_generations``.
        num_iterations: optimisation passes over each batch of episodes (TRL's mu).
        learning_rate, weight_decay, max_grad_norm: AdamW settings.
        beta: KL coefficient to the initial policy (TRL's default 0: no reference model is loaded).
        epsilon: the ratio clipping range.
        loss_type: TRL's loss normalisation (``"dapo"``: token mean over the batch; ``"grpo"``, ``"dr_grpo"``...).
        scale_rewards: ``"group"`` (divide by the group's std, DeepSeekMath), ``"batch"`` or ``"none"``.
        oracle_weight / public_pass_rate_weight: weights of the two reward functions (both are logged).
        logging_steps: TRL's logging period.
        save_every: write TRL checkpoints (with the optimizer state) every N steps, so that an
            interrupted run resumes (``resume`` continues from the latest one under
            ``output_dir/trl``); None: only the final policy is saved.
    """

    max_steps: int = 100
    num_generations: int = 4
    per_device_train_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    num_iterations: int = 1
    learning_rate: float = 1e-6
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    beta: float = 0.0
    epsilon: float = 0.2
    loss_type: str = "dapo"
    scale_rewards: str = "group"
    oracle_weight: float = 1.0
    public_pass_rate_weight: float = 0.0
    logging_steps: int = 1
    save_every: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("max_steps", "num_generations", "per_device_train_batch_size",
                     "gradient_accumulation_steps", "num_iterations", "logging_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.num_generations < 2:
            raise ValueError(f"num_generations must be >= 2 (a group of one episode has no relative advantage), "
                             f"got {self.num_generations}")
        batch = self.per_device_train_batch_size * self.gradient_accumulation_steps
        if batch % self.num_generations:
            raise ValueError(f"per_device_train_batch_size * gradient_accumulation_steps ({batch}) must be a multiple "
                             f"of num_generations ({self.num_generations}); e.g. set per_device_train_batch_size="
                             f"{self.num_generations * max(1, batch // self.num_generations)}")
        if self.save_every is not None and (not isinstance(self.save_every, int) or self.save_every < 1):
            raise ValueError(f"save_every must be a positive int or None, got {self.save_every!r}")
        if self.scale_rewards not in _SCALE_REWARDS:
            raise ValueError(f"scale_rewards must be one of {_SCALE_REWARDS}, got {self.scale_rewards!r}")
        if self.learning_rate <= 0 or self.max_grad_norm <= 0:
            raise ValueError(f"learning_rate and max_grad_norm must be > 0, got {self.learning_rate}, "
                             f"{self.max_grad_norm}")
        if min(self.beta, self.epsilon, self.weight_decay, self.oracle_weight, self.public_pass_rate_weight) < 0:
            raise ValueError("beta, epsilon, weight_decay, oracle_weight and public_pass_rate_weight must be >= 0")
        if self.oracle_weight == 0 and self.public_pass_rate_weight == 0:
            raise ValueError("oracle_weight and public_pass_rate_weight are both 0: nothing to learn from; "
                             "set oracle_weight=1.0")

    def rollout_config(self):
        """The episodes, as :class:`agents.integrations.trl.MultiTurnRolloutConfig`."""
        from agents.integrations.trl import MultiTurnRolloutConfig

        return MultiTurnRolloutConfig(env_id=self.env_id, split=self.split, max_turns=self.max_turns,
                                      termination=self.termination, max_new_tokens=self.max_new_tokens,
                                      data_dir=self.data_dir)

    def trl_args(self):
        """TRL's ``GRPOConfig`` for this run (TRL's checkpoints under ``output_dir/trl``)."""
        import torch
        from trl import GRPOConfig

        from agents.training.precision import resolve_bf16

        bf16 = resolve_bf16(self.bf16)
        return GRPOConfig(
            output_dir=str(Path(self.output_dir) / TRL_DIR),
            max_steps=self.max_steps,
            per_device_train_batch_size=self.per_device_train_batch_size,
            gradient_accumulation_steps=self.gradient_accumulation_steps,
            num_generations=self.num_generations,
            num_iterations=self.num_iterations,
            learning_rate=self.learning_rate,
            weight_decay=self.weight_decay,
            max_grad_norm=self.max_grad_norm,
            beta=self.beta,
            epsilon=self.epsilon,
            loss_type=self.loss_type,
            scale_rewards=self.scale_rewards,
            reward_weights=[self.oracle_weight, self.public_pass_rate_weight],
            temperature=self.temperature,
            top_p=self.top_p,
            max_completion_length=self.max_new_tokens,
            seed=self.seed,
            data_seed=self.seed,
            bf16=bf16,
            fp16=False,
            use_cpu=not torch.cuda.is_available(),
            gradient_checkpointing=self.gradient_checkpointing,
            logging_steps=self.logging_steps,
            save_strategy="steps" if self.save_every else "no",
            save_steps=self.save_every or 500,
            report_to="none",
            disable_tqdm=not self.progress,
            dataloader_num_workers=0,
            dataloader_pin_memory=False,
        )

    @classmethod
    def cpu(cls, output_dir: str, model: str = "qwen2.5-coder-0.5b", **overrides: Any) -> "GRPOBaselineConfig":
        """A 2-core CPU preset on the embedded 0.5B model: a short run, not a converged one.

        Mirrors ``PPOConfig.cpu``'s budget: the first 8 MBPP-train problems, 2 optimizer steps of
        8 episodes (2 problems x G=4), 384 new tokens per turn, learning rate 1e-5, micro batch 2
        with gradient checkpointing (fp32 AdamW on 0.5B parameters needs ~8 GB already).
        """
        base: dict[str, Any] = {
            "model": model, "output_dir": output_dir, "limit": 8, "max_steps": 2, "num_generations": 4,
            "per_device_train_batch_size": 2, "gradient_accumulation_steps": 4, "learning_rate": 1e-5,
            "max_new_tokens": 384, "gradient_checkpointing": True,
        }
        return cls(**{**base, **overrides})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GRPOBaselineConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown GRPOBaselineConfig field(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


class GRPOBaseline:
    """A GRPO run: builds TRL's ``GRPOTrainer`` with mucode's rollout, rewards and dataset.

    ``build()`` returns the trainer (built once); ``train()`` trains (or resumes) and returns the
    checkpoint directory, which loads like any HF causal-LM checkpoint.

    Args:
        config: the run's settings.
        problems: train on these in-memory problems instead of loading ``config.env_id``'s split.
        sandbox: a shared ``mucode_env.sandbox.Sandbox`` (default: the process-wide one).
    """

    def __init__(self, config: GRPOBaselineConfig, *, problems: Sequence[Any] | None = None, sandbox: Any = None):
        self.config = config
        self._problems = list(problems) if problems is not None else None
        self._sandbox = sandbox
        self.output_dir = Path(config.output_dir)
        self.checkpoint_dir = self.output_dir / CHECKPOINT_DIR
        self.trainer: Any = None
        self.rollout: Any = None

    def build(self):
        """The ``trl.GRPOTrainer`` of this run (dataset, rollout function, reward functions, model)."""
        if self.trainer is not None:
            return self.trainer
        import torch
        from transformers import AutoModelForCausalLM
        from trl import GRPOTrainer

        from agents.integrations.trl import (MuCodeRolloutFunc, build_dataset, oracle_reward,
                                             public_pass_rate_reward)
        from agents.models.convert import hf_checkpoint
        from agents.training.sft import load_tokenizer

        cfg = self.config
        self.base_path = hf_checkpoint(cfg.model)
        dataset = build_dataset(cfg.env_id, cfg.split, problem_ids=cfg.problem_ids, limit=cfg.limit,
                                data_dir=cfg.data_dir, problems=self._problems)
        self.rollout = MuCodeRolloutFunc(cfg.rollout_config(), problems=self._problems, sandbox=self._sandbox)
        tokenizer = load_tokenizer(self.base_path)
        model = AutoModelForCausalLM.from_pretrained(self.base_path, dtype=getattr(torch, cfg.torch_dtype))
        with warnings.catch_warnings():  # we depend on TRL's rollout_func on purpose (pinned version)
            warnings.filterwarnings("ignore", message="You are using 'rollout_func'", category=UserWarning)
            self.trainer = GRPOTrainer(model=model, reward_funcs=[oracle_reward, public_pass_rate_reward],
                                       args=cfg.trl_args(), train_dataset=dataset, processing_class=tokenizer,
                                       rollout_func=self.rollout)
        return self.trainer

    def _saved_state(self) -> dict[str, Any] | None:
        if not self.config.resume:
            return None
        return read_run_state(self.checkpoint_dir / TRAINER_STATE_FILE, self.config, _RESUMABLE_FIELDS)

    def train(self) -> Path:
        """Train (or resume) and return the checkpoint directory."""
        from transformers.trainer_utils import get_last_checkpoint

        from agents.training.lm_head import compact_lm_head

        state = self._saved_state()
        if state is not None and int(state.get("global_step", 0)) >= self.config.max_steps:
            return self.checkpoint_dir
        trainer = self.build()
        trl_dir = self.output_dir / TRL_DIR
        last = get_last_checkpoint(str(trl_dir)) if self.config.resume and trl_dir.is_dir() else None
        with compact_lm_head():  # score completion tokens only, on the CPU too
            trainer.train(resume_from_checkpoint=last)
        self._save(trainer)
        return self.checkpoint_dir

    def _save(self, trainer: Any) -> None:
        from agents.training.distributed import is_main_process, rank_output_dir, save_trained_model
        from mucode_env.atomic import write_text_atomic

        with rank_output_dir(self.checkpoint_dir) as tmp:
            save_trained_model(trainer, tmp, lora=False)
            if is_main_process():
                trainer.processing_class.save_pretrained(tmp)
                (tmp / TRAINER_STATE_FILE).write_text(json.dumps(
                    {"global_step": int(trainer.state.global_step), "config": asdict(self.config),
                     "base_model": self.base_path, "saved_at": time.time()}, indent=2, default=str))
        if is_main_process():
            rows = [json.dumps(row, sort_keys=True, default=float) for row in trainer.state.log_history]
            write_text_atomic(self.output_dir / LOG_FILE, "".join(r + "\n" for r in rows))
