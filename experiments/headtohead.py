"""The powered head-to-head (issue 11): µCODE vs multi-turn RFT vs RLEF-style PPO vs GRPO vs the
base model, on all 500 MBPP test problems and all 164 HumanEval problems, in the paper's Table 1
settings (single-turn, multi-turn greedy T=3, multi-turn Best-of-N N=5 PT+LV).

The experiment runs in resumable parts, one command each, so that parts can run in different
sessions; every part writes its per-problem outcomes as small JSON cells under
``results/headtohead/`` (kept in version control: :mod:`baselines.bench`'s cells), and the
checkpoints under ``runs/headtohead/`` (not kept). ``tables`` rebuilds every table, plot and
diagnostic from the committed cells and diagnostics alone.

    python experiments/headtohead.py plan                 # the sizes and the power analysis
    python experiments/headtohead.py run base             # the base model's cells
    python experiments/headtohead.py run mucode           # train µCODE (M=2), then its cells
    python experiments/headtohead.py run rft              # RFT from µCODE's iteration-1 rollouts
    python experiments/headtohead.py run ppo | grpo       # matched sampled episodes
    python experiments/headtohead.py tables               # tables, plots, diagnostics

The base model's Best-of-N cells use µCODE's iteration-1 verifier (trained on the base model's
own rollouts), so ``run base --bon`` comes after ``run mucode``. Hyperparameters are chosen on
MBPP's validation split (tasks 511-600), never on the test split. Every cell records the precision
its generations were computed in (vLLM: bfloat16 or float32, by CPU); ``tables`` warns when parts
mixed precisions, as parts run on different machines can.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]
ENVS = ("MuCode-MBPP-v0", "MuCode-HumanEval-v0")
N_TEST = {"MuCode-MBPP-v0": 500, "MuCode-HumanEval-v0": 164}
PARTS = ("base", "mucode", "rft", "ppo", "grpo")


@dataclass(frozen=True)
class HeadToHeadConfig:
    """The sizes and settings of the experiment (one base generator for every method).

    Attributes:
        results_dir: per-problem cells, tables and plots (kept in version control).
        work_dir: training runs and checkpoints (not kept).
        generator / verifier_base: the embedded base models.
        train_problems: MBPP train problems used for training (the first of the paper's 374, in
            task order; None: all). 120 by default: the budget (``plan``) is about 54 machine hours
            with 120 and 92 with 374 on the 2-core lane, most of it evaluation that does not shrink
            with fewer training problems; the test sizes, which set the power, stay whole.
        rollouts_per_problem: µCODE/RFT samples per problem and iteration.
        iterations: µCODE's M.
        max_new_tokens: tokens per turn, in training and evaluation.
        backend: the generation lane (``vllm``: the fast CPU lane; ``llama_cpp``: the light one).
        bon_n / temperature / seed: the evaluation budget shared by every method.
        discordance_prior: the share of problems two methods disagree on, before any was measured
            (for the power analysis; measured cells replace it).
        backend_kwargs: the vLLM server's settings. Its dtype is pinned to float32: parts run
            in different sessions land on different machines, and ``dtype="auto"`` serves bfloat16
            only where the CPU computes it, which changes greedy texts; float32 runs everywhere, so
            every cell is computed the same way wherever it ran (slower on a bf16 CPU, where bf16
            would be about 2x faster).
        max_live_episodes: episodes in flight per evaluation cell; finished ones are saved under
            ``work_dir/episodes`` as they finish, so a part stopped mid-cell resumes there.
    """

    results_dir: str = "results/headtohead"
    work_dir: str = "runs/headtohead"
    generator: str = "qwen2.5-coder-0.5b"
    verifier_base: str = "smollm2-135m"
    train_problems: int | None = 120
    rollouts_per_problem: int = 4
    iterations: int = 2
    max_new_tokens: int = 512
    backend: str = "vllm"
    bon_n: int = 5
    temperature: float = 0.7
    seed: int = 0
    discordance_prior: float = 0.15
    backend_kwargs: dict = field(default_factory=lambda: {"vllm": {"omp_threads": 2, "dtype": "float32"}})
    max_live_episodes: int = 64

    @property
    def n_train_problems(self) -> int:
        """The MBPP train problems used (all 374 of the paper's train split by default)."""
        return self.train_problems or 374

    @property
    def episodes_per_iteration(self) -> int:
        return self.n_train_problems * self.rollouts_per_problem

    @property
    def train_dir(self) -> Path:
        """Every training part's runs, one folder per agent (``train/mucode``, ``train/rft``...)."""
        return Path(self.work_dir) / "train"

    @property
    def episodes_dir(self) -> Path:
        """The evaluation cells' saved episodes (a cell stopped midway resumes from them)."""
        return Path(self.work_dir) / "episodes"

    @property
    def runs_log(self) -> Path:
        """The committed record of every ``run`` invocation (:func:`log_run`)."""
        return Path(self.results_dir) / "runs.jsonl"

    def train_preset(self) -> Path:
        """The µCODE/RFT training configuration, written under ``work_dir`` (the cpu preset with
        this experiment's sizes)."""
        preset = {"preset": "cpu", "generator": self.generator, "verifier_base": self.verifier_base,
                  "max_train_problems": self.train_problems, "iterations": self.iterations,
                  "rollout": {"rollouts_per_problem": self.rollouts_per_problem,
                              "max_new_tokens": self.max_new_tokens},
                  "validation": {"max_problems": None, "max_new_tokens": self.max_new_tokens, "n": self.bon_n},
                  "rollout_backend": self.backend, "finetuned_backend": self.backend}
        path = Path(self.work_dir) / "train_preset.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(preset, indent=2))
        return path

    def mucode_verifier(self) -> str | None:
        """µCODE's iteration-1 verifier (trained on the base model's rollouts), once it exists."""
        path = self.train_dir / "mucode" / "iter1" / "verifier"
        return str(path) if (path.parent / "verifier.done").is_file() else None

    def bench(self, agents: tuple[str, ...], *, train: bool):
        from baselines.bench import BenchConfig

        matched = self.episodes_per_iteration * self.iterations  # episodes every RL method samples
        return BenchConfig(
            run_dir=self.results_dir, train_dir=str(self.train_dir), env_ids=ENVS, agents=agents,
            max_turns=3, bon_n=self.bon_n, temperature=self.temperature, max_new_tokens=self.max_new_tokens,
            seed=self.seed, base_model=self.generator, base_backend=self.backend,
            finetuned_backend=self.backend, verifier=self.mucode_verifier(), train=train,
            train_preset=str(self.train_preset()), backend_kwargs=self.backend_kwargs,
            episodes_dir=str(self.episodes_dir), max_live_episodes=self.max_live_episodes,
            ppo_overrides={"limit": self.train_problems, "episodes_per_update": 16,
                           "total_updates": max(1, matched // 16), "max_new_tokens": self.max_new_tokens,
                           "learning_rate": 1e-5, "gradient_checkpointing": True, "device": "cpu"},
            grpo_overrides={"limit": self.train_problems, "num_generations": self.rollouts_per_problem,
                            "per_device_train_batch_size": 2 * self.rollouts_per_problem,
                            "max_steps": max(1, matched // (2 * self.rollouts_per_problem)),
                            "max_new_tokens": self.max_new_tokens, "learning_rate": 1e-5,
                            "gradient_checkpointing": True},
        )


def cells(results_dir: str) -> list[dict]:
    """Every evaluated cell under ``results_dir``."""
    root = Path(results_dir) / "results"
    return [json.loads(p.read_text()) for p in sorted(root.glob("*/*.json"))] if root.is_dir() else []


def plan(config: HeadToHeadConfig) -> str:
    """The power analysis: the smallest paired difference each benchmark can detect, from the
    discordance measured between evaluated cells (the prior until two exist)."""
    from mucode_env.metrics import discordance, paired_detectable_difference

    measured = {}
    by_env: dict[str, list[dict]] = {}
    for cell in cells(config.results_dir):
        by_env.setdefault(cell["env_id"], []).append(cell)
    for env, group in by_env.items():
        values = [discordance(a["per_problem"], b["per_problem"]) for i, a in enumerate(group)
                  for b in group[i + 1:] if a["setting"] == b["setting"] and a["agent"] != b["agent"]]
        values = [v for v in values if v > 0]  # methods that agreed on every problem say nothing of power
        if values:
            measured[env] = max(values)
    lines = ["| benchmark | n | discordance | source | 95% half-width | MDE (80% power) |", "|---|---:|---:|---|---:|---:|"]
    for env in ENVS:
        q = measured.get(env, config.discordance_prior)
        out = paired_detectable_difference(N_TEST[env], q)
        source = "largest measured between two methods" if env in measured else "prior"
        lines.append(f"| {env} | {N_TEST[env]} | {q:.3f} | {source} | {100 * out['half_width']:.1f} pts | "
                     f"{100 * out['mde']:.1f} pts |")
    return "\n".join(lines)


@dataclass(frozen=True)
class Rates:
    """What the time budget divides by: throughputs and data sizes of the 2-core Zen 3 machine
    (AVX2, no bf16; vLLM float32), measured where said, assumed where said. The generation
    numbers are replaced by those of the committed cells once there are any.

    Attributes:
        generation_tokens_per_s: vLLM float32, continuous play, 64 episodes in flight (measured
            on the rollout benchmark's lane; the cells replace it).
        tokens_per_episode: completion tokens of a greedy T=3 episode (assumed until cells exist).
        sft_tokens_per_s: generator LoRA fine-tuning, compact LM head (benchmarks/sft_throughput.py).
        verifier_tokens_per_s: verifier stage, SmolLM2-135M full fine-tune (one cpu iteration).
        relabeled_per_problem / tokens_per_example: µCODE's relabelled set per train problem
            (4 rollouts each) and its mean length (one cpu iteration: 35 examples of 4 problems,
            22,748 tokens).
        verifier_tokens_per_pair: a BT pair's two sequences (one cpu iteration: 12,506 tokens for
            8 pairs x 2 epochs).
        both_share: the share of train problems whose rollouts hold both a pass and a fail (only
            those give pairs); assumed (the 4-problem cpu iteration had 1 in 4).
        turns_per_episode: generate calls of a greedy T=3 episode (assumed until cells exist).
        verifier_programs_per_s: the verifier scoring candidates (SmolLM2-135M, fp32; µCODE's
            iteration-1 relabel stage of this experiment: 1,009 programs at 0.79/s).
        scored_per_rollout_episode: distinct candidates a relabel stage scores per rollout episode
            (every turn's response: 1,009 of 480 episodes in iteration 1).
        scored_share: the share of Best-of-N candidates whose score can change the pick
            (:func:`agents.bon.scored_candidates`; 350 of the iteration-1 rollouts' 480 first turns).
    """

    generation_tokens_per_s: float = 69.0
    tokens_per_episode: float = 300.0
    sft_tokens_per_s: float = 68.1
    verifier_tokens_per_s: float = 68.8
    relabeled_per_problem: float = 8.75
    tokens_per_example: float = 650.0
    verifier_tokens_per_pair: float = 782.0
    both_share: float = 0.4
    turns_per_episode: float = 2.0
    verifier_programs_per_s: float = 0.79
    scored_per_rollout_episode: float = 2.1
    scored_share: float = 0.73
    source: str = "README measurements, Zen 3, 2026-12-03"


def measured_rates(config: HeadToHeadConfig, rates: Rates | None = None) -> Rates:
    """``rates`` with the generation throughput, episode length and turns of the committed greedy
    multi-turn cells (generated, not derived), where there are any."""
    from dataclasses import replace

    rates = rates or Rates()
    generated = [c for c in cells(config.results_dir) if c["setting"]["n"] == 1 and c["setting"]["max_turns"] > 1
                 and (c.get("stats") or {}).get("completion_tokens") and c.get("seconds")]
    if not generated:
        return rates
    tokens = sum(c["stats"]["completion_tokens"] for c in generated)
    episodes = sum(c["stats"]["episodes"] for c in generated)
    seconds = sum(c["seconds"] for c in generated)
    calls = [c["stats"].get("generation_calls") for c in generated]
    turns = sum(calls) / episodes if all(calls) else rates.turns_per_episode
    return replace(rates, generation_tokens_per_s=tokens / seconds, tokens_per_episode=tokens / episodes,
                   turns_per_episode=turns,
                   source=f"{len(generated)} committed greedy cells ({tokens} tokens in {seconds / 3600:.2f} h) "
                          f"and {rates.source}")


def budget(config: HeadToHeadConfig, rates: Rates | None = None) -> str:
    """Hours each part needs at the measured rates (one machine like this one, alone), so that the
    sizes can be chosen before running: generation (rollouts, validation, evaluation cells),
    training tokens and the verifier's scoring (relabelling, Best-of-N picks, the diagnostics'
    held-out accuracy), which on a CPU costs about as much per candidate as generating it. PPO
    and GRPO train on episodes they generate with the training model (transformers), whose rate
    on this machine was not measured at these sizes: only their evaluation is estimated."""
    from agents.mucode import MuCodeConfig

    rates = measured_rates(config, rates)
    problems = config.n_train_problems
    episodes = config.episodes_per_iteration
    tpe = rates.tokens_per_episode
    gen_h = lambda tokens: tokens / rates.generation_tokens_per_s / 3600  # noqa: E731
    evaluation = sum(N_TEST.values()) * tpe * (1 + config.bon_n)  # greedy T=3 (single-turn read from it) and BoN
    validation = 90 * config.bon_n * tpe  # MBPP validation split, BoN, after every iteration
    # verifier scores: of every BoN turn's candidates, the share whose score can change the pick
    bon_scores = lambda problems: problems * rates.turns_per_episode * config.bon_n * rates.scored_share  # noqa: E731
    relabel_scores = episodes * rates.scored_per_rollout_episode  # per iteration
    sft = problems * rates.relabeled_per_problem * rates.tokens_per_example
    stage = MuCodeConfig.cpu().verifier  # the pairs per prompt and epochs the training preset uses
    verifier = problems * rates.both_share * stage.pairs_per_prompt * rates.verifier_tokens_per_pair * stage.epochs
    test_scores = bon_scores(sum(N_TEST.values()))
    rows = [
        ("base", evaluation, 0.0, 0.0, test_scores),
        ("mucode", config.iterations * (episodes * tpe + validation) + evaluation, config.iterations * sft,
         config.iterations * verifier,
         # relabelling and validation every iteration, the evaluation, and the diagnostics' held-out
         # accuracy (each iteration's verifier on the next iteration's rollouts)
         config.iterations * (relabel_scores + bon_scores(90)) + test_scores + (config.iterations - 1) * relabel_scores),
        ("rft", config.iterations * validation + evaluation, config.iterations * sft, 0.0,
         config.iterations * bon_scores(90) + test_scores),
        ("ppo", evaluation, None, 0.0, test_scores),
        ("grpo", evaluation, None, 0.0, test_scores),
    ]
    lines = [f"Rates: {rates.generation_tokens_per_s:.1f} generated tokens/s, {tpe:.0f} tokens per greedy episode, "
             f"SFT {rates.sft_tokens_per_s:.1f} and verifier {rates.verifier_tokens_per_s:.1f} train tokens/s "
             f"({rates.source}).", "",
             f"Verifier scoring {rates.verifier_programs_per_s:.2f} programs/s, {rates.turns_per_episode:.2f} turns "
             f"per greedy episode, {rates.scored_share:.0%} of Best-of-N candidates scored.", "",
             "| part | generated tokens | SFT tokens | verifier tokens | verifier scores | hours (alone) |",
             "|---|---:|---:|---:|---:|---:|"]
    total = 0.0
    for part, generated, sft_tokens, verifier_tokens, scores in rows:
        hours = gen_h(generated) + (sft_tokens or 0.0) / rates.sft_tokens_per_s / 3600 \
            + verifier_tokens / rates.verifier_tokens_per_s / 3600 + scores / rates.verifier_programs_per_s / 3600
        total += hours
        sft_cell = "not estimated (its own trainer)" if sft_tokens is None else f"{sft_tokens:,.0f}"
        lines.append(f"| {part} | {generated:,.0f} | {sft_cell} | {verifier_tokens:,.0f} | {scores:,.0f} | {hours:.1f}"
                     + (" + training" if sft_tokens is None else "") + " |")
    lines.append(f"| all | | | | | {total:.1f} + PPO/GRPO training |")
    return "\n".join(lines)


def log_run(config: HeadToHeadConfig, record: dict) -> None:
    """Append one invocation's record to ``results_dir/runs.jsonl``: what ran (part, sizes,
    commit), where (CPU, cores) and how long, so that parts run in different sessions stay
    accounted for. A stopped invocation is logged too, with its ``status``."""
    import os
    import platform
    import subprocess

    try:
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:  # not Linux
        cpuinfo = []
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
               platform.processor())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    record = {**record, "cpu": cpu, "cpus": os.cpu_count(), "commit": commit or None,
              "config": asdict(config)}
    path = config.runs_log
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:  # one line per invocation: an interrupted append loses only its own line
        f.write(json.dumps(record, default=str) + "\n")


def stop_on_term() -> None:
    """Make ``kill -TERM`` stop a part like Ctrl-C does (a part launched in the background has
    SIGINT ignored): the generation server and training children are shut down by the same
    paths, and the stopped invocation is logged, instead of the process vanishing mid-write."""
    import signal

    def _stop(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _stop)


def part_state_dir(config: HeadToHeadConfig, part: str) -> Path:
    """Where a stopped part's progress lives: its training run, or the saved episodes of the
    base model's cells."""
    return config.episodes_dir if part == "base" else config.train_dir / part


def lost_progress(config: HeadToHeadConfig, part: str) -> float:
    """Hours of earlier stopped invocations of ``part`` whose progress is not in the work
    directory any more (0.0 when there were none or it is there).

    ``runs.jsonl`` is committed, the work directory is not: on a new machine, or after the
    directory was moved, ``run`` would silently start the part again from nothing. Only the
    invocations since the part last finished with the same work directory count."""
    path = config.runs_log
    if not path.is_file() or part_state_dir(config, part).exists():
        return 0.0
    hours = 0.0
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a torn last line: that invocation's record only
            continue
        if record.get("part") != part or (record.get("config") or {}).get("work_dir") != config.work_dir:
            continue
        hours = 0.0 if record.get("status") == "finished" else hours + float(record.get("hours") or 0.0)
    return hours


def run_part(part: str, config: HeadToHeadConfig, *, bon: bool, restart: bool = False) -> None:
    """Run one part and log the invocation. A part whose earlier progress is missing from the
    work directory is refused unless ``restart`` (see :func:`lost_progress`)."""
    import time
    from datetime import datetime, timezone

    lost = lost_progress(config, part)
    if lost and not restart:
        raise SystemExit(
            f"{config.runs_log} records {lost:.1f} h of stopped runs of part "
            f"{part!r}, but {part_state_dir(config, part)} does not exist: the work directory was lost "
            "(a new machine) or moved. Run from the checkout that holds it, or pass --restart to start "
            "the part again from nothing.")

    started, t0, status = datetime.now(timezone.utc).isoformat(timespec="seconds"), time.monotonic(), "stopped"
    try:
        _run_part(part, config, bon=bon)
        status = "finished"
    finally:
        log_run(config, {"part": part, "bon": bon, "started": started, "hours": (time.monotonic() - t0) / 3600,
                         "status": status})


def _run_part(part: str, config: HeadToHeadConfig, *, bon: bool) -> None:
    from dataclasses import replace

    from baselines.bench import run_bench

    bench = config.bench((part if part != "base" else "instruct",), train=part != "base")
    if part == "base" and not bon:
        # the base model's Best-of-N cells need µCODE's iteration-1 verifier: run them with --bon
        bench = replace(bench, bon_n=1)  # single-turn and multi-turn greedy only
    run_bench(bench)
    if part == "mucode":
        save_diagnostics(config)


def save_diagnostics(config: HeadToHeadConfig) -> Path:
    """µCODE's run diagnostics (verifier held-out pairwise accuracy, expert vs final answer,
    relabelled size, per-iteration accuracies) as a small JSON under ``results_dir``, so that
    ``tables`` needs no checkpoint."""
    from agents.mucode.diagnostics import run_diagnostics
    from mucode_env.atomic import write_json_atomic

    out = Path(config.results_dir) / "diagnostics" / "mucode.json"
    write_json_atomic(out, run_diagnostics(config.train_dir / "mucode"), default=str)
    return out


def turn_gains(found: list[dict]) -> str:
    """Accuracy after turn 1 and what turns 2 and 3 add, per multi-turn cell (is the public-test
    feedback being used?)."""
    lines = ["| method | setting | benchmark | n | turn 1 | +turn 2 | +turn 3 |", "|---|---|---|---:|---:|---:|---:|"]
    for c in found:
        t = c.get("accuracy_by_turn") or []
        if c["setting"]["max_turns"] < 2 or len(t) < 2:
            continue
        gains = [f"{100 * (t[i] - t[i - 1]):+.1f}" for i in range(1, len(t))] + [""] * (3 - len(t))
        lines.append(f"| {c['label']} | {c['setting']['name']} | {c['env_id']} | {c['n_problems']} | "
                     f"{100 * t[0]:.1f} | " + " | ".join(gains[:2]) + " |")
    return "\n".join(lines)


def versus(found: list[dict], reference: str, *, seed: int) -> str:
    """Paired-bootstrap differences of every method against ``reference``, cell by cell."""
    from mucode_env.metrics import paired_bootstrap

    ref = {(c["setting"]["name"], c["setting"]["n"], c["env_id"]): c for c in found if c["agent"] == reference}
    lines = [f"| method | setting | benchmark | Δ vs {reference} (pts) | 95% interval | n |", "|---|---|---|---:|---|---:|"]
    for c in found:
        r = ref.get((c["setting"]["name"], c["setting"]["n"], c["env_id"]))
        if r is None or c["agent"] == reference:
            continue
        d = paired_bootstrap(c["per_problem"], r["per_problem"], seed=seed)
        lines.append(f"| {c['label']} | {c['setting']['name']} | {c['env_id']} | {100 * d['diff']:+.1f} | "
                     f"[{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}] | {d['n']} |")
    return "\n".join(lines)


def diagnostics_table(diag: dict) -> str:
    """One row per µCODE iteration from :func:`save_diagnostics`' JSON."""
    def pct(x):
        return "–" if x is None else f"{100 * x:.1f}"

    lines = ["| iteration | rollout acc. by turn | verifier held-out pairwise acc. (pairs) | expert ≠ final answer "
             "| failed finals fixed | relabelled examples | validation acc. |", "|---:|---|---|---:|---:|---:|---:|"]
    for r in diag["iterations"]:
        v, e = r.get("verifier_heldout"), r.get("expert_vs_final") or {}
        by_turn = " / ".join(pct(x) for x in r.get("rollout_accuracy_by_turn") or [])
        held = f"{pct(v['accuracy'])} ({v['pairs']}, {v['on']})" if v else "– (no later rollouts)"
        lines.append(f"| {r['iteration']} | {by_turn} | {held} | {pct(e.get('share_differs'))} | "
                     f"{e.get('failed_final_fixed', '–')} | {r.get('relabeled_examples', '–')} | "
                     f"{pct(r.get('validation_accuracy'))} |")
    return "\n".join(lines)


def plot_iterations(diag: dict, path: Path) -> Path:
    """µCODE's iteration-over-iteration curve: rollout accuracy (the data each iteration trains
    on) and validation Best-of-N accuracy of the generator it produced."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mucode_env.atomic import save_figure_atomic

    its = diag["iterations"]
    xs = [r["iteration"] for r in its]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    roll = [r["rollout_accuracy_by_turn"][-1] if r.get("rollout_accuracy_by_turn") else None for r in its]
    ax.plot(xs, [None if v is None else 100 * v for v in roll], "o-", label="rollouts of the iteration's generator")
    val = [r.get("validation_accuracy") for r in its]
    ax.plot(xs, [None if v is None else 100 * v for v in val], "s--", label="validation BoN after the iteration")
    ax.set_xlabel("µCODE iteration")
    ax.set_ylabel("accuracy (%)")
    ax.set_xticks(xs)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=100)
    plt.close(fig)
    return path


# The paper's Table 1 and Appendix B (accuracy %, private tests, T = 3, BoN rows N = 5 with PT+LV),
# for its own models: Llama-3.2-1B-Instruct, Llama-3.1-8B-Instruct and Qwen-2.5-1.5B-Instruct,
# trained on 374 MBPP problems x 15 rollouts on GPUs. Keys: (agent, setting name) as in the cells;
# values: (MBPP, HumanEval) per model; None where the paper reports nothing.
PAPER_MODELS = ("Llama-3.2-1B-Instruct", "Llama-3.1-8B-Instruct", "Qwen-2.5-1.5B-Instruct")
PAPER_TABLE1 = {
    ("instruct", "single-turn"): ((35.1, 25.6), (52.1, 59.8), (None, None)),
    ("rft", "single-turn"): ((35.7, 34.1), (53.7, 54.9), (None, None)),
    ("instruct", "multi-turn"): ((35.1, 31.1), (60.3, 59.7), (53.8, 64.5)),
    ("instruct", "multi-turn+BoN"): ((47.3, 35.7), (69.7, 62.9), (60.9, 70.3)),
    ("rft", "multi-turn"): ((31.1, 31.7), (58.9, 61.2), (None, None)),
    ("rft", "multi-turn+BoN"): ((46.7, 34.1), (68.4, 62.8), (None, None)),
    ("mucode", "multi-turn"): ((37.9, 35.4), (62.1, 60.9), (59.0, 70.5)),
    ("mucode", "multi-turn+BoN"): ((51.1, 41.5), (70.6, 63.8), (63.1, 74.0)),
}


def paper_beside_ours(found: list[dict]) -> str:
    """Our final accuracy per method and setting next to the paper's for its own (different,
    larger) models: the pattern across rows is comparable, the numbers are not. Methods the paper
    did not run (PPO, GRPO) show dashes on its side."""
    from baselines.bench import AGENTS

    ours = {(c["agent"], c["setting"]["name"], c["env_id"]): c for c in found}
    rows = list(dict.fromkeys([*PAPER_TABLE1, *((a, s) for a, s, _ in ours)]))
    head = ["method", "setting"] + [f"ours, Qwen2.5-Coder-0.5B, {env.split('-')[1]}" for env in ENVS]
    for model in PAPER_MODELS:
        head += [f"paper, {model}, MBPP", f"paper, {model}, HumanEval"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for agent, setting in rows:
        cells_ = []
        for env in ENVS:
            c = ours.get((agent, setting, env))
            cells_.append(f"{100 * c['accuracy']:.1f} (n={c['n_problems']})" if c else "not run yet")
        for pair in PAPER_TABLE1.get((agent, setting), ((None, None),) * len(PAPER_MODELS)):
            cells_ += ["–" if v is None else f"{v:.1f}" for v in pair]
        lines.append(f"| {AGENTS.get(agent, agent)} | {setting} | " + " | ".join(cells_) + " |")
    return "\n".join(lines)


def precision_check(found: list[dict]) -> str | None:
    """A warning when the cells were generated in more than one precision (vLLM's ``dtype="auto"``
    serves bfloat16 on CPUs that compute it and float32 elsewhere, and greedy texts differ between
    them): parts run on different machines are then not a paired comparison. None when they agree."""
    by_precision: dict[str, list[str]] = {}
    for c in found:
        by_precision.setdefault(str(c.get("precision") or "not recorded"), []).append(
            f"{c['agent']} {c['setting']['name']} {c['env_id']}")
    if len(by_precision) < 2:
        return None
    lines = ["**Warning: the cells were generated in different precisions; differences between them "
             "mix the methods with the numerics.** Rerun the minority with the same dtype "
             "(`backend_kwargs={\"vllm\": {\"dtype\": ...}}`).", ""]
    lines += [f"- {precision}: {', '.join(sorted(names))}" for precision, names in sorted(by_precision.items())]
    return "\n".join(lines)


def tables(config: HeadToHeadConfig) -> None:
    """Table 1 (Markdown + CSV, intervals, paired differences against the base model), the
    differences against RFT, the turn gains, µCODE's diagnostics and iteration curve, the per-turn
    plots and the power analysis, from the committed results alone (nothing is evaluated)."""
    from baselines.bench import write_tables
    from mucode_env.atomic import write_text_atomic

    found = cells(config.results_dir)
    agents = tuple(dict.fromkeys(c["agent"] for c in found))
    files = write_tables(found, config.bench(agents, train=False))
    results = Path(config.results_dir)
    sections = ["## Against RFT\n\n" + versus(found, "rft", seed=config.seed),
                "## Beside the paper (different models: compare the pattern, not the numbers)\n\n"
                + paper_beside_ours(found),
                "## Turn gains\n\n" + turn_gains(found), "## Power\n\n" + plan(config)]
    diag_file = results / "diagnostics" / "mucode.json"
    if diag_file.is_file():
        diag = json.loads(diag_file.read_text())
        sections.insert(2, "## µCODE diagnostics\n\n" + diagnostics_table(diag)
                        + "\n\n![µCODE by iteration](mucode_iterations.png)")
        files["mucode_iterations.png"] = str(plot_iterations(diag, results / "mucode_iterations.png"))
    mixed = precision_check(found)
    if mixed is not None:
        sections.insert(0, "## Precision\n\n" + mixed)
        print(mixed, file=sys.stderr)
    write_text_atomic(results / "analysis.md", "\n\n".join(sections) + "\n")
    files["analysis.md"] = str(results / "analysis.md")
    print("\n".join(f"{name}: {path}" for name, path in sorted(files.items())))
    print(plan(config))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("plan", help="power analysis")
    r = sub.add_parser("run", help="run one part (resumable)")
    r.add_argument("part", choices=PARTS)
    r.add_argument("--bon", action="store_true", help="base: also the Best-of-N cells (needs µCODE's verifier)")
    r.add_argument("--restart", action="store_true",
                   help="start a part again although its earlier stopped runs' work directory is gone")
    sub.add_parser("tables", help="rebuild the tables and plots from the committed cells")
    for q in sub.choices.values():
        q.add_argument("--train-problems", type=int, default=HeadToHeadConfig.train_problems,
                       help="MBPP train problems (default: %(default)s; the same for every part)")
        q.add_argument("--rollouts", type=int, default=4, help="µCODE/RFT rollouts per problem")
        q.add_argument("--backend", default="vllm", help="generation lane (default: vllm)")
    args = p.parse_args(argv)
    config = HeadToHeadConfig(train_problems=args.train_problems, rollouts_per_problem=args.rollouts,
                              backend=args.backend)
    if args.command == "plan":
        print(json.dumps(asdict(config), indent=2))
        print(plan(config))
        print()
        print(budget(config))
    elif args.command == "run":
        stop_on_term()
        run_part(args.part, config, bon=args.bon, restart=args.restart)
    else:
        tables(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
