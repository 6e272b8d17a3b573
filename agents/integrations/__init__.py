"""Adapters that let other RL stacks train in the MuCode environments without glue code.

- :mod:`agents.integrations.trl`: TRL's ``GRPOTrainer`` (a multi-turn ``rollout_func``, reward
  functions, a dataset builder). Needs ``trl`` (imported on first use).

Submodules are imported on demand; importing this package loads nothing heavy.
"""
