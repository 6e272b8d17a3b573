"""µCODE (Algorithm 1): rollouts -> aggregate -> verifier -> local search expert -> relabel ->
fine-tune from the base model. One module per stage (:mod:`~agents.mucode.verifier`,
:mod:`~agents.mucode.expert`, :mod:`~agents.mucode.relabel`), the configuration
(:mod:`~agents.mucode.config`), the trainer (:mod:`~agents.mucode.trainer`), its run directory
(:mod:`~agents.mucode.run_dir`), report (:mod:`~agents.mucode.report`) and diagnostics
(:mod:`~agents.mucode.diagnostics`).

Names are imported on first use, so importing the package stays light.

>>> from agents.mucode import MuCodeConfig, MuCodeTrainer                     # doctest: +SKIP
>>> MuCodeTrainer(MuCodeConfig.cpu(run_dir="runs/mucode")).train()           # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "MuCodeConfig": "agents.mucode.config", "RolloutSettings": "agents.mucode.config",
    "ValidationSettings": "agents.mucode.config", "MuCodeTrainer": "agents.mucode.trainer",
    "PolicyFactory": "agents.mucode.trainer", "share_stages": "agents.mucode.run_dir",
    "Verifier": "agents.mucode.verifier", "VerifierConfig": "agents.mucode.verifier",
    "train_verifier": "agents.mucode.verifier", "ExpertConfig": "agents.mucode.expert",
    "select_experts": "agents.mucode.expert", "relabel": "agents.mucode.relabel",
    "format_report": "agents.mucode.report", "run_diagnostics": "agents.mucode.diagnostics",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'agents.mucode' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
