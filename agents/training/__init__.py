"""Training utilities shared by µCODE and the baselines: supervised fine-tuning through TRL
(:mod:`~agents.training.sft`), stages as in-process or multi-process jobs
(:mod:`~agents.training.launch`) and the rank-aware output contract of those jobs
(:mod:`~agents.training.distributed`). Nothing here knows an algorithm."""
