"""The benchmark's tables (Markdown + CSV) and per-turn plots, rebuilt from evaluated cells alone."""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from baselines.bench.config import ABLATION_AGENTS, AGENTS, SELECTOR_LABELS, SELECTOR_ORDER, BenchConfig, CellKey
from baselines.instruct import EvalSetting
from mucode_env.atomic import save_figure_atomic, write_text_atomic
from mucode_env.metrics import paired_bootstrap

__all__ = ["write_tables"]

logger = logging.getLogger(__name__)



def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _fmt_cell(cell: Mapping[str, Any]) -> str:
    lo, hi = cell["ci95"]
    mark = "†" if cell["setting"]["n"] > 1 and cell["selector_used"] != cell["setting"]["selector"] else ""
    return f"{_pct(cell['accuracy'])}{mark} [{_pct(lo)}, {_pct(hi)}] (n={cell['n_problems']})"


def _fmt_diff(d: Mapping[str, float]) -> str:
    if not d or d["n"] == 0:
        return "–"
    return f"{100 * d['diff']:+.1f} [{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}] (n={d['n']})"


def _index(cells: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str, str], Mapping[str, Any]]:
    out = {}
    for c in cells:
        s = c["setting"]
        key = CellKey(c["agent"], EvalSetting(**s), c["env_id"])
        out[(c["agent"], key.slug.split("__", 1)[1], c["env_id"])] = c
    return out


def _slug(setting: EvalSetting) -> str:
    return CellKey("x", setting, "").slug.split("__", 1)[1]


def _table(rows: list[dict[str, Any]], env_ids: Sequence[str], ref_label: str) -> tuple[str, list[dict[str, Any]]]:
    """Markdown and CSV records of rows ``{"method", "N", "cells": {env: cell}, "diffs": {env: diff}}``."""
    header = ["method", "N"]
    for env in env_ids:
        header += [env, f"Δ vs {ref_label} ({env})"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    records = []
    for row in rows:
        parts = [row["method"], str(row["N"])]
        for env in env_ids:
            cell = row["cells"].get(env)
            diff = row["diffs"].get(env)
            parts += [_fmt_cell(cell) if cell else "–", _fmt_diff(diff) if diff else "–"]
            if cell:
                records.append({
                    "method": row["method"], "agent": cell["agent"], "setting": cell["setting"]["name"],
                    "N": cell["setting"]["n"], "T": cell["setting"]["max_turns"], "selector": cell["selector_used"],
                    "env_id": env, "n_problems": cell["n_problems"], "accuracy": cell["accuracy"],
                    "ci_lo": cell["ci95"][0], "ci_hi": cell["ci95"][1], "reference": ref_label,
                    "diff": diff["diff"] if diff else "", "diff_lo": diff["lo"] if diff else "",
                    "diff_hi": diff["hi"] if diff else "", "diff_n": diff["n"] if diff else "",
                })
        lines.append("| " + " | ".join(parts) + " |")
    return "\n".join(lines) + "\n", records


def _csv(records: list[dict[str, Any]]) -> str:
    cols = ["method", "agent", "setting", "N", "T", "selector", "env_id", "n_problems", "accuracy", "ci_lo", "ci_hi",
            "reference", "diff", "diff_lo", "diff_hi", "diff_n"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    w.writerows(records)
    return buf.getvalue()


def write_tables(cells: Sequence[Mapping[str, Any]], config: BenchConfig) -> dict[str, str]:
    """Write Table 1, the ablation and selector tables (Markdown + CSV), the per-turn plots and
    ``report.md`` from evaluated cells. Returns ``{artifact name: path}``."""
    run_dir = Path(config.run_dir)
    idx = _index(cells)
    boot = dict(n_bootstrap=config.n_bootstrap, seed=config.seed)
    env_ids = list(config.env_ids)
    files: dict[str, str] = {}
    sections: list[str] = []

    def diff(a, b):
        return paired_bootstrap(a["per_problem"], b["per_problem"], **boot) if a and b else None

    # Table 1: single-turn rows first, then each agent's multi-turn and BoN rows (the paper's order).
    settings = config.settings
    order = [(settings[0], a) for a in config.agents] + [(s, a) for a in config.agents for s in settings[1:]]
    rows = []
    for setting, agent in order:
        cells_by_env = {e: idx.get((agent, _slug(setting), e)) for e in env_ids}
        if not any(cells_by_env.values()):
            continue
        refs = {e: idx.get(("instruct", _slug(setting), e)) for e in env_ids}
        method = f"{setting.name} {AGENTS[agent]}"
        rows.append({"method": method, "N": setting.n, "cells": {e: c for e, c in cells_by_env.items() if c},
                     "diffs": {e: diff(cells_by_env[e], refs[e]) for e in env_ids
                               if agent != "instruct" and cells_by_env[e] and refs[e]}})
    tables = {"table1": ("Table 1: accuracy (%, private tests)", rows, "Instruct")}

    bon = config.bon_setting
    if config.ablations:
        rows = []
        for agent in ABLATION_AGENTS:
            cells_by_env = {e: idx.get((agent, _slug(bon), e)) for e in env_ids}
            refs = {e: idx.get(("mucode", _slug(bon), e)) for e in env_ids}
            if any(cells_by_env.values()):
                rows.append({"method": AGENTS[agent], "N": bon.n, "cells": {e: c for e, c in cells_by_env.items() if c},
                             "diffs": {e: diff(cells_by_env[e], refs[e]) for e in env_ids
                                       if agent != "mucode" and cells_by_env[e] and refs[e]}})
        tables["ablation"] = (f"Ablation: training data (BoN N={bon.n}, {bon.selector.upper()})", rows, "µCODE")
    if config.selectors:
        rows = []
        ref_slug = _slug(replace(bon, selector="pt+lv"))
        for sel in SELECTOR_ORDER:
            slug = _slug(replace(bon, selector=sel))
            cells_by_env = {e: idx.get(("mucode", slug, e)) for e in env_ids}
            if any(cells_by_env.values()):
                rows.append({"method": SELECTOR_LABELS[sel], "N": bon.n,
                             "cells": {e: c for e, c in cells_by_env.items() if c},
                             "diffs": {e: diff(cells_by_env[e], idx.get(("mucode", ref_slug, e))) for e in env_ids
                                       if sel != "pt+lv" and cells_by_env[e] and idx.get(("mucode", ref_slug, e))}})
        tables["selectors"] = (f"Selectors: µCODE with BoN N={bon.n}", rows, "PT+LV")

    for name, (title, rows, ref) in tables.items():
        md, records = _table(rows, env_ids, ref)
        write_text_atomic(run_dir / f"{name}.md", f"### {title}\n\n{md}")
        write_text_atomic(run_dir / f"{name}.csv", _csv(records))
        files[f"{name}.md"] = str(run_dir / f"{name}.md")
        files[f"{name}.csv"] = str(run_dir / f"{name}.csv")
        sections.append(f"### {title}\n\n{md}")

    for env in env_ids:
        png = _plot_turns([c for c in cells if c["env_id"] == env], env, run_dir / f"turns_{env}.png")
        if png is not None:
            files[f"turns_{env}.png"] = str(png)
            sections.append(f"![accuracy by turn, {env}](turns_{env}.png)\n")

    notes = [
        "Cells: accuracy % [95% interval] (n = problems). Intervals: Wilson for 0/1 scores, percentile bootstrap "
        "over problems when scores average several repeats.",
        f"Δ: mean paired difference in percentage points over the problems both rows evaluated, with a "
        f"paired-bootstrap 95% interval ({config.n_bootstrap} resamples, seed {config.seed}).",
        f"N = 1 rows decode greedily; N > 1 rows sample at temperature {config.temperature}; "
        f"{config.max_new_tokens} new tokens per turn; {config.repeats} repeat(s) per problem.",
    ]
    if any(c["setting"]["n"] > 1 and c["selector_used"] != c["setting"]["selector"] for c in cells):
        notes.append("†: no verifier was available for this agent, so the PT selector replaced PT+LV/LV.")
    notes_md = "\n".join(f"- {n}" for n in notes)
    report = "# Benchmark report\n\n" + "\n".join(sections) + "\n## Notes\n\n" + notes_md + "\n"
    write_text_atomic(run_dir / "report.md", report)
    files["report.md"] = str(run_dir / "report.md")
    return files


def _plot_turns(cells: Sequence[Mapping[str, Any]], env_id: str, path: Path) -> Path | None:
    multi = [c for c in cells if c["setting"]["max_turns"] > 1 and c["accuracy_by_turn"]]
    if not multi:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed: no per-turn plot")
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for c in multi:
        turns = c["accuracy_by_turn"]
        style = "o-" if c["setting"]["n"] == 1 else "s--"
        ax.plot(range(1, len(turns) + 1), [100 * t for t in turns], style,
                label=f"{c['label']} {c['setting']['name']} (N={c['setting']['n']})")
    ax.set_xlabel("turn")
    ax.set_ylabel("accuracy (%)")
    ax.set_xticks(range(1, max(len(c["accuracy_by_turn"]) for c in multi) + 1))
    ax.set_title(f"accuracy by turn, {env_id} (n={max(c['n_problems'] for c in multi)})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=100)
    plt.close(fig)
    return path
