"""µCODE training (Algorithm 1): rollouts -> aggregate -> verifier -> expert -> relabel -> fine-tune.

Every stage of every iteration writes its artifact under the run directory and then a marker
(:mod:`agents.mucode.run_dir`); a finished stage is skipped, so a crashed run resumes where it
stopped.

The generator is always fine-tuned from the base model. The best (generator, verifier) pair is
chosen by validation accuracy of multi-turn BoN. Rollouts of the base model use
``rollout_backend`` (llama.cpp on CPU); fine-tuned generators are HF checkpoints and are rolled
out with ``finetuned_backend``: "transformers" runs the checkpoint itself, "llama_cpp" first exports
it to ``generator/model-<finetuned_gguf_dtype>.gguf`` with the base model's GGUF metadata
(:func:`agents.models.gguf_export.export_for_llama_cpp`).

>>> trainer = MuCodeTrainer(MuCodeConfig.cpu(run_dir="runs/mucode"))  # doctest: +SKIP
>>> report = trainer.train()  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path
from typing import Any

from agents.bon import BoNConfig, best_of_n
from agents.episodes import derive_seed
from agents.mucode.config import MuCodeConfig
from agents.mucode.expert import select_experts
from agents.mucode.relabel import relabel
from agents.mucode.report import format_report, plot_report
from agents.mucode.run_dir import STAGES, mark_done, stage_done
from agents.mucode.verifier import VERIFIER_STAGE, Verifier, build_pairs
from agents.backends.spec import PolicySpec
from agents.policy import Policy
from agents.records import Trajectory
from agents.training.launch import run_stage
from agents.training.sft import SFT_STAGE, read_train_stats
from mucode_env.atomic import write_json_atomic, write_jsonl_atomic, write_text_atomic
from mucode_env.datasets.source import read_jsonl
from mucode_env.metrics import accuracy_by_turn
from mucode_env.registration import env_problems

__all__ = ["MuCodeTrainer", "PolicyFactory"]

logger = logging.getLogger(__name__)

# (model path or name, backend) -> Policy (or, for Ray actors, a PolicySpec or a picklable policy).
# Tests inject scripted policies through this.
PolicyFactory = Callable[[str, str], "Policy | PolicySpec"]


def _default_policy_factory(backend_kwargs: dict[str, Any], distributed: bool) -> PolicyFactory:
    def make(model: str, backend: str) -> Policy | PolicySpec:
        spec = PolicySpec(backend, model, backend_kwargs.get(backend, {}))
        return spec if distributed else spec.build()  # with Ray every episode actor builds its own replica

    return make


class MuCodeTrainer:
    """Runs Algorithm 1 with per-stage artifacts; :meth:`train` is resumable.

    Args:
        config: the run's configuration.
        policy_factory: ``(model, backend) -> Policy``; default ``agents.backends.make_policy``
            (with ``config.ray``: the :class:`~agents.backends.spec.PolicySpec` each actor builds).
    """

    def __init__(self, config: MuCodeConfig, policy_factory: PolicyFactory | None = None) -> None:
        self.config = config
        self.run_dir = Path(config.run_dir)
        self.policy_factory = policy_factory or _default_policy_factory(config.backend_kwargs, config.ray is not None)
        self.stages: list[dict[str, Any]] = []

    # -- stage bookkeeping ---------------------------------------------------------------------
    def _done(self, it_dir: Path, stage: str) -> dict[str, Any] | None:
        f = it_dir / f"{stage}.done"
        return json.loads(f.read_text()) if f.is_file() else None

    def _mark(self, it_dir: Path, stage: str, stats: dict[str, Any]) -> dict[str, Any]:
        write_json_atomic(it_dir / f"{stage}.done", stats, default=str)
        return stats

    def _env_kwargs(self) -> dict[str, Any]:
        kw = dict(self.config.env_kwargs)
        if self.config.data_dir is not None:
            kw.setdefault("data_dir", self.config.data_dir)
        return kw

    def generator_for(self, iteration: int) -> tuple[str, str]:
        """(model, backend) that rolls out in ``iteration`` (1-based): the base, then pi_{i-1}."""
        if iteration == 1:
            return self.config.generator, self.config.rollout_backend
        return self.finetuned_model(self.run_dir / f"iter{iteration - 1}"), self.config.finetuned_backend

    def finetuned_model(self, it_dir: Path) -> str:
        """What ``finetuned_backend`` loads for ``it_dir``'s generator: the checkpoint, or its GGUF export."""
        path = it_dir / "generator"
        if self.config.finetuned_backend != "llama_cpp":
            return str(path)
        from agents.models.gguf_export import export_for_llama_cpp

        t0 = time.perf_counter()
        out = export_for_llama_cpp(path, self.config.generator, dtype=self.config.finetuned_gguf_dtype)
        logger.info("generator %s as GGUF: %s (%.1f s)", path, out, time.perf_counter() - t0)
        return str(out)

    @contextlib.contextmanager
    def _policy(self, model: str, backend: str) -> Iterator[Policy]:
        """A policy for one stage, released when the stage ends: a generation server (vLLM) or an
        engine stops before the next training stage, so one heavy stage holds memory at a time."""
        policy = self.policy_factory(model, backend)
        try:
            yield policy
        finally:
            close = getattr(policy, "close", None)
            if callable(close):
                close()
            del policy
            gc.collect()

    # -- stages --------------------------------------------------------------------------------
    def _rollouts(self, it: int, it_dir: Path) -> list[Trajectory]:
        cfg = self.config
        if stage_done(it_dir, "rollouts") is not None:
            return [Trajectory.from_row(r) for r in read_jsonl(it_dir / "rollouts.jsonl")]
        model, backend = self.generator_for(it)
        from agents.policy import SamplingParams
        from agents.rollout import RolloutConfig, run_rollouts

        rcfg = RolloutConfig(
            env_id=cfg.env_id,
            split=cfg.train_split,
            problem_ids=cfg.train_problem_ids,
            limit=cfg.max_train_problems,
            n=cfg.rollout.rollouts_per_problem,
            sampling=SamplingParams(n=1, temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p,
                                    max_new_tokens=cfg.rollout.max_new_tokens),
            max_turns=cfg.rollout.max_turns,
            seed=derive_seed(cfg.seed, "rollouts", it),
            env_kwargs=self._env_kwargs(),
            max_live_episodes=cfg.rollout.max_live_episodes,
            progress=cfg.progress,
            ray=cfg.ray,
        )
        t0 = time.perf_counter()
        with self._policy(model, backend) as policy:
            result = run_rollouts(policy, rcfg, it_dir / "rollouts")
        wall = time.perf_counter() - t0
        trajs = result.trajectories
        for tr in trajs:
            tr.policy_name = tr.policy_name or f"{backend}:{model}"
        write_jsonl_atomic(it_dir / "rollouts.jsonl", [t.to_row() for t in trajs], default=str)
        s = result.stats.to_dict() if hasattr(result.stats, "to_dict") else {}
        tokens = sum(t.completion_tokens for tr in trajs for t in tr.turns)
        return_stats = {
            "stage": "rollouts", "iteration": it, "model": model, "backend": backend,
            "episodes": len(trajs), "success_rate": sum(tr.success for tr in trajs) / max(1, len(trajs)),
            "completion_tokens": tokens, "wall_s": wall,
            "rollout_tokens_per_s": s.get("tokens_per_s", tokens / wall if wall else None), "rollout_stats": s,
        }
        mark_done(it_dir, "rollouts", return_stats)
        return trajs

    def _verifier(self, it: int, it_dir: Path, data: list[Trajectory]) -> Path:
        cfg = self.config
        path = it_dir / "verifier"
        if stage_done(it_dir, "verifier") is not None:
            return path
        pairs = build_pairs(data, cfg.verifier.pairs_per_prompt, cfg.verifier.seed) if cfg.verifier.loss == "bt" else []
        write_jsonl_atomic(it_dir / "pairs.jsonl", pairs, default=str)
        vcfg = replace(cfg.verifier, progress=cfg.progress)
        run_stage(VERIFIER_STAGE, cfg.verifier_base or cfg.generator, data, vcfg, path, cfg.launch)
        st = read_train_stats(path)
        mark_done(it_dir, "verifier", {"stage": "verifier", "iteration": it, **st})
        return path

    def _relabel(self, it: int, it_dir: Path, data: list[Trajectory], current: list[Trajectory],
                 verifier_path: Path) -> list[dict[str, Any]]:
        cfg = self.config
        if stage_done(it_dir, "relabel") is not None:
            return list(read_jsonl(it_dir / "relabeled.jsonl"))
        score_fn, vstats = None, {}
        if cfg.expert.uses_verifier:
            v = Verifier.load(verifier_path)
            score_fn = partial(v.score, progress=f"iteration {it}: verifier scores" if cfg.progress else None)
        if cfg.expert.variant == "reference":
            experts = select_experts(data, cfg.expert, score_fn, candidates_from=current)
            rows = relabel(data, experts, candidates_from=current)
            if it > 1:  # the reference code concatenates relabeled sets across iterations
                rows = list(read_jsonl(self.run_dir / f"iter{it - 1}" / "relabeled.jsonl")) + rows
        else:
            experts = select_experts(data, cfg.expert, score_fn)
            rows = relabel(data, experts)
        if score_fn is not None:
            vstats = dict(v.last_score_stats)
        write_jsonl_atomic(it_dir / "experts.jsonl", [asdict(c) for c in experts.choices.values()], default=str)
        write_jsonl_atomic(it_dir / "relabeled.jsonl", rows, default=str)
        mark_done(it_dir, "relabel", {
            "stage": "relabel", "iteration": it, "n_problems": len(experts), "n_examples": len(rows),
            "expert_accuracy": experts.accuracy(),
            "verifier_scoring_programs_per_s": vstats.get("programs_per_s"), "verifier_scored_programs": vstats.get("programs"),
        })
        return rows

    def _generator(self, it: int, it_dir: Path, rows: list[dict[str, Any]]) -> Path:
        cfg = self.config
        path = it_dir / "generator"
        if stage_done(it_dir, "generator") is not None:
            return path
        examples = [{"prompt": r["prompt"], "completion": r["completion"]} for r in rows]
        scfg = replace(cfg.sft, seed=derive_seed(cfg.sft.seed, "sft", it) if cfg.sft.seed else cfg.sft.seed,
                       progress=cfg.progress)
        run_stage(SFT_STAGE, cfg.generator, examples, scfg, path, cfg.launch)  # ALWAYS from the base model
        st = read_train_stats(path)
        mark_done(it_dir, "generator", {"stage": "generator", "iteration": it, **st})
        return path

    def _validate(self, it: int, it_dir: Path) -> dict[str, Any] | None:
        cfg = self.config
        if not cfg.validation.enabled:
            return None
        if (st := stage_done(it_dir, "validation")) is not None:
            return st
        vs = cfg.validation
        verifier = Verifier.load(it_dir / "verifier") if vs.n > 1 and vs.selector in ("pt+lv", "lv") else None
        env_kw = self._env_kwargs()
        problem_ids = None
        if vs.max_problems is not None:
            problem_ids = [p.id for p in env_problems(cfg.env_id, split=vs.split, limit=vs.max_problems,
                                                      data_dir=env_kw.get("data_dir"))]
        with self._policy(self.finetuned_model(it_dir), cfg.finetuned_backend) as policy:
            res = best_of_n(
                policy, cfg.env_id,
                BoNConfig(n=vs.n, selector=vs.selector, max_turns=vs.max_turns, temperature=vs.temperature,
                          max_new_tokens=vs.max_new_tokens, seed=derive_seed(cfg.seed, "validation"),
                          progress=cfg.progress, ray=cfg.ray,
                          # as many episodes in flight as the rollouts: continuous play against a server
                          max_live=cfg.rollout.max_live_episodes),
                verifier=verifier, problem_ids=problem_ids, split=vs.split, **env_kw,
            )
        out = {"stage": "validation", "iteration": it, **res.to_dict()}
        write_json_atomic(it_dir / "validation.json", out, default=str)
        return mark_done(it_dir, "validation", out)

    def _check_problems(self) -> None:
        """Load the training (and validation) problems once before any stage, so missing data or
        a bad problem id fails in a second, not after a generation server's minutes of start-up."""
        cfg = self.config
        data_dir = self._env_kwargs().get("data_dir")
        env_problems(cfg.env_id, split=cfg.train_split, problem_ids=cfg.train_problem_ids,
                     limit=cfg.max_train_problems, data_dir=data_dir)
        if cfg.validation.enabled:
            env_problems(cfg.env_id, split=cfg.validation.split, limit=cfg.validation.max_problems, data_dir=data_dir)

    # -- main loop -----------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        """Run (or resume) all M iterations; returns the run report (also saved as JSON + PNGs)."""
        cfg = self.config
        self.run_dir.mkdir(parents=True, exist_ok=True)
        cfg_file = self.run_dir / "config.json"
        if cfg_file.is_file():
            old = json.loads(cfg_file.read_text())
            if old != json.loads(json.dumps(cfg.to_dict(), default=str)):
                logger.warning("run_dir %s holds a different config; finished stages are reused as they are", self.run_dir)
        write_json_atomic(cfg_file, cfg.to_dict(), default=str)

        self._check_problems()
        aggregated: list[Trajectory] = []
        iterations = []
        from tqdm.auto import tqdm

        for it in tqdm(range(1, cfg.iterations + 1), desc="µCODE iterations", disable=not cfg.progress):
            it_dir = self.run_dir / f"iter{it}"
            it_dir.mkdir(parents=True, exist_ok=True)
            current = self._rollouts(it, it_dir)
            aggregated = aggregated + current  # step 2: D <- D ∪ D_i
            vpath = self._verifier(it, it_dir, aggregated)
            rows = self._relabel(it, it_dir, aggregated, current, vpath)
            self._generator(it, it_dir, rows)
            self._validate(it, it_dir)
            iterations.append(self._iteration_summary(it, it_dir))
        report = self._report(iterations)
        return report

    def _iteration_summary(self, it: int, it_dir: Path) -> dict[str, Any]:
        stages = {s: stage_done(it_dir, s) for s in STAGES}
        roll = [Trajectory.from_row(r) for r in read_jsonl(it_dir / "rollouts.jsonl")]

        return {
            "iteration": it,
            "generator": str(it_dir / "generator"),
            "verifier": str(it_dir / "verifier"),
            "rollout_accuracy": sum(t.success for t in roll) / max(1, len(roll)),
            "rollout_accuracy_by_turn": accuracy_by_turn([[u.reward for u in t.turns] for t in roll],
                                                         self.config.rollout.max_turns,
                                                         problem_ids=[t.problem_id for t in roll]),
            "expert_accuracy": (stages["relabel"] or {}).get("expert_accuracy"),
            "validation_accuracy": (stages["validation"] or {}).get("accuracy"),
            "validation_accuracy_by_turn": (stages["validation"] or {}).get("accuracy_by_turn"),
            "validation_n_problems": (stages["validation"] or {}).get("n_problems"),
            "throughput": {
                "rollout_tokens_per_s": (stages["rollouts"] or {}).get("rollout_tokens_per_s"),
                "verifier_train_tokens_per_s": (stages["verifier"] or {}).get("train_tokens_per_s"),
                "generator_train_tokens_per_s": (stages["generator"] or {}).get("train_tokens_per_s"),
                "verifier_scoring_programs_per_s": (stages["relabel"] or {}).get("verifier_scoring_programs_per_s"),
            },
            "stages": stages,
        }

    def _report(self, iterations: list[dict[str, Any]]) -> dict[str, Any]:
        scored = [i for i in iterations if i["validation_accuracy"] is not None]
        if scored:  # ties: the later iteration (more data)
            best = max(scored, key=lambda i: (i["validation_accuracy"], i["iteration"]))
        else:
            best = iterations[-1]
        best_rec = {"iteration": best["iteration"], "generator": best["generator"], "verifier": best["verifier"],
                    "validation_accuracy": best["validation_accuracy"],
                    "selected_by": "validation BoN accuracy" if scored else "last iteration (validation disabled)"}
        write_json_atomic(self.run_dir / "best.json", best_rec, default=str)
        report = {"config": self.config.to_dict(), "iterations": iterations, "best": best_rec}
        write_json_atomic(self.run_dir / "report.json", report, default=str)
        write_text_atomic(self.run_dir / "report.md", format_report(report) + "\n")
        plot_report(self.run_dir, iterations, self.config.rollout.max_turns)
        return report
