"""One µCODE iteration on CPU with the embedded small models, then multi-turn BoN on MBPP test.

Compares, on a held-out subset of MBPP test (accuracy = private tests of the final pick, T = 3):

- µCODE generator + its verifier, multi-turn BoN (N = 5, PT+LV);
- the untrained base generator, same BoN, with a verifier trained on the base model's own
  rollouts (iteration 1's verifier is exactly that: D_1 = the base model's rollouts);
- greedy multi-turn (N = 1) for both generators.

Each number is reported with its sample size and a Wilson 95% confidence interval. The full run
takes hours on 2 cores; ``--quick`` shrinks everything (SmolLM2-135M as generator and verifier,
a few problems, short generations) to check the pipeline end to end in minutes.

    python examples/mucode_cpu_experiment.py --data-dir ../shared/data --run-dir runs/cpu-exp
    python examples/mucode_cpu_experiment.py --quick --data-dir ../shared/data --run-dir runs/cpu-quick
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny budget: check the pipeline in minutes")
    ap.add_argument("--run-dir", default="runs/mucode-cpu-experiment")
    ap.add_argument("--data-dir", default=None, help="offline data directory (default: $MUCODE_DATA_DIR)")
    ap.add_argument("--n-train", type=int, default=None, help="MBPP train problems for µCODE (default 40; quick 3)")
    ap.add_argument("--n-test", type=int, default=None, help="held-out MBPP test problems (default 100; quick 3)")
    ap.add_argument("--n", type=int, default=None, help="BoN candidates (default 5; quick 2)")
    ap.add_argument("--generator", default=None,
                    help="generator model (default: the cpu preset's qwen2.5-coder-0.5b; quick: smollm2-135m)")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="tokens per turn (default 512; quick 160)")
    ap.add_argument("--rollouts", type=int, default=None, help="rollouts per training problem (default 4)")
    ap.add_argument("--threads", type=int, default=1,
                    help="llama.cpp threads (its threads spin: never more than the idle cores)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval", action="append", default=None, metavar="NAME[=PATH]",
                    help="generators to evaluate (repeatable; default: base and mucode). NAME=PATH adds a "
                         "trained generator (HF directory, GGUF file, or a RFT/PPO run directory)")
    ap.add_argument("--bon-for", default="base,mucode",
                    help="comma-separated names that also get BoN (the rest: greedy only)")
    ap.add_argument("--no-train", action="store_true",
                    help="do not run the µCODE trainer: use the iteration-1 artifacts already in --run-dir "
                         "(lets another process evaluate while training goes on)")
    args = ap.parse_args(argv)

    import mucode_env  # noqa: F401  (registers the environments)
    from agents.backends import make_policy
    from agents.bon import BoNConfig, best_of_n
    from agents.models.gguf_export import export_for_llama_cpp
    from agents.mucode import (
        MuCodeConfig,
        MuCodeTrainer,
        RolloutSettings,
        ValidationSettings,
    )
    from agents.mucode.verifier import Verifier
    from agents.models.convert import resolve_run
    from mucode_env.atomic import write_json_atomic, write_text_atomic
    from mucode_env.datasets import load_problems
    from mucode_env.metrics import wilson_interval

    run_dir = Path(args.run_dir)
    q = args.quick
    n_train = args.n_train or (3 if q else 40)
    n_test = args.n_test or (3 if q else 100)
    n_bon = args.n or (2 if q else 5)
    max_new = args.max_new_tokens or (160 if q else 512)

    cfg = MuCodeConfig.cpu(
        run_dir=str(run_dir / "mucode"),
        data_dir=args.data_dir,
        iterations=1,
        max_train_problems=n_train,
        seed=args.seed,
        validation=ValidationSettings(enabled=False),
        backend_kwargs={"llama_cpp": {"n_threads": args.threads}, "transformers": {"batch_size": 4}},
    )
    if q:
        cfg = replace(
            cfg,
            generator="smollm2-135m",
            verifier_base="smollm2-135m",
            rollout=RolloutSettings(rollouts_per_problem=2, max_new_tokens=max_new, max_turns=2, max_live_episodes=8),
            verifier=replace(cfg.verifier, pairs_per_prompt=4, max_length=768),
            sft=replace(cfg.sft, max_length=768, batch_size=4, per_device_batch_size=2),
            notes=cfg.notes + ("--quick: smollm2-135m generator, 2 rollouts, T=2, 160 tokens",),
        )
    if args.generator:
        cfg = replace(cfg, generator=args.generator)
    if args.rollouts or args.max_new_tokens:
        cfg = replace(cfg, rollout=replace(cfg.rollout, rollouts_per_problem=args.rollouts or cfg.rollout.rollouts_per_problem,
                                           max_new_tokens=max_new))
    trainer = MuCodeTrainer(cfg)
    it_dir = run_dir / "mucode" / "iter1"
    t0 = time.perf_counter()
    if not args.no_train:
        from agents.mucode import format_report

        print(format_report(trainer.train()), flush=True)
    elif not (it_dir / "verifier.done").is_file():
        print(f"--no-train: {it_dir / 'verifier.done'} does not exist yet; run training first", file=sys.stderr)
        return 2
    train_s = time.perf_counter() - t0

    test = load_problems("mbpp", "test", data_dir=args.data_dir)
    rng = random.Random(args.seed)
    test_ids = sorted(p.id for p in rng.sample(test, min(n_test, len(test))))
    env_kw = {"split": "test", "max_turns": 2 if q else 3}
    if args.data_dir:
        env_kw["data_dir"] = args.data_dir

    verifier = Verifier.load(it_dir / "verifier")
    llama_kw = cfg.backend_kwargs.get("llama_cpp", {})

    def generator(name: str, path: str | None):
        if path is None and name == "base":
            return make_policy(cfg.rollout_backend, cfg.generator, **cfg.backend_kwargs.get(cfg.rollout_backend, {}))
        if path is None and name == "mucode":
            return make_policy(cfg.finetuned_backend, trainer.finetuned_model(it_dir),
                               **cfg.backend_kwargs.get(cfg.finetuned_backend, {}))
        if path is None:
            raise SystemExit(f"--eval {name}: give NAME=PATH for generators other than base and mucode")
        src, _ = resolve_run(path, None)  # a µCODE/RFT/PPO run directory or a generator
        if not src.endswith(".gguf"):
            src = str(export_for_llama_cpp(src, cfg.generator, dtype=cfg.finetuned_gguf_dtype))
        return make_policy("llama_cpp", src, **llama_kw)

    results_dir = run_dir / "results"
    bon_for = {x.strip() for x in args.bon_for.split(",") if x.strip()}
    for spec in args.eval or ["base", "mucode"]:
        name, _, path = spec.partition("=")
        settings = [(f"{name} greedy N=1", 1)]
        if name in bon_for:
            settings.insert(0, (f"{name} BoN N={n_bon} PT+LV", n_bon))
        todo = [(label, n) for label, n in settings if not (results_dir / f"{_slug(label)}.json").is_file()]
        if not todo:
            continue
        policy = generator(name, path or None)
        for label, n in todo:
            bcfg = BoNConfig(n=n, max_turns=env_kw["max_turns"], max_new_tokens=max_new, seed=args.seed)
            t1 = time.perf_counter()
            res = best_of_n(policy, cfg.env_id, bcfg, verifier=verifier, problem_ids=test_ids, policy_name=name, **env_kw)
            lo, hi = wilson_interval(round(res.n_correct), res.n_problems)
            write_text_atomic(results_dir / "trajectories" / f"{_slug(label)}.jsonl",
                              "".join(json.dumps(t.to_row(), default=str) + "\n" for t in res.trajectories))
            write_json_atomic(results_dir / f"{_slug(label)}.json", {
                "label": label, "generator": name, "source": path or name, "n_candidates": n,
                "accuracy": res.accuracy, "n": res.n_problems, "correct": res.n_correct, "wilson95": [lo, hi],
                "accuracy_by_turn": res.accuracy_by_turn, "wall_s": time.perf_counter() - t1, "stats": res.stats,
                "per_problem": dict(res.per_problem),
            })
            print(f"{label:32s} {res.accuracy:6.1%}  ({res.n_correct:g}/{res.n_problems}, "
                  f"95% CI {lo:.1%}-{hi:.1%})", flush=True)
        del policy

    results = {r["label"]: r for r in (json.loads(f.read_text()) for f in sorted(results_dir.glob("*.json")))}
    it1 = {s: json.loads((it_dir / f"{s}.done").read_text())
           for s in ("rollouts", "verifier", "relabel", "generator") if (it_dir / f"{s}.done").is_file()}
    out = {
        "quick": q, "train_problems": n_train, "test_problem_ids": test_ids, "train_s": train_s,
        "mucode_iteration": it1, "results": results, "config": cfg.to_dict(),
        "note": "the base model's BoN uses iteration 1's verifier, trained on the base model's own rollouts",
    }
    write_json_atomic(run_dir / "experiment.json", out, default=str)
    table = comparison_table(results)
    write_text_atomic(run_dir / "comparison.md", table + "\n")
    plot_turns(results, run_dir / "accuracy_by_turn.png")
    print("\n" + table)
    print(f"saved {run_dir / 'experiment.json'}, comparison.md, accuracy_by_turn.png")
    return 0


def comparison_table(results: dict) -> str:
    """Markdown: one row per (generator, setting) with n, accuracy, its Wilson 95% interval, the
    accuracy after each turn, and the paired difference to the base model in the same setting
    (bootstrap 95% interval over the same problems)."""
    from mucode_env.metrics import paired_bootstrap

    base = {r["n_candidates"]: r for r in results.values() if r["generator"] == "base"}
    lines = ["| generator | setting | n | accuracy (95% CI) | by turn 1/2/3 | vs base, same setting (95% CI) |",
             "|---|---|---:|---:|---|---:|"]
    for r in sorted(results.values(), key=lambda r: (r["n_candidates"] == 1, r["generator"] != "base", r["label"])):
        lo, hi = r["wilson95"]
        turns = "/".join(f"{100 * t:.0f}" for t in r["accuracy_by_turn"])
        ref = base.get(r["n_candidates"])
        diff = ""
        if ref is not None and r["generator"] != "base":
            d = paired_bootstrap(r["per_problem"], ref["per_problem"])
            diff = f"{100 * d['diff']:+.1f} pts ({100 * d['lo']:+.1f} to {100 * d['hi']:+.1f})"
        setting = "greedy" if r["n_candidates"] == 1 else f"BoN N={r['n_candidates']} PT+LV"
        lines.append(f"| {r['generator']} | {setting} | {r['n']} | {r['accuracy']:.1%} ({lo:.1%}-{hi:.1%}) | "
                     f"{turns} | {diff} |")
    return "\n".join(lines)


def plot_turns(results: dict, path: Path) -> None:
    import matplotlib

    from mucode_env.atomic import save_figure_atomic

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in results.values():
        turns = r["accuracy_by_turn"]
        ax.plot(range(1, len(turns) + 1), [100 * t for t in turns], "o-" if r["n_candidates"] == 1 else "s--",
                label=r["label"])
    ax.set_xlabel("turn")
    ax.set_ylabel("accuracy (%, private tests of the pick)")
    ax.set_xticks([1, 2, 3])
    ax.set_ylim(0, 100)
    ax.set_title(f"MBPP test subset (n={max((r['n'] for r in results.values()), default=0)})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=100)
    plt.close(fig)


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in label.lower()).strip("_")

if __name__ == "__main__":
    sys.exit(main())
