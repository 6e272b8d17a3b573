"""Train the baselines of the CPU comparison on the µCODE CPU experiment's training subset.

Runs after (or beside) ``examples/mucode_cpu_experiment.py`` and writes under the same run
directory, so that every agent starts from the same base model and the same training problems:

- ``rft``: multi-turn RFT (the paper's variant: correct trajectories' sub-trajectories, original
  actions), one iteration. It starts from µCODE's iteration-1 rollouts and verifier, copied
  from ``RUN/mucode/iter1``: D_1 is the base model's rollouts for both methods, so the two
  differ only in how they build the fine-tuning set. Needs those stages to be finished.
- ``ppo``: RLEF-style PPO from the base model with :meth:`baselines.ppo.PPOConfig.cpu` (two
  updates of eight episodes: a short run, not a converged one).

Evaluate them afterwards with the experiment script (greedy multi-turn on the same test subset)::

    python examples/baselines_cpu_comparison.py ppo --run-dir runs/cpu-exp2 --data-dir ../shared/data
    python examples/baselines_cpu_comparison.py rft --run-dir runs/cpu-exp2 --data-dir ../shared/data
    python examples/mucode_cpu_experiment.py --no-train --run-dir runs/cpu-exp2 --n-train 8 --n-test 20 \\
        --max-new-tokens 384 --eval rft=runs/cpu-exp2/rft --eval ppo=runs/cpu-exp2/ppo --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

def train_rft(run_dir: Path) -> Path:
    from dataclasses import fields

    from agents.mucode import share_stages
    from baselines.rft import RFTConfig, RFTTrainer

    src_run = run_dir / "mucode"
    mucode_cfg = json.loads((src_run / "config.json").read_text())
    known = {f.name for f in fields(RFTConfig)}
    cfg = RFTConfig.load("cpu", **{k: v for k, v in mucode_cfg.items() if k in known and k != "run_dir"},
                         run_dir=str(run_dir / "rft"), rft_variant="paper")
    share_stages(src_run, cfg.run_dir, iteration=1, stages=("rollouts", "verifier"))
    report = RFTTrainer(cfg).train()
    print(f"RFT done: generator {report['best']['generator']}")
    return run_dir / "rft"


def train_ppo(run_dir: Path, data_dir: str | None, seed: int) -> Path:
    from baselines.ppo import PPOConfig, PPOTrainer

    cfg = PPOConfig.cpu(str(run_dir / "ppo"), data_dir=data_dir, seed=seed)
    out = PPOTrainer(cfg).train()
    print(f"PPO done: checkpoint {out}")
    return run_dir / "ppo"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("agent", choices=("rft", "ppo"))
    ap.add_argument("--run-dir", default="runs/mucode-cpu-experiment", help="the µCODE experiment's --run-dir")
    ap.add_argument("--data-dir", default=None, help="offline data directory (default: $MUCODE_DATA_DIR)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    import mucode_env  # noqa: F401  (registers the environments)

    run_dir = Path(args.run_dir)
    if args.agent == "rft":
        train_rft(run_dir)
    else:
        train_ppo(run_dir, args.data_dir, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
