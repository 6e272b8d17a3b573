"""Rank awareness for the training stages when they run as a distributed job.

Generator fine-tuning and verifier training run unchanged under ``accelerate launch`` or
``torchrun`` (see :mod:`agents.training.launch`): TRL/transformers shard the data and, with DeepSpeed
ZeRO-3, the weights. What they do not know about is our output contract, so this module keeps it:
only the main process writes the output directory (atomically), every process takes part in
gathering the weights, and the effective batch stays ``batch_size`` whatever the world size.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mucode_env.atomic import atomic_dir

__all__ = ["world_size", "is_main_process", "accumulation_steps", "rank_output_dir", "save_trained_model"]

# files a PEFT adapter save writes; replaced by the merged model on the main process
_ADAPTER_FILES = ("adapter_model.safetensors", "adapter_model.bin", "adapter_config.json")


def world_size() -> int:
    """Processes in this job (``WORLD_SIZE`` set by torchrun/accelerate; 1 when not distributed)."""
    return max(1, int(os.environ.get("WORLD_SIZE", "1")))


def is_main_process() -> bool:
    """Whether this process writes outputs (global rank 0, or not distributed at all)."""
    return int(os.environ.get("RANK", "0")) == 0


def accumulation_steps(batch_size: int, per_device_batch_size: int, explicit: int | None = None) -> int:
    """Gradient-accumulation steps that make ``batch_size`` the examples per optimizer step
    across all processes (``explicit`` wins when given)."""
    if explicit is not None:
        return explicit
    return max(1, math.ceil(batch_size / (per_device_batch_size * world_size())))


@contextlib.contextmanager
def rank_output_dir(output_dir: str | os.PathLike) -> Iterator[Path]:
    """The main process gets :func:`~mucode_env.atomic.atomic_dir`; the others a scratch
    directory that is discarded, so that exactly one process commits ``output_dir``."""
    if is_main_process():
        with atomic_dir(output_dir) as tmp:
            yield tmp
    else:
        with tempfile.TemporaryDirectory(prefix=f".{Path(output_dir).name}.rank{os.environ.get('RANK')}.") as tmp:
            yield Path(tmp)


def save_trained_model(trainer: Any, out: Path, *, lora: bool, base_model: str | None = None,
                       torch_dtype: Any = None) -> None:
    """Save ``trainer``'s model into ``out`` as a plain (merged) checkpoint.

    Not distributed: merge a LoRA adapter in memory and ``save_pretrained``. Distributed: every
    process calls ``trainer.save_model`` (it gathers ZeRO-3 shards; only rank 0 writes); then the
    main process merges a LoRA adapter into ``base_model`` on the CPU.
    """
    if world_size() == 1:
        model = trainer.model
        if lora:
            model = model.merge_and_unload()
        model.save_pretrained(out)
        return
    trainer.save_model(str(out))
    if not (lora and is_main_process()):
        return
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    if base_model is None:
        raise ValueError("merging a LoRA adapter needs base_model")
    base = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch_dtype)
    merged = PeftModel.from_pretrained(base, str(out)).merge_and_unload()
    for name in _ADAPTER_FILES:
        (out / name).unlink(missing_ok=True)
    merged.save_pretrained(out)
