"""The Instruct baseline: the base model as it is, evaluated like every other agent.

Instruct is configuration, not code: the base model run through the shared multi-turn Best-of-N
engine (:func:`agents.bon.best_of_n`) in the paper's three settings (Table 1):

- single-turn, N = 1 (greedy, T = 1),
- multi-turn, N = 1 (greedy, T = 3),
- multi-turn + BoN, N = 5 (temperature 0.7, T = 3, the PT+LV selector).

:class:`EvalSetting` names one such setting; :func:`evaluate_setting` runs any policy in one, so
the benchmark (:mod:`baselines.bench`) evaluates every agent with the same code, seeds and budget.

>>> from baselines.instruct import PAPER_SETTINGS, evaluate_setting
>>> [s.name for s in PAPER_SETTINGS]
['single-turn', 'multi-turn', 'multi-turn+BoN']
>>> res = evaluate_setting(policy, "MuCode-MBPP-v0", PAPER_SETTINGS[1], split="test")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["EvalSetting", "PAPER_SETTINGS", "InstructConfig", "paper_settings", "bon_config", "evaluate_setting",
           "evaluate_instruct"]

_SELECTORS = ("pt+lv", "pt", "lv", "random")


@dataclass(frozen=True)
class EvalSetting:
    """One evaluation setting: the horizon T, the candidates per turn N and the selector.

    N = 1 decodes greedily (the paper's N = 1 rows); N > 1 samples at the run's temperature.
    """

    name: str
    max_turns: int
    n: int = 1
    selector: str = "pt+lv"

    def __post_init__(self) -> None:
        if self.max_turns < 1 or self.n < 1:
            raise ValueError(f"max_turns and n must be >= 1, got {self.max_turns}, {self.n}")
        if self.selector not in _SELECTORS:
            raise ValueError(f"selector must be one of {_SELECTORS}, got {self.selector!r}")

    @property
    def needs_verifier(self) -> bool:
        return self.n > 1 and self.selector in ("pt+lv", "lv")


def paper_settings(max_turns: int = 3, bon_n: int = 5, selector: str = "pt+lv") -> tuple[EvalSetting, ...]:
    """The paper's Table 1 settings for horizon ``max_turns`` and BoN width ``bon_n``."""
    return (
        EvalSetting("single-turn", 1, 1, selector),
        EvalSetting("multi-turn", max_turns, 1, selector),
        EvalSetting("multi-turn+BoN", max_turns, bon_n, selector),
    )


PAPER_SETTINGS = paper_settings()


@dataclass(frozen=True)
class InstructConfig:
    """How Instruct is run: the base model, its backend, and the shared sampling budget.

    Attributes:
        model: registry name, GGUF file or HF directory of the base model.
        backend: ``agents.backends`` name (``"llama_cpp"`` on CPU, ``"transformers"``, ...).
        settings: the evaluation settings (default: the paper's three).
        temperature / max_new_tokens: sampling for N > 1 (N = 1 is greedy).
        repeats: independent searches per problem, averaged (the reference code uses 10).
        seed: the run's seed.
        verifier: a verifier directory for the PT+LV / LV selectors (None: those settings fall
            back to the PT selector, and the result records it).
    """

    model: str = "qwen2.5-coder-0.5b"
    backend: str = "llama_cpp"
    settings: tuple[EvalSetting, ...] = PAPER_SETTINGS
    temperature: float = 0.7
    max_new_tokens: int = 1000
    repeats: int = 1
    seed: int = 0
    verifier: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "settings", tuple(
            s if isinstance(s, EvalSetting) else EvalSetting(**s) for s in self.settings))
        if not self.settings:
            raise ValueError("settings is empty")


def bon_config(setting: EvalSetting, *, temperature: float = 0.7, max_new_tokens: int = 1000, repeats: int = 1,
               seed: int = 0, has_verifier: bool = True, progress: bool = True, ray: Any = None,
               max_live: int | None = None):
    """The :class:`agents.bon.BoNConfig` of ``setting``; without a verifier PT+LV/LV become PT."""
    from agents.bon import BoNConfig

    selector = setting.selector if (has_verifier or not setting.needs_verifier) else "pt"
    return BoNConfig(n=setting.n, selector=selector, max_turns=setting.max_turns, temperature=temperature,
                     max_new_tokens=max_new_tokens, repeats=repeats, seed=seed, progress=progress, ray=ray,
                     max_live=max_live)


def evaluate_setting(policy: Any, env_id: str, setting: EvalSetting, *, verifier: Any = None,
                     problem_ids: Sequence[str] | None = None, temperature: float = 0.7, max_new_tokens: int = 1000,
                     repeats: int = 1, seed: int = 0, policy_name: str = "", progress: bool = True, sandbox: Any = None,
                     ray: Any = None, max_live: int | None = None, store_dir: Any = None, **env_kwargs: Any):
    """Run ``policy`` in ``setting`` on ``env_id`` (multi-turn BoN with the shared engine).

    ``ray``: an :class:`agents.ray_episodes.RayEpisodesConfig` to play the episodes on Ray actors
    (then ``policy`` is a :class:`agents.backends.PolicySpec` or a picklable policy).
    ``max_live`` / ``store_dir``: episodes in flight and where finished ones are saved so that an
    interrupted evaluation resumes (:func:`agents.bon.best_of_n`).

    Returns:
        The :class:`agents.bon.BoNResult`; ``result.config["selector"]`` is the selector actually
        used (PT when the setting wanted a verifier and none was given).
    """
    from agents.bon import best_of_n

    cfg = bon_config(setting, temperature=temperature, max_new_tokens=max_new_tokens, repeats=repeats, seed=seed,
                     has_verifier=verifier is not None, progress=progress, ray=ray, max_live=max_live)
    return best_of_n(policy, env_id, cfg, verifier=verifier if cfg.needs_verifier else None,
                     problem_ids=problem_ids, policy_name=policy_name, sandbox=sandbox, store_dir=store_dir,
                     **env_kwargs)


def evaluate_instruct(config: InstructConfig, env_id: str, *, policy: Any = None,
                      problem_ids: Sequence[str] | None = None, **env_kwargs: Any) -> dict[str, Any]:
    """Evaluate the base model in every setting of ``config``; returns ``{setting name: BoNResult}``.

    ``policy`` overrides building one from ``config.model``/``config.backend`` (tests pass a
    scripted policy).
    """
    if policy is None:
        from agents.backends import make_policy

        policy = make_policy(config.backend, config.model)
    verifier = None
    if config.verifier is not None and any(s.needs_verifier for s in config.settings):
        from agents.mucode.verifier import Verifier

        verifier = Verifier.load(config.verifier)
    return {
        s.name: evaluate_setting(policy, env_id, s, verifier=verifier, problem_ids=problem_ids,
                                 temperature=config.temperature, max_new_tokens=config.max_new_tokens,
                                 repeats=config.repeats, seed=config.seed, policy_name=f"instruct:{config.model}",
                                 progress=config.progress, **env_kwargs)
        for s in config.settings
    }

