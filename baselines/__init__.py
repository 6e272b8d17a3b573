"""Baselines µCODE must beat, built from ``agents`` components (nothing imports this package).

- :mod:`baselines.instruct`: the base model in the paper's settings (single-turn, multi-turn, BoN).
- :mod:`baselines.rft`: multi-turn STaR / RFT (paper and reference variants) and RFT_LV.
- :mod:`baselines.ppo` (+ :mod:`baselines.ppo_math`): RLEF-style PPO over multi-turn episodes.
- :mod:`baselines.grpo`: GRPO over multi-turn episodes with TRL's ``GRPOTrainer``.
- :mod:`baselines.bench` (``mucode bench``): the head-to-head tables.

Submodules are imported on demand; importing the package loads nothing heavy.
"""
