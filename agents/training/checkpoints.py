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
from pathlib import Path
from typing import Any

from agents.training.distributed import is_main_process

__all__ = ["ResumableRun"]

logger = logging.getLogger(__name__)


class ResumableRun:
    """The checkpoints of one training run, kept beside its output (``<output>.checkpoints``) so
    that a stage killed mid-training resumes from its last checkpoint instead of from step 0.

    ``identity`` (the data, the configuration, the base model) is written with them: checkpoints
    of another run (the examples changed) are discarded, with a warning, rather than resumed.
    """

    def __init__(self, output_dir: str | os.PathLike, identity: Any, enabled: bool) -> None:
        out = Path(output_dir)
        self.dir = out.parent / f"{out.name}.checkpoints"
        self.enabled = enabled
        self.digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()

    def last_checkpoint(self) -> str | None:
        """The checkpoint to resume from (None: start at step 0); stale ones are removed."""
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

    def prepare(self) -> Path:
        """The directory the trainer writes its checkpoints to, marked with this run's identity."""
        if self.enabled and is_main_process():
            self.dir.mkdir(parents=True, exist_ok=True)
            (self.dir / "identity.sha256").write_text(self.digest + "\n")
        return self.dir

    def finish(self) -> None:
        """The output is saved: its checkpoints are no longer needed."""
        if self.enabled and is_main_process():
            shutil.rmtree(self.dir, ignore_errors=True)
