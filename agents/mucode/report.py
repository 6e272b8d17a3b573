"""The µCODE run report: per iteration, accuracy and the throughput of every stage (Markdown), and
the plots of accuracy per iteration and per turn."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mucode_env.atomic import save_figure_atomic

__all__ = ["format_report", "plot_report"]

logger = logging.getLogger(__name__)


def format_report(report: dict[str, Any]) -> str:
    """The run report as Markdown: per iteration, accuracy and the throughput of every stage."""
    def num(x: Any, fmt: str) -> str:
        return "-" if x is None else format(x, fmt)

    lines = ["| iteration | rollout accuracy | expert accuracy | validation accuracy | rollout tokens/s | "
             "verifier training tokens/s | verifier scoring programs/s | generator training tokens/s |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for it in report["iterations"]:
        tp = it["throughput"]
        lines.append(f"| {it['iteration']} | {num(it['rollout_accuracy'], '.1%')} | {num(it['expert_accuracy'], '.1%')} | "
                     f"{num(it['validation_accuracy'], '.1%')} | {num(tp['rollout_tokens_per_s'], '.1f')} | "
                     f"{num(tp['verifier_train_tokens_per_s'], '.1f')} | {num(tp['verifier_scoring_programs_per_s'], '.2f')} | "
                     f"{num(tp['generator_train_tokens_per_s'], '.1f')} |")
    best = report["best"]
    lines.append(f"\nbest: iteration {best['iteration']} ({best['selected_by']}); generator {best['generator']}, "
                 f"verifier {best['verifier']}")
    return "\n".join(lines)


def plot_report(run_dir: Path, iterations: list[dict[str, Any]], max_turns: int) -> None:
    """``report_accuracy.png`` (accuracy per iteration) and ``report_turns.png`` (per turn) in ``run_dir``."""
    try:
        import matplotlib
    except ImportError:  # matplotlib is optional for the library
        logger.warning("matplotlib is not installed: no report plots")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [i["iteration"] for i in iterations]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(xs, [i["rollout_accuracy"] for i in iterations], "o-", label="rollouts (train)")
    ax.plot(xs, [i["expert_accuracy"] or 0 for i in iterations], "s-", label="expert y* (train)")
    if any(i["validation_accuracy"] is not None for i in iterations):
        ax.plot(xs, [i["validation_accuracy"] or 0 for i in iterations], "^-", label="validation BoN")
    ax.set_xlabel("iteration")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_xticks(xs)
    ax.legend()
    ax.set_title("µCODE accuracy per iteration")
    fig.tight_layout()
    save_figure_atomic(fig, run_dir / "report_accuracy.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for i in iterations:
        turns = i["rollout_accuracy_by_turn"]
        ax.plot(range(1, len(turns) + 1), turns, "o-", label=f"iter {i['iteration']} rollouts")
        if i["validation_accuracy_by_turn"]:
            v = i["validation_accuracy_by_turn"]
            ax.plot(range(1, len(v) + 1), v, "^--", label=f"iter {i['iteration']} validation BoN")
    ax.set_xlabel("turn")
    ax.set_xticks(range(1, max_turns + 1))
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.legend()
    ax.set_title("accuracy per turn")
    fig.tight_layout()
    save_figure_atomic(fig, run_dir / "report_turns.png", dpi=100)
    plt.close(fig)
