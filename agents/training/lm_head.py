"""Score only the positions that carry a label in TRL's fused LM head, on the CPU too.

TRL's trainers (SFT, GRPO) project the backbone's hidden states through the LM head in tiles
(``trl.trainer.utils.add_fused_lm_head``). On Triton devices they project only the positions
whose next-token label is not -100; everywhere else they project every position, so that a
compiler (Neuron) sees fixed tile shapes. An eager CPU has no such reason and pays for it: with
completion-only loss most positions are prompt (81% of the tokens of a µCODE relabeled set),
and the LM head of Qwen2.5-0.5B (a 151,936-word vocabulary) is a third of a LoRA step. Scoring
only the labelled positions made one step on a 1,380-token example 1.39x faster here
(``benchmarks/sft_throughput.py`` measures the whole stage).

TRL decides this in one private function, ``trl.trainer.utils._use_triton``, read at call time;
:func:`compact_lm_head` widens it to CPU devices while a training runs. Only that call site sees
the change (TRL's kernels import their own binding, so they still fold tiles in torch on the
CPU); the result is TRL's own compact path, bit for bit what it computes on a GPU. Should TRL
rename the function, training runs as before, slower, with a warning.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["compact_lm_head"]

logger = logging.getLogger(__name__)

_PATCH_TARGET = "trl.trainer.utils._use_triton"
_lock = threading.Lock()
_depth = 0
_original = None


@contextmanager
def compact_lm_head() -> Iterator[bool]:
    """While inside, TRL's fused LM head skips unlabelled positions on CPU devices as well.

    Yields whether the change is in effect (False, with a warning, when this TRL has no such
    switch). Nested and concurrent uses share one change, undone when the last one leaves.
    """
    global _depth, _original
    import trl.trainer.utils as trl_utils

    with _lock:
        if _depth == 0:
            original = getattr(trl_utils, "_use_triton", None)
            if not callable(original):
                logger.warning("compact_lm_head: %s not found in this TRL; the CPU scores every position", _PATCH_TARGET)
                active = False
            else:
                _original = original
                trl_utils._use_triton = _compact_on_cpu(original)
                active = True
        else:
            active = _original is not None
        _depth += 1
    try:
        yield active
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _original is not None:
                trl_utils._use_triton = _original
                _original = None


def _compact_on_cpu(original):
    def use_compact_path(device) -> bool:
        # Only the compact/dense choice in add_fused_lm_head reads this binding.
        return device.type == "cpu" or bool(original(device))

    return use_compact_path
