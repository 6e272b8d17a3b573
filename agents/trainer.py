"""µCODE training (Algorithm 1): rollouts -> aggregate -> verifier -> expert -> relabel -> fine-tune.

Every stage of every iteration writes its artifact under the run directory and then a
``<stage>.done`` marker (JSON with the stage's statistics); a stage whose marker exists is
skipped, so a crashed run resumes where it stopped::

    run_dir/config.json
    run_dir/iter1/rollouts/            (agents.rollout's resumable shards + table)
    run_dir/iter1/rollouts.jsonl       (the iteration's trajectories)        rollouts.done
    run_dir/iter1/pairs.jsonl          (the verifier's BT pairs)
    run_dir/iter1/verifier/            (R_phi trained on D_1)                verifier.done
    run_dir/iter1/experts.jsonl, relabeled.jsonl  (y* and D*)                relabel.done
    run_dir/iter1/generator/           (pi_1 fine-tuned from the BASE)       generator.done
    run_dir/iter1/validation.json      (BoN with (pi_1, R_phi_1))            validation.done
    run_dir/best.json, report.json, report_accuracy.png, report_turns.png

The generator is always fine-tuned from the base model. The best (generator, verifier) pair is
chosen by validation accuracy of multi-turn BoN. Rollouts of the base model use
``rollout_backend`` (llama.cpp on CPU); fine-tuned generators are HF checkpoints and are rolled
out with ``finetuned_backend``: "transformers" runs the checkpoint itself, "llama_cpp" first exports
it to ``generator/model-<finetuned_gguf_dtype>.gguf`` with the base model's GGUF metadata
(:func:`agents.gguf_export.export_for_llama_cpp`).

>>> trainer = MuCodeTrainer(MuCodeConfig.cpu(run_dir="runs/mucode"))  # doctest: +SKIP
>>> report = trainer.train()  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from agents.bon import BoNConfig, best_of_n, derive_seed
from agents.expert import ExpertConfig, select_experts
from agents.launch import LaunchConfig, run_stage
from agents.policy import Policy
from agents.records import Trajectory
from agents.relabel import relabel
from agents.sft import SFTRunConfig, read_train_stats
from agents.verifier import Verifier, VerifierConfig, build_pairs
from mucode_env.atomic import write_json_atomic, write_text_atomic

__all__ = ["RolloutSettings", "ValidationSettings", "MuCodeConfig", "MuCodeTrainer", "PolicyFactory", "share_stages", "format_report"]

logger = logging.getLogger(__name__)

# (model path or name, backend) -> Policy. Tests inject scripted policies through this.
PolicyFactory = Callable[[str, str], Policy]


@dataclass(frozen=True)
class RolloutSettings:
    """Step 1 of Algorithm 1 (paper: 15 rollouts per problem, temperature 0.7, top_p 1, 1000 tokens, T=3)."""

    rollouts_per_problem: int = 15
    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 1000
    max_turns: int = 3
    max_live_episodes: int = 64

    def __post_init__(self) -> None:
        if self.rollouts_per_problem < 1 or self.max_turns < 1:
            raise ValueError("rollouts_per_problem and max_turns must be >= 1")


@dataclass(frozen=True)
class ValidationSettings:
    """Model selection: multi-turn BoN of each iteration's (generator, verifier) on a held-out split."""

    enabled: bool = True
    split: str = "validation"
    max_problems: int | None = None
    n: int = 5
    selector: str = "pt+lv"
    temperature: float = 0.7
    max_new_tokens: int = 1000
    max_turns: int = 3


def _build(cls, value):
    if value is None or is_dataclass(value):
        return value
    return cls(**value)


@dataclass(frozen=True)
class MuCodeConfig:
    """Everything a µCODE run needs (``asdict`` is the run record; ``from_dict`` reads it back).

    Attributes:
        run_dir: where every artifact goes.
        env_id: the environment (``MuCode-MBPP-v0``).
        train_split / train_problem_ids / max_train_problems: the training problems.
        data_dir: offline dataset directory (passed to the environment).
        generator: the BASE generator (registry name, GGUF file or HF directory).
        verifier_base: the verifier's base (None: the generator's base, as in the paper).
        rollout_backend: backend for rollouts of the base model ("llama_cpp", "transformers"...).
        finetuned_backend: backend for fine-tuned generators (HF checkpoints): "transformers", or
            "llama_cpp" (exported to GGUF first, see ``finetuned_gguf_dtype``).
        finetuned_gguf_dtype: GGUF type of that export: "q8_0" (default), "f16" or "f32".
        backend_kwargs: extra kwargs for ``agents.backends.make_policy``.
        iterations: M.
        env_kwargs: more environment kwargs (``termination``...).
        launch: how the two training stages run: in this process (default) or as a multi-GPU job
            (``LaunchConfig.accelerate("deepspeed_zero3", num_processes=8)``; see
            :mod:`agents.launch`).
    """

    run_dir: str = "runs/mucode"
    env_id: str = "MuCode-MBPP-v0"
    train_split: str = "train"
    train_problem_ids: tuple[str, ...] | None = None
    max_train_problems: int | None = None
    data_dir: str | None = None
    generator: str = "qwen2.5-coder-0.5b"
    verifier_base: str | None = None
    rollout_backend: str = "llama_cpp"
    finetuned_backend: str = "transformers"
    finetuned_gguf_dtype: str = "q8_0"
    backend_kwargs: dict[str, Any] = field(default_factory=dict)
    iterations: int = 2
    seed: int = 0
    rollout: RolloutSettings = field(default_factory=RolloutSettings)
    verifier: VerifierConfig = field(default_factory=VerifierConfig)
    expert: ExpertConfig = field(default_factory=ExpertConfig)
    sft: SFTRunConfig = field(default_factory=SFTRunConfig)
    validation: ValidationSettings = field(default_factory=ValidationSettings)
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    launch: LaunchConfig = field(default_factory=LaunchConfig)
    progress: bool = True
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name, cls in (("rollout", RolloutSettings), ("verifier", VerifierConfig), ("expert", ExpertConfig),
                          ("sft", SFTRunConfig), ("validation", ValidationSettings), ("launch", LaunchConfig)):
            object.__setattr__(self, name, _build(cls, getattr(self, name)))
        if self.train_problem_ids is not None:
            object.__setattr__(self, "train_problem_ids", tuple(self.train_problem_ids))
        object.__setattr__(self, "notes", tuple(self.notes))
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")

    # -- presets -------------------------------------------------------------------------------
    @classmethod
    def paper(cls, **overrides: Any) -> "MuCodeConfig":
        """Table 6 of the paper (GPU): Llama-3.2-1B-Instruct (use ``generator=`` for the 8B),
        generator lr 5e-7, batch 32, 2 epochs, max length 4096; verifier lr 1e-6, batch 64,
        2 epochs, max length 2048; 15 rollouts/problem, T=3, M=2; rollouts through SGLang
        (``pip install 'mucode[sglang]'``), as the paper's stack did."""
        base = cls(
            generator="meta-llama/Llama-3.2-1B-Instruct",
            rollout_backend="sglang",
            finetuned_backend="sglang",
            rollout=RolloutSettings(15, 0.7, 1.0, 1000, 3),
            verifier=VerifierConfig(loss="bt", pairs_per_prompt=32, learning_rate=1e-6, epochs=2, batch_size=64,
                                    per_device_batch_size=8, max_length=2048, torch_dtype="auto"),
            expert=ExpertConfig(1.0, 0.1),
            sft=SFTRunConfig(learning_rate=5e-7, epochs=2, batch_size=32, per_device_batch_size=4, max_length=4096,
                             torch_dtype="auto"),
            iterations=2,
            notes=("paper preset: Table 6 hyperparameters",),
        )
        return replace(base, **overrides)

    @classmethod
    def cpu(cls, **overrides: Any) -> "MuCodeConfig":
        """A 2-core CPU preset on the embedded small models. Deviations from the paper:

        - generator Qwen2.5-Coder-0.5B (GGUF, llama.cpp rollouts; fine-tuned generators are exported
          to q8_0 GGUF and rolled out through llama.cpp too), verifier base SmolLM2-135M (the
          paper uses the generator's base: a 0.5B scorer costs ~95 s per 4x512-token step here);
        - 4 rollouts per problem (not 15), 512 new tokens (not 1000), max_train_problems=40;
        - verifier: 8 pairs per prompt (not 32), max length 1024 (not 2048), lr 1e-5 (not 1e-6:
          far fewer steps), batch 16;
        - generator: max length 1536 (not 4096), batch 8, lr 1e-5, 1 epoch (not 2), LoRA r=16;
        - validation: 20 problems, N=3.
        """
        base = cls(
            generator="qwen2.5-coder-0.5b",
            verifier_base="smollm2-135m",
            rollout_backend="llama_cpp",
            finetuned_backend="llama_cpp",  # fine-tuned generators are exported to GGUF (q8_0)
            max_train_problems=40,
            rollout=RolloutSettings(4, 0.7, 1.0, 512, 3, 32),
            verifier=VerifierConfig(loss="bt", pairs_per_prompt=8, learning_rate=1e-5, epochs=2, batch_size=16,
                                    per_device_batch_size=4, max_length=1024),
            expert=ExpertConfig(1.0, 0.1),
            sft=SFTRunConfig(learning_rate=1e-5, epochs=1, batch_size=8, per_device_batch_size=2, max_length=1536,
                             lora=True, lora_r=16, lora_alpha=32),
            validation=ValidationSettings(enabled=True, split="validation", max_problems=20, n=3,
                                          max_new_tokens=512),
            iterations=2,
            notes=("cpu preset: see MuCodeConfig.cpu docstring for the deviations from the paper",),
        )
        return replace(base, **overrides)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MuCodeConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown MuCodeConfig keys {unknown}; allowed: {sorted(known)}")
        return cls(**d)

    @classmethod
    def load(cls, spec: str, **overrides: Any) -> "MuCodeConfig":
        """``"cpu"``, ``"paper"`` or a JSON file (optionally with ``"preset"`` to start from)."""
        if spec == "cpu":
            return cls.cpu(**overrides)
        if spec == "paper":
            return cls.paper(**overrides)
        d = json.loads(Path(spec).read_text())
        preset = d.pop("preset", None)
        if preset:
            base = asdict(cls.load(preset))
            for k, v in d.items():
                base[k] = {**base[k], **v} if isinstance(v, dict) and isinstance(base.get(k), dict) else v
            d = base
        return cls.from_dict({**d, **overrides})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------- IO helpers


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as f:
        for r in rows:
            f.write(json.dumps(r, default=str) + "\n")
    os.replace(tmp, path)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open() as f:
        return [json.loads(line) for line in f if line.strip()]


def _default_policy_factory(backend_kwargs: dict[str, Any]) -> PolicyFactory:
    def make(model: str, backend: str) -> Policy:
        from agents.backends import make_policy

        return make_policy(backend, model, **backend_kwargs.get(backend, {}))

    return make


# the files each shareable stage writes in its iteration directory (its marker comes last)
_STAGE_FILES: dict[str, tuple[str, ...]] = {
    "rollouts": ("rollouts", "rollouts.jsonl"),
    "verifier": ("pairs.jsonl", "verifier"),
}


def share_stages(src_run: str | os.PathLike, dst_run: str | os.PathLike, iteration: int = 1,
                 stages: tuple[str, ...] = ("rollouts", "verifier")) -> list[str]:
    """Copy finished stages of one run's iteration into another run, which then skips them.

    For fair comparisons: an RFT run that shares µCODE's iteration-1 rollouts and verifier
    starts from the same D_1 and differs only in its training set. The ``.done`` marker is
    copied last, so an interrupted copy is redone. Returns the stages copied now (stages the
    destination has already finished are left alone).

    Raises:
        ValueError: an unknown stage, or a stage that the source has not finished.
    """
    src, dst = Path(src_run) / f"iter{iteration}", Path(dst_run) / f"iter{iteration}"
    unknown = [s for s in stages if s not in _STAGE_FILES]
    if unknown:
        raise ValueError(f"cannot share stage(s) {unknown}; shareable: {sorted(_STAGE_FILES)}")
    unfinished = [s for s in stages if not (src / f"{s}.done").is_file()]
    if unfinished:
        raise ValueError(f"{src}: stage(s) {unfinished} are not finished (no .done marker); finish that run first")
    import shutil

    copied = []
    for stage in stages:
        if (dst / f"{stage}.done").is_file():
            continue
        dst.mkdir(parents=True, exist_ok=True)
        for name in _STAGE_FILES[stage]:
            if (src / name).is_dir():
                shutil.copytree(src / name, dst / name, dirs_exist_ok=True)
            elif (src / name).is_file():
                shutil.copy2(src / name, dst / name)
        shutil.copy2(src / f"{stage}.done", dst / f"{stage}.done")
        copied.append(stage)
    return copied


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


class MuCodeTrainer:
    """Runs Algorithm 1 with per-stage artifacts; :meth:`train` is resumable.

    Args:
        config: the run's configuration.
        policy_factory: ``(model, backend) -> Policy``; default ``agents.backends.make_policy``.
    """

    def __init__(self, config: MuCodeConfig, policy_factory: PolicyFactory | None = None) -> None:
        self.config = config
        self.run_dir = Path(config.run_dir)
        self.policy_factory = policy_factory or _default_policy_factory(config.backend_kwargs)
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
        from agents.gguf_export import export_for_llama_cpp

        t0 = time.perf_counter()
        out = export_for_llama_cpp(path, self.config.generator, dtype=self.config.finetuned_gguf_dtype)
        logger.info("generator %s as GGUF: %s (%.1f s)", path, out, time.perf_counter() - t0)
        return str(out)

    # -- stages --------------------------------------------------------------------------------
    def _rollouts(self, it: int, it_dir: Path) -> list[Trajectory]:
        cfg = self.config
        if self._done(it_dir, "rollouts") is not None:
            return [Trajectory.from_row(r) for r in _read_jsonl(it_dir / "rollouts.jsonl")]
        model, backend = self.generator_for(it)
        policy = self.policy_factory(model, backend)
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
        )
        t0 = time.perf_counter()
        result = run_rollouts(policy, rcfg, it_dir / "rollouts")
        wall = time.perf_counter() - t0
        trajs = result.trajectories
        for tr in trajs:
            tr.policy_name = tr.policy_name or f"{backend}:{model}"
        _write_jsonl(it_dir / "rollouts.jsonl", [t.to_row() for t in trajs])
        s = result.stats.to_dict() if hasattr(result.stats, "to_dict") else {}
        tokens = sum(t.completion_tokens for tr in trajs for t in tr.turns)
        return_stats = {
            "stage": "rollouts", "iteration": it, "model": model, "backend": backend,
            "episodes": len(trajs), "success_rate": sum(tr.success for tr in trajs) / max(1, len(trajs)),
            "completion_tokens": tokens, "wall_s": wall,
            "rollout_tokens_per_s": s.get("tokens_per_s", tokens / wall if wall else None), "rollout_stats": s,
        }
        self._mark(it_dir, "rollouts", return_stats)
        del policy
        return trajs

    def _verifier(self, it: int, it_dir: Path, data: list[Trajectory]) -> Path:
        cfg = self.config
        path = it_dir / "verifier"
        if self._done(it_dir, "verifier") is not None:
            return path
        pairs = build_pairs(data, cfg.verifier.pairs_per_prompt, cfg.verifier.seed) if cfg.verifier.loss == "bt" else []
        _write_jsonl(it_dir / "pairs.jsonl", pairs)
        vcfg = replace(cfg.verifier, progress=cfg.progress)
        run_stage("verifier", cfg.verifier_base or cfg.generator, data, vcfg, path, cfg.launch)
        st = read_train_stats(path)
        self._mark(it_dir, "verifier", {"stage": "verifier", "iteration": it, **st})
        return path

    def _relabel(self, it: int, it_dir: Path, data: list[Trajectory], current: list[Trajectory],
                 verifier_path: Path) -> list[dict[str, Any]]:
        cfg = self.config
        if self._done(it_dir, "relabel") is not None:
            return _read_jsonl(it_dir / "relabeled.jsonl")
        score_fn, vstats = None, {}
        if cfg.expert.uses_verifier:
            v = Verifier.load(verifier_path)
            score_fn = v.score
        if cfg.expert.variant == "reference":
            experts = select_experts(data, cfg.expert, score_fn, candidates_from=current)
            rows = relabel(data, experts, candidates_from=current)
            if it > 1:  # the reference code concatenates relabeled sets across iterations
                rows = _read_jsonl(self.run_dir / f"iter{it - 1}" / "relabeled.jsonl") + rows
        else:
            experts = select_experts(data, cfg.expert, score_fn)
            rows = relabel(data, experts)
        if score_fn is not None:
            vstats = dict(v.last_score_stats)
        _write_jsonl(it_dir / "experts.jsonl", [asdict(c) for c in experts.choices.values()])
        _write_jsonl(it_dir / "relabeled.jsonl", rows)
        self._mark(it_dir, "relabel", {
            "stage": "relabel", "iteration": it, "n_problems": len(experts), "n_examples": len(rows),
            "expert_accuracy": experts.accuracy(),
            "verifier_scoring_programs_per_s": vstats.get("programs_per_s"), "verifier_scored_programs": vstats.get("programs"),
        })
        return rows

    def _generator(self, it: int, it_dir: Path, rows: list[dict[str, Any]]) -> Path:
        cfg = self.config
        path = it_dir / "generator"
        if self._done(it_dir, "generator") is not None:
            return path
        examples = [{"prompt": r["prompt"], "completion": r["completion"]} for r in rows]
        scfg = replace(cfg.sft, seed=derive_seed(cfg.sft.seed, "sft", it) if cfg.sft.seed else cfg.sft.seed,
                       progress=cfg.progress)
        run_stage("sft", cfg.generator, examples, scfg, path, cfg.launch)  # ALWAYS from the base model
        st = read_train_stats(path)
        self._mark(it_dir, "generator", {"stage": "generator", "iteration": it, **st})
        return path

    def _validate(self, it: int, it_dir: Path) -> dict[str, Any] | None:
        cfg = self.config
        if not cfg.validation.enabled:
            return None
        if (st := self._done(it_dir, "validation")) is not None:
            return st
        vs = cfg.validation
        policy = self.policy_factory(self.finetuned_model(it_dir), cfg.finetuned_backend)
        verifier = Verifier.load(it_dir / "verifier") if vs.n > 1 and vs.selector in ("pt+lv", "lv") else None
        env_kw = self._env_kwargs()
        problem_ids = None
        if vs.max_problems is not None:
            from agents.bon import make_envs

            envs, problems = make_envs(cfg.env_id, None, 0, split=vs.split, **env_kw)
            problem_ids = [p.id for p in problems[: vs.max_problems]]
        res = best_of_n(
            policy, cfg.env_id,
            BoNConfig(n=vs.n, selector=vs.selector, max_turns=vs.max_turns, temperature=vs.temperature,
                      max_new_tokens=vs.max_new_tokens, seed=derive_seed(cfg.seed, "validation"), progress=cfg.progress),
            verifier=verifier, problem_ids=problem_ids, split=vs.split, **env_kw,
        )
        out = {"stage": "validation", "iteration": it, **res.to_dict()}
        write_json_atomic(it_dir / "validation.json", out, default=str)
        return self._mark(it_dir, "validation", out)

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
        stages = {s: self._done(it_dir, s) for s in ("rollouts", "verifier", "relabel", "generator", "validation")}
        roll = [Trajectory.from_row(r) for r in _read_jsonl(it_dir / "rollouts.jsonl")]
        from agents.bon import accuracy_by_turn

        return {
            "iteration": it,
            "generator": str(it_dir / "generator"),
            "verifier": str(it_dir / "verifier"),
            "rollout_accuracy": sum(t.success for t in roll) / max(1, len(roll)),
            "rollout_accuracy_by_turn": accuracy_by_turn(roll, self.config.rollout.max_turns),
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
        try:
            self._plots(iterations)
        except ImportError:  # matplotlib is optional for the library
            logger.warning("matplotlib is not installed: no report plots")
        return report

    def _plots(self, iterations: list[dict[str, Any]]) -> None:
        import matplotlib

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
        fig.savefig(self.run_dir / "report_accuracy.png", dpi=100)
        plt.close(fig)

        fig, ax = plt.subplots(figsize=(5, 3.5))
        for i in iterations:
            turns = i["rollout_accuracy_by_turn"]
            ax.plot(range(1, len(turns) + 1), turns, "o-", label=f"iter {i['iteration']} rollouts")
            if i["validation_accuracy_by_turn"]:
                v = i["validation_accuracy_by_turn"]
                ax.plot(range(1, len(v) + 1), v, "^--", label=f"iter {i['iteration']} validation BoN")
        ax.set_xlabel("turn")
        ax.set_xticks(range(1, self.config.rollout.max_turns + 1))
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1)
        ax.legend()
        ax.set_title("accuracy per turn")
        fig.tight_layout()
        fig.savefig(self.run_dir / "report_turns.png", dpi=100)
        plt.close(fig)
