"""Generator fine-tuning with TRL's SFTTrainer: full or LoRA, always from the BASE model.

µCODE (Algorithm 1, step 6) fine-tunes the generator on the relabeled set D* = {(s_t -> y*)}
with the loss on the target completion only, restarting from the base model every iteration.
:func:`finetune` takes TRL prompt-completion examples (conversational: ``prompt`` is a list of
chat messages, ``completion`` a one-message assistant list; see :mod:`agents.mucode.relabel`), trains,
and saves model + tokenizer atomically (temporary sibling directory, then rename), so a crash
never leaves a half-written generator behind. With LoRA the adapter is merged before saving, so
the output is always a plain causal-LM checkpoint usable by every backend.

>>> from agents.training.sft import SFTRunConfig, finetune
>>> path = finetune("base-dir", examples, SFTRunConfig(epochs=1), "runs/gen")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agents.training.checkpoints import ResumableRun
from agents.training.launch import Stage
from agents.training.lm_head import compact_lm_head
from agents.training.precision import DTYPES, resolve_bf16, torch_dtype_of
from agents.training.distributed import accumulation_steps, is_main_process, rank_output_dir, save_trained_model, world_size

__all__ = [
    "SFTRunConfig",
    "finetune",
    "read_train_stats",
    "TRAIN_STATS_FILE",
]

logger = logging.getLogger(__name__)

TRAIN_STATS_FILE = "train_stats.json"


@dataclass(frozen=True)
class SFTRunConfig:
    """How to fine-tune the generator (Table 6 of the paper gives the GPU values).

    ``batch_size`` is the effective batch (examples per optimizer step, over all processes); it
    is reached with micro-batches of ``per_device_batch_size`` and gradient accumulation
    (``ceil(batch_size / (per_device_batch_size * world size))`` unless ``grad_accum`` is set).

    ``torch_dtype`` is the dtype the weights are loaded in (``"bfloat16"`` suits a frozen LoRA
    base; a full fine-tune keeps fp32 master weights); ``bf16`` runs forward and backward under
    bf16 autocast (None: where the device computes bf16 natively, CPUs with AVX512-BF16/AMX
    included; see :mod:`agents.training.precision`).
    """

    learning_rate: float = 5e-7
    epochs: float = 2.0
    batch_size: int = 32
    per_device_batch_size: int = 4
    grad_accum: int | None = None
    max_length: int = 4096
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: tuple[str, ...] | str = "all-linear"
    seed: int = 0
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    lr_scheduler_type: str = "cosine"
    gradient_checkpointing: bool = False
    torch_dtype: str = "float32"
    bf16: bool | None = None
    compact_lm_head: bool = True  # LM head only on labelled positions, on the CPU too (agents.training.lm_head)
    logging_steps: int = 10
    progress: bool = True
    drop_overlong: bool = True  # drop examples longer than max_length instead of truncating them
    # save a resumable checkpoint (adapter or weights, optimizer, scheduler, RNG) every this many
    # optimizer steps, beside the output; a restarted stage resumes from the last one (None: never)
    checkpoint_steps: int | None = None

    def __post_init__(self) -> None:
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.epochs <= 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs}")
        if self.batch_size < 1 or self.per_device_batch_size < 1:
            raise ValueError(
                f"batch_size and per_device_batch_size must be >= 1, got {self.batch_size}, {self.per_device_batch_size}"
            )
        if self.grad_accum is not None and self.grad_accum < 1:
            raise ValueError(f"grad_accum must be >= 1 or None, got {self.grad_accum}")
        if self.checkpoint_steps is not None and self.checkpoint_steps < 1:
            raise ValueError(f"checkpoint_steps must be >= 1 or None, got {self.checkpoint_steps}")
        if self.max_length < 8:
            raise ValueError(f"max_length must be >= 8, got {self.max_length}")
        if self.torch_dtype not in DTYPES:
            raise ValueError(f"torch_dtype must be one of {DTYPES}, got {self.torch_dtype!r}")
        if isinstance(self.lora_target_modules, list):
            object.__setattr__(self, "lora_target_modules", tuple(self.lora_target_modules))

    @property
    def gradient_accumulation_steps(self) -> int:
        """Steps that make ``batch_size`` the examples per optimizer step over all processes."""
        return accumulation_steps(self.batch_size, self.per_device_batch_size, self.grad_accum)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SFTRunConfig":
        return cls(**d)


# ----------------------------------------------------------------------------- helpers


def load_tokenizer(path: str):
    """The tokenizer of ``path`` with a pad token (eos when it has none) and right padding."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ValueError(f"tokenizer of {path} has neither a pad nor an eos token; set one before training")
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    if not getattr(tok, "chat_template", None):
        raise ValueError(
            f"tokenizer of {path} has no chat template; µCODE renders prompts as chats. "
            "Use an instruct checkpoint or set tokenizer.chat_template."
        )
    return tok


def write_train_stats(path: Path, stats: dict[str, Any]) -> None:
    (Path(path) / TRAIN_STATS_FILE).write_text(json.dumps(stats, indent=2, sort_keys=True, default=str))


def read_train_stats(path: str | os.PathLike) -> dict[str, Any]:
    """The statistics a training function saved next to its model (empty when absent)."""
    f = Path(path) / TRAIN_STATS_FILE
    return json.loads(f.read_text()) if f.is_file() else {}


def _chat_len(tok, messages: list[dict[str, str]]) -> int:
    return len(tok.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])


# ----------------------------------------------------------------------------- finetune


def common_training_args(config: Any, output_dir: Path) -> dict[str, Any]:
    """TrainingArguments shared by generator fine-tuning and verifier training.

    ``config`` is an :class:`SFTRunConfig` or a ``VerifierConfig`` (they share these fields).
    The trained model is saved by the caller, atomically; with ``config.checkpoint_steps`` the
    trainer also keeps its last resumable checkpoint in ``output_dir`` (see
    :class:`agents.training.checkpoints.ResumableRun`).
    Logging goes nowhere external, and the data order is seeded.
    """
    import torch

    saving: dict[str, Any] = {"save_strategy": "no"}
    if config.checkpoint_steps is not None:
        saving = {"save_strategy": "steps", "save_steps": config.checkpoint_steps, "save_total_limit": 1}
    return dict(
        output_dir=str(output_dir),
        learning_rate=config.learning_rate,
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.per_device_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        seed=config.seed,
        data_seed=config.seed,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_ratio,  # transformers 5: a float in [0, 1) is a ratio
        lr_scheduler_type=config.lr_scheduler_type,
        gradient_checkpointing=config.gradient_checkpointing,
        bf16=resolve_bf16(config.bf16),
        fp16=False,
        logging_steps=config.logging_steps,
        **saving,
        report_to="none",
        disable_tqdm=not config.progress,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
        # without a GPU say so: transformers then runs a torchrun/accelerate job data-parallel (gloo)
        use_cpu=not torch.cuda.is_available(),
    )


def finetune(
    base_model: str | os.PathLike,
    examples: Sequence[dict[str, Any]],
    config: SFTRunConfig,
    output_dir: str | os.PathLike,
) -> Path:
    """Fine-tune ``base_model`` on prompt-completion ``examples`` with completion-only loss.

    Args:
        base_model: the BASE checkpoint (a directory or a name; see :func:`agents.models.convert.hf_checkpoint`).
            Callers pass the base model every iteration, never the previous fine-tune.
        examples: TRL conversational prompt-completion rows ``{"prompt": [messages...],
            "completion": [{"role": "assistant", "content": ...}]}``; other keys are ignored.
        config: the run's hyperparameters.
        output_dir: where the merged model and its tokenizer are saved (atomically).

    Returns:
        ``Path(output_dir)``. ``train_stats.json`` there records the example count, the dropped
        overlong examples, the trained tokens and tokens/s.

    Raises:
        ValueError: when ``examples`` is empty (or every example is longer than ``max_length``).
    """
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    if not examples:
        raise ValueError("finetune needs at least one example; got an empty list")
    from agents.models.convert import hf_checkpoint

    base = hf_checkpoint(base_model)
    tok = load_tokenizer(base)

    rows, n_tokens, dropped = [], 0, 0
    for ex in examples:
        if "prompt" not in ex or "completion" not in ex:
            raise ValueError(f"each example needs 'prompt' and 'completion' keys; got keys {sorted(ex)}")
        n = _chat_len(tok, list(ex["prompt"]) + list(ex["completion"]))
        if n > config.max_length and config.drop_overlong:
            dropped += 1
            continue
        n_tokens += min(n, config.max_length)
        rows.append({"prompt": list(ex["prompt"]), "completion": list(ex["completion"])})
    if not rows:
        raise ValueError(
            f"all {len(examples)} examples are longer than max_length={config.max_length}; raise max_length"
        )
    if dropped:
        logger.warning("finetune: dropped %d of %d examples longer than %d tokens", dropped, len(examples), config.max_length)

    dtype = torch_dtype_of(config.torch_dtype)
    with torch.random.fork_rng(devices=[]):
        model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    peft_config = None
    if config.lora:
        from peft import LoraConfig

        target = config.lora_target_modules
        peft_config = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=target if isinstance(target, str) else list(target),
            task_type="CAUSAL_LM",
        )

    run = ResumableRun(output_dir, config, base, rows)
    with rank_output_dir(output_dir) as tmp:
        args = SFTConfig(max_length=config.max_length, completion_only_loss=True, packing=False,
                         **common_training_args(config, run.trainer_dir(tmp)))
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tok,
            peft_config=peft_config,
        )
        t0 = time.perf_counter()
        with compact_lm_head() if config.compact_lm_head else nullcontext():
            result = trainer.train(resume_from_checkpoint=run.checkpoint)
        train_s = time.perf_counter() - t0
        save_trained_model(trainer, tmp, lora=config.lora, base_model=base, torch_dtype=dtype)
        del trainer, model
        if not is_main_process():
            return Path(output_dir)
        tok.save_pretrained(tmp)
        shutil.rmtree(tmp / "trainer", ignore_errors=True)
        # this process trained only the steps after the checkpoint it resumed from
        trained_tokens = n_tokens * config.epochs * (1 - run.resumed_step / max(1, int(result.global_step)))
        write_train_stats(
            tmp,
            {
                "kind": "sft",
                "base_model": base,
                "n_examples": len(rows),
                "n_dropped_overlong": dropped,
                "n_tokens_per_epoch": n_tokens,
                "train_tokens": trained_tokens,
                "train_s": train_s,
                "train_tokens_per_s": trained_tokens / train_s if train_s > 0 else None,
                "train_loss": float(result.training_loss),
                "global_steps": int(result.global_step),
                "resumed_from_step": run.resumed_step,
                "world_size": world_size(),
                "config": asdict(config),
            },
        )
    run.finish()
    return Path(output_dir)


def train_job(base_model: str, rows: list[dict[str, Any]], config: dict[str, Any], output_dir: str) -> Path:
    """:data:`SFT_STAGE`'s target: :func:`finetune` from JSON rows and a configuration dict."""
    return finetune(base_model, rows, SFTRunConfig.from_dict(config), output_dir)


# Supervised fine-tuning as a stage that runs here or as a multi-process job (agents.training.launch).
SFT_STAGE = Stage("sft", "agents.training.sft:train_job")
