"""The saved state of a training run, and whether a new configuration may continue it."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

__all__ = ["read_run_state"]


def read_run_state(state_file: str | os.PathLike, config: Any, resumable_fields: Iterable[str]) -> dict[str, Any] | None:
    """The JSON state a run saved next to its checkpoint (None when there is none).

    The state's ``"config"`` (``asdict`` of the run's dataclass config) must equal ``config`` on
    every field but ``resumable_fields`` (those that may change between a run and its resumption,
    such as the number of steps); JSON lists compare equal to tuples.

    Raises:
        ValueError: the checkpoint was written by a different configuration (the fields are named).
    """
    path = Path(state_file)
    if not path.is_file():
        return None
    state = json.loads(path.read_text())
    saved, mine = dict(state.get("config", {})), asdict(config)
    for key in resumable_fields:
        saved.pop(key, None)
        mine.pop(key, None)
    saved = {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()}
    if saved != mine:
        diff = sorted(k for k in set(saved) | set(mine) if saved.get(k) != mine.get(k))
        raise ValueError(f"{path} was written by a different configuration (fields {diff}); "
                         "use another output_dir or set resume=False")
    return state
