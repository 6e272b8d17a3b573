"""The µCODE run directory: per-stage artifacts with ``.done`` markers, and sharing finished stages
between runs (so RFT starts from µCODE's own iteration-1 rollouts and verifier)::

    run_dir/config.json
    run_dir/iter1/rollouts/            (agents.rollout's resumable shards + table)
    run_dir/iter1/rollouts.jsonl       (the iteration's trajectories)        rollouts.done
    run_dir/iter1/pairs.jsonl          (the verifier's BT pairs)
    run_dir/iter1/verifier/            (R_phi trained on D_1)                verifier.done
    run_dir/iter1/experts.jsonl, relabeled.jsonl  (y* and D*)                relabel.done
    run_dir/iter1/generator/           (pi_1 fine-tuned from the BASE)       generator.done
    run_dir/iter1/validation.json      (BoN with (pi_1, R_phi_1))            validation.done
    run_dir/best.json, report.json, report.md, report_accuracy.png, report_turns.png
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from mucode_env.atomic import write_json_atomic

__all__ = ["STAGES", "mark_done", "share_stages", "stage_done"]

STAGES = ("rollouts", "verifier", "relabel", "generator", "validation")


def stage_done(it_dir: Path, stage: str) -> dict[str, Any] | None:
    """The statistics a finished stage recorded in its marker, or None when it has not finished."""
    marker = it_dir / f"{stage}.done"
    return json.loads(marker.read_text()) if marker.is_file() else None


def mark_done(it_dir: Path, stage: str, stats: dict[str, Any]) -> dict[str, Any]:
    """Record ``stage`` as finished (after its artifacts are written)."""
    write_json_atomic(it_dir / f"{stage}.done", stats, default=str)
    return stats


# the files each shareable stage writes in its iteration directory (its marker comes last)
_STAGE_FILES: dict[str, tuple[str, ...]] = {
    "rollouts": ("rollouts", "rollouts.jsonl"),
    "verifier": ("pairs.jsonl", "verifier"),
}


def share_stages(src_run: str | os.PathLike, dst_run: str | os.PathLike, iteration: int = 1,
                 stages: tuple[str, ...] = ("rollouts", "verifier")) -> list[str]:
    """Copy finished stages of one run's iteration into another run, which then skips them.

    For fair comparisons: an RFT run that shares µCODE's iteration-1 rollouts and verifier
    starts from the same D_1 and differs only in its training set. The ``.done`` marker is
    copied last, so an interrupted copy is redone. Returns the stages copied now (stages the
    destination has already finished are left alone).

    Raises:
        ValueError: an unknown stage, or a stage that the source has not finished.
    """
    src, dst = Path(src_run) / f"iter{iteration}", Path(dst_run) / f"iter{iteration}"
    unknown = [s for s in stages if s not in _STAGE_FILES]
    if unknown:
        raise ValueError(f"cannot share stage(s) {unknown}; shareable: {sorted(_STAGE_FILES)}")
    unfinished = [s for s in stages if not (src / f"{s}.done").is_file()]
    if unfinished:
        raise ValueError(f"{src}: stage(s) {unfinished} are not finished (no .done marker); finish that run first")
    copied = []
    for stage in stages:
        if (dst / f"{stage}.done").is_file():
            continue
        dst.mkdir(parents=True, exist_ok=True)
        for name in _STAGE_FILES[stage]:
            if (src / name).is_dir():
                shutil.copytree(src / name, dst / name, dirs_exist_ok=True)
            elif (src / name).is_file():
                shutil.copy2(src / name, dst / name)
        shutil.copy2(src / f"{stage}.done", dst / f"{stage}.done")
        copied.append(stage)
    return copied


