"""The configuration of a µCODE run: what to train on, with which models and backends, and the
hyperparameters of every stage; presets ``paper()`` (Table 6) and ``cpu()``."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from agents.mucode.expert import ExpertConfig
from agents.mucode.verifier import VerifierConfig
from agents.ray_episodes import RayEpisodesConfig
from agents.training.launch import LaunchConfig
from agents.training.sft import SFTRunConfig

__all__ = ["MuCodeConfig", "RolloutSettings", "ValidationSettings"]


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
        launch: how the two training stages run: in this process (default), in a child process
            (``LaunchConfig(isolated=True)``, the presets: its memory is returned before the next
            generation server starts) or as a multi-GPU job
            (``LaunchConfig.accelerate("deepspeed_zero3", num_processes=8)``; see
            :mod:`agents.training.launch`).
        ray: play the rollout and validation episodes on Ray actors
            (:class:`agents.ray_episodes.RayEpisodesConfig`); each actor builds its replica of the
            stage's generator (``make_policy(backend, model, **backend_kwargs[backend])``), so the
            run directory (fine-tuned generators, verifiers) must be on a file system every node
            sees. ``endpoints`` serve stages whose backend is ``openai`` (the base model).
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
    ray: RayEpisodesConfig | None = None

    def __post_init__(self) -> None:
        if isinstance(self.ray, dict):
            object.__setattr__(self, "ray", RayEpisodesConfig.from_dict(self.ray))
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
            launch=LaunchConfig(isolated=True),
            notes=("paper preset: Table 6 hyperparameters",),
        )
        return replace(base, **overrides)

    @classmethod
    def cpu(cls, **overrides: Any) -> "MuCodeConfig":
        """A 2-core CPU preset on the embedded small models, on the fast CPU lane: rollouts and
        validation through a managed vLLM server (CPU build, all episodes in flight; it stops
        before each training stage), training in bf16 autocast where the CPU computes bf16
        (``SFTRunConfig.bf16`` / ``VerifierConfig.bf16`` resolve so). Needs
        ``bash scripts/setup_vllm.sh``; ``rollout_backend="llama_cpp"`` and
        ``finetuned_backend="llama_cpp"`` give the lighter lane without it. Deviations from the paper:

        - generator Qwen2.5-Coder-0.5B (its GGUF dequantised once and served in bf16; fine-tuned
          generators are served as they are saved), verifier base SmolLM2-135M (the paper uses
          the generator's base: a 0.5B scorer costs ~95 s per 4x512-token step here);
        - 4 rollouts per problem (not 15), 512 new tokens (not 1000), max_train_problems=40;
        - verifier: 8 pairs per prompt (not 32), max length 1024 (not 2048), lr 1e-5 (not 1e-6:
          far fewer steps), batch 16, a resumable checkpoint every 4 steps (about 12 minutes at
          the head-to-head's size; 1.6 GB: weights and AdamW state);
        - generator: max length 1536 (not 4096), batch 8 in micro-batches of 1 (no padding: 37%
          less memory and 1.25x the tokens/s of micro-batches of 2), lr 1e-5, 1 epoch (not 2), LoRA r=16,
          a resumable checkpoint every 4 steps;
        - validation: 20 problems, N=3.
        """
        base = cls(
            generator="qwen2.5-coder-0.5b",
            verifier_base="smollm2-135m",
            rollout_backend="vllm",
            finetuned_backend="vllm",
            max_train_problems=40,
            rollout=RolloutSettings(4, 0.7, 1.0, 512, 3, 160),
            verifier=VerifierConfig(loss="bt", pairs_per_prompt=8, learning_rate=1e-5, epochs=2, batch_size=16,
                                    per_device_batch_size=4, max_length=1024, checkpoint_steps=4),
            expert=ExpertConfig(1.0, 0.1),
            # micro-batches of 1 (no padding): on the longest relabeled examples 11.4 GiB and 20.4
            # tokens/s against 18.3 GiB and 16.3 tokens/s with 2 (fp32, Zen 3), same global batch
            # a resumable checkpoint (LoRA adapter and its optimizer: a few MB) every 4 steps, about
            # 6 minutes of CPU training: a stage that outlasts a session resumes there
            sft=SFTRunConfig(learning_rate=1e-5, epochs=1, batch_size=8, per_device_batch_size=1, max_length=1536,
                             lora=True, lora_r=16, lora_alpha=32, checkpoint_steps=4),
            validation=ValidationSettings(enabled=True, split="validation", max_problems=20, n=3,
                                          max_new_tokens=512),
            iterations=2,
            launch=LaunchConfig(isolated=True),
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


