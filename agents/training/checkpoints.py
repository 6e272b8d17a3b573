"""Resumable training: a stage killed mid-training restarts from its last checkpoint.

A training stage on a 2-core CPU can outlast a session (the head-to-head's generator stage on 374
problems: hours). The Hugging Face trainer saves resumable checkpoints (weights or LoRA adapter,
optimizer, scheduler, RNG, data position); :class:`ResumableRun` keeps them beside the stage's
output, resumes only a run on the same data and settings, and removes them once the output is
saved (it is written atomically elsewhere, so a checkpoint is never mistaken for a result).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from agents.training.distributed import is_main_process

__all__ = ["ResumableRun"]

logger = logging.getLogger(__name__)


class ResumableRun:
    """The checkpoints of one training run, kept beside its output (``<output>.checkpoints``) so
    that a stage killed mid-training resumes from its last checkpoint instead of from step 0.

    Checkpoints are kept when ``config.checkpoint_steps`` is set (``SFTRunConfig``,
    ``VerifierConfig``). The run's identity (the base model, the training ``data`` and the
    settings that shape training) is written with them: checkpoints of another run (the examples
    changed) are discarded, with a warning, rather than resumed.

    Attributes:
        checkpoint: the checkpoint to resume from (``trainer.train(resume_from_checkpoint=...)``),
            None to start at step 0.
    """

    def __init__(self, output_dir: str | os.PathLike, config: Any, base: str | os.PathLike, data: Any) -> None:
        out = Path(output_dir)
        self.dir = out.parent / f"{out.name}.checkpoints"
        self.enabled = getattr(config, "checkpoint_steps", None) is not None
        shape = {k: v for k, v in asdict(config).items() if k not in ("progress", "logging_steps")}
        identity = {"base": str(base), "data": data, "config": shape}
        self.digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()
        self.checkpoint = self._last_checkpoint()
        if self.checkpoint is not None:
            logger.info("resuming from %s", self.checkpoint)

    @property
    def resumed_step(self) -> int:
        """The optimizer step of the checkpoint resumed from (0: none)."""
        return int(self.checkpoint.rsplit("-", 1)[-1]) if self.checkpoint is not None else 0

    def _last_checkpoint(self) -> str | None:
        if not self.enabled or not self.dir.is_dir():
            return None
        marker = self.dir / "identity.sha256"
        if not marker.is_file() or marker.read_text().strip() != self.digest:
            logger.warning("discarding checkpoints of a different run in %s", self.dir)
            if is_main_process():
                shutil.rmtree(self.dir, ignore_errors=True)
            return None
        from transformers.trainer_utils import get_last_checkpoint

        return get_last_checkpoint(str(self.dir))

    def trainer_dir(self, scratch: Path) -> Path:
        """Where the trainer writes: the checkpoint directory, marked with this run's identity,
        when checkpoints are kept; else ``scratch/trainer`` (discarded with the scratch)."""
        if not self.enabled:
            return scratch / "trainer"
        if is_main_process():
            self.dir.mkdir(parents=True, exist_ok=True)
            (self.dir / "identity.sha256").write_text(self.digest + "\n")
        return self.dir

    def finish(self) -> None:
        """The output is saved: its checkpoints are no longer needed."""
        if self.enabled and is_main_process():
            shutil.rmtree(self.dir, ignore_errors=True)
