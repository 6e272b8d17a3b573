"""Head-to-head benchmark of the agents (``mucode bench``): planning (:mod:`~baselines.bench.config`),
running (:mod:`~baselines.bench.run`) and rendering tables and plots (:mod:`~baselines.bench.render`)."""

from baselines.bench.config import (ABLATION_AGENTS, AGENTS, SELECTOR_ORDER, AgentSpec, BenchConfig, CellKey,
                                    MissingCheckpointError, cell_path, plan_cells)
from baselines.bench.render import write_tables
from baselines.bench.run import resolve_agent, run_bench

__all__ = ["ABLATION_AGENTS", "AGENTS", "SELECTOR_ORDER", "AgentSpec", "BenchConfig", "CellKey",
           "MissingCheckpointError", "cell_path", "plan_cells", "resolve_agent", "run_bench", "write_tables"]
