"""What the RL baselines (PPO, GRPO) share: the settings of a run over environment episodes, and
whether a new configuration may continue a saved run."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["DTYPES", "RLRunConfig", "read_run_state"]

DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class RLRunConfig:
    """The settings every RL run over MuCode episodes has (PPO and GRPO add their own).

    Attributes:
        model: the initial (and reference) policy: a checkpoint directory, a registry name or a
            GGUF file (de-quantised by :func:`agents.models.convert.hf_checkpoint`).
        output_dir: where the checkpoint and the log go.
        env_id / split / data_dir: the training problems (MBPP: ``"train"``, task ids 601-974).
        problem_ids / limit: restrict the training problems (ids first, then the first ``limit``).
        max_turns, termination: the environment's T and termination rule.
        max_new_tokens: new tokens per turn.
        temperature / top_p: rollout sampling (the loss scores tokens at the same temperature, so
            the data is on-policy).
        seed: everything random derives from it.
        torch_dtype: the weights' dtype (fp32 master weights for full fine-tuning).
        bf16: run forward and backward under bf16 autocast (None: where the device computes bf16
            natively, CPUs with AVX512-BF16/AMX included; :mod:`agents.training.precision`).
        gradient_checkpointing: trade compute for memory in the training forward.
        resume: continue from the run's checkpoint when it exists.
        progress: show a progress bar.
    """

    model: str
    output_dir: str
    env_id: str = "MuCode-MBPP-v0"
    split: str = "train"
    problem_ids: tuple[str, ...] | None = None
    limit: int | None = None
    data_dir: str | None = None
    max_turns: int = 3
    termination: str = "public"
    max_new_tokens: int = 512
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    torch_dtype: str = "float32"
    bf16: bool | None = None
    gradient_checkpointing: bool = False
    resume: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        from mucode_env.env import TERMINATIONS
        from mucode_env.registration import check_env_id

        check_env_id(self.env_id)
        for name in ("max_turns", "max_new_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.termination not in TERMINATIONS:
            raise ValueError(f"termination must be one of {TERMINATIONS}, got {self.termination!r}")
        if self.torch_dtype not in DTYPES:
            raise ValueError(f"torch_dtype must be one of {DTYPES}, got {self.torch_dtype!r}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 (RL samples from the policy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            raise ValueError(f"limit must be a positive int or None, got {self.limit!r}")
        if self.problem_ids is not None:
            if isinstance(self.problem_ids, str):
                raise TypeError("problem_ids must be a sequence of ids, not a single string")
            object.__setattr__(self, "problem_ids", tuple(self.problem_ids))


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
