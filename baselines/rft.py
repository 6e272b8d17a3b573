"""Multi-turn STaR / rejection fine-tuning (RFT) and the RFT_LV ablation.

RFT is µCODE's Algorithm 1 with a different training set (step 5), so :class:`RFTTrainer` reuses
:class:`agents.mucode.trainer.MuCodeTrainer` (rollouts, verifier, fine-tuning from the BASE model every
iteration, BoN validation, resumable stage markers) and replaces only relabeling with
:func:`build_rft_dataset`:

- ``"paper"`` (the paper's RFT): keep the trajectories that end correct; every state s_t of such
  a trajectory maps to that turn's OWN response y_t (s_i -> y_{i+1}, the original actions).
- ``"reference"`` (the reference code): every state of a correct trajectory maps to its FINAL
  (correct) response.
- ``"lv"`` (RFT_LV, the ablation): no oracle filter and no relabeling: the ``top_k`` (3)
  trajectories per prompt with the highest verifier score of their final response are kept,
  each state mapping to its own response.

Rows are TRL conversational prompt-completion examples in exactly the format of
:func:`agents.mucode.relabel.relabel` (states rendered like ``mucode_env.to_messages``).

>>> rows = build_rft_dataset(trajectories)  # doctest: +SKIP
>>> report = RFTTrainer(RFTConfig.cpu(run_dir="runs/rft")).train()  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from agents.records import Trajectory
from agents.mucode.relabel import sft_example
from agents.mucode.config import MuCodeConfig
from agents.mucode.run_dir import mark_done, stage_done
from agents.mucode import MuCodeTrainer
from mucode_env.atomic import write_jsonl_atomic

__all__ = ["RFT_VARIANTS", "RFTConfig", "RFTTrainer", "build_rft_dataset"]

logger = logging.getLogger(__name__)

RFT_VARIANTS = ("paper", "reference", "lv")
DATASET_FILE = "rft_dataset.jsonl"
ScoreFn = Callable[[Sequence[str], Sequence[str]], list[float]]


def build_rft_dataset(
    trajectories: Sequence[Trajectory],
    variant: str = "paper",
    *,
    score_fn: ScoreFn | None = None,
    top_k: int = 3,
    deduplicate: bool = False,
) -> list[dict[str, Any]]:
    """The RFT training set from ``trajectories``.

    Args:
        trajectories: the rollouts (aggregated or this iteration's).
        variant: ``"paper"``, ``"reference"`` or ``"lv"`` (see the module docstring).
        score_fn: the verifier ``score(prompts, responses)``; required by ``"lv"``.
        top_k: ``"lv"``: trajectories kept per prompt (ties: data order).
        deduplicate: drop repeated (state, target) pairs, keeping the first.

    Returns:
        Rows ``{"prompt": [messages], "completion": [assistant msg], "problem_id", "turn",
        "source"}`` (``source``: ``"own"``, ``"final"`` or ``"verifier_top"``), in trajectory
        order then turn order.

    Raises:
        ValueError: unknown variant, ``top_k < 1``, or ``"lv"`` without ``score_fn``.
    """
    if variant not in RFT_VARIANTS:
        raise ValueError(f"variant must be one of {RFT_VARIANTS}, got {variant!r}")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    trajs = [t for t in trajectories if t.turns]
    rows: list[dict[str, Any]] = []
    if variant in ("paper", "reference"):
        for traj in trajs:
            if not traj.success:
                continue
            final = traj.turns[-1].response
            for t, turn in enumerate(traj.turns):
                rows.append(sft_example(traj, t, turn.response if variant == "paper" else final,
                                 "own" if variant == "paper" else "final"))
    else:
        if score_fn is None:
            raise ValueError("variant 'lv' ranks trajectories by the verifier: pass score_fn=Verifier.score")
        scores = score_fn([t.prompt for t in trajs], [t.turns[-1].response for t in trajs]) if trajs else []
        if len(scores) != len(trajs):
            raise ValueError(f"score_fn returned {len(scores)} scores for {len(trajs)} trajectories")
        ranked: dict[str, list[tuple[float, int]]] = {}
        for i, (traj, s) in enumerate(zip(trajs, scores)):
            ranked.setdefault(traj.problem_id, []).append((-float(s), i))
        keep = {i for items in ranked.values() for _, i in sorted(items)[:top_k]}
        for i, traj in enumerate(trajs):
            if i in keep:
                rows.extend(sft_example(traj, t, turn.response, "verifier_top") for t, turn in enumerate(traj.turns))
    if deduplicate:
        seen: set[str] = set()
        unique = []
        for r in rows:
            key = json.dumps([r["prompt"], r["completion"]], sort_keys=True)
            if key not in seen:
                seen.add(key)
                unique.append(r)
        rows = unique
    return rows


@dataclass(frozen=True)
class RFTConfig(MuCodeConfig):
    """A µCODE configuration plus RFT's dataset choice (presets ``cpu()``/``paper()`` apply).

    Attributes:
        rft_variant: ``"paper"``, ``"reference"`` or ``"lv"``.
        rft_top_k: trajectories per prompt kept by ``"lv"`` (the paper's RFT_LV: 3).
        aggregate: train iteration i on the rollouts of iterations 1..i (as µCODE does); False
            uses iteration i's rollouts only (classic STaR).
        deduplicate: drop repeated (state, target) pairs.

    The ``expert`` field of the µCODE configuration is unused. The verifier is still trained
    every iteration: BoN evaluation (PT+LV) and ``"lv"`` need it.
    """

    run_dir: str = "runs/rft"
    rft_variant: str = "paper"
    rft_top_k: int = 3
    aggregate: bool = True
    deduplicate: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rft_variant not in RFT_VARIANTS:
            raise ValueError(f"rft_variant must be one of {RFT_VARIANTS}, got {self.rft_variant!r}")
        if self.rft_top_k < 1:
            raise ValueError(f"rft_top_k must be >= 1, got {self.rft_top_k}")


class RFTTrainer(MuCodeTrainer):
    """Algorithm 1 with the RFT training set in place of relabeling (see the module docstring).

    ``train()`` returns the same report as µCODE's (``best.json`` names the generator and its
    verifier); ``iterN/rft_dataset.jsonl`` holds each iteration's training set.
    """

    config: RFTConfig

    def __init__(self, config: RFTConfig, policy_factory: Any = None) -> None:
        if not isinstance(config, RFTConfig):
            raise TypeError(f"RFTTrainer needs an RFTConfig, got {type(config).__name__}")
        super().__init__(config, policy_factory)

    def _relabel(self, it: int, it_dir: Path, data: list[Trajectory], current: list[Trajectory],
                 verifier_path: Path) -> list[dict[str, Any]]:
        cfg = self.config
        out = it_dir / DATASET_FILE
        if stage_done(it_dir, "relabel") is not None and out.is_file():
            with out.open() as f:
                return [json.loads(line) for line in f if line.strip()]
        source = data if cfg.aggregate else current
        score_fn = None
        if cfg.rft_variant == "lv":
            from agents.mucode.verifier import Verifier

            score_fn = partial(Verifier.load(verifier_path).score,
                               progress=f"iteration {it}: verifier scores" if cfg.progress else None)
        rows = build_rft_dataset(source, cfg.rft_variant, score_fn=score_fn, top_k=cfg.rft_top_k,
                                 deduplicate=cfg.deduplicate)
        if not rows:
            raise ValueError(f"iteration {it}: the RFT training set is empty ({len(source)} trajectories, "
                             f"{sum(t.success for t in source)} correct); roll out more problems or samples")
        write_jsonl_atomic(out, rows)
        mark_done(it_dir, "relabel", {
            "stage": "relabel", "iteration": it, "method": f"rft:{cfg.rft_variant}", "n_examples": len(rows),
            "n_trajectories": len(source), "n_correct_trajectories": sum(t.success for t in source),
            "n_problems": len({r["problem_id"] for r in rows}),
        })
        return rows
