"""Multi-turn Best-of-N inference (µCODE Algorithm 2).

At each turn every active episode samples N candidates, runs each on the PUBLIC tests (one
sandbox batch for all episodes), and a selector picks one:

- ``"pt+lv"`` (default): prefer candidates that pass the public tests, break ties by verifier;
- ``"pt"``: public tests only (ties broken by a seeded random draw);
- ``"lv"``: verifier score only;
- ``"random"``: a seeded uniform draw.

The pick is executed in the environment (public + private, via ``mucode_env.step_batch``): the
episode stops when it passes the public tests or at t = T, else the pick and its feedback are
appended to the chat. Episodes run on the shared engine (:mod:`agents.episodes`), in lock-step. The score of an episode is the oracle (private tests) of its final pick.
N = 1 uses greedy decoding, as in the paper. ``repeats`` runs independent searches per problem
and averages them (the reference code uses 10). Private results never reach the prompts.

>>> res = best_of_n(policy, "MuCode-MBPP-v0", BoNConfig(n=5), verifier=v, split="test")  # doctest: +SKIP
>>> res.accuracy, res.n_problems  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

from agents.backends.spec import PolicySpec
from agents.episodes import Candidates, EpisodeSpec, EpisodeStats, derive_seed, play_episodes
from agents.policy import Policy, SamplingParams
from agents.ray_episodes import RayEpisodesConfig
from agents.records import Trajectory, jsonable
from mucode_env.metrics import accuracy_by_turn

__all__ = ["SELECTORS", "BoNConfig", "BoNResult", "best_of_n", "pick"]

SELECTORS = ("pt+lv", "pt", "lv", "random")


@dataclass(frozen=True)
class BoNConfig:
    """Multi-turn Best-of-N settings (paper: N = 5, temperature 0.7, T = 3, PT+LV).

    ``ray``: play the episodes on Ray actors (:class:`agents.ray_episodes.RayEpisodesConfig`);
    the verifier then scores in the actors (a :class:`agents.mucode.verifier.Verifier` travels
    as its path and is loaded there once per run).

    ``max_live``: episodes in flight; finished ones are replaced from the queue. ``None`` (the
    default) starts every episode at once and advances them in lock-step. A bound lets a store
    (``best_of_n(store_dir=...)``) save episodes as they finish instead of only at the end of
    each turn of the whole benchmark; with a policy that takes per-episode seeds (every shipped
    backend) the results do not depend on it.
    """

    n: int = 5
    selector: str = "pt+lv"
    max_turns: int = 3
    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 1000
    repeats: int = 1
    seed: int = 0
    greedy_when_n1: bool = True
    progress: bool = True
    ray: RayEpisodesConfig | None = None
    max_live: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.ray, Mapping):
            object.__setattr__(self, "ray", RayEpisodesConfig.from_dict(self.ray))
        if self.ray is not None and not isinstance(self.ray, RayEpisodesConfig):
            raise ValueError(f"ray must be a RayEpisodesConfig or None, got {type(self.ray).__name__}")
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.selector not in SELECTORS:
            raise ValueError(f"selector must be one of {SELECTORS}, got {self.selector!r}")
        if self.max_turns < 1 or self.repeats < 1:
            raise ValueError(f"max_turns and repeats must be >= 1, got {self.max_turns}, {self.repeats}")
        if self.max_live is not None and self.max_live < 1:
            raise ValueError(f"max_live must be >= 1 or None, got {self.max_live}")

    def identity(self) -> dict[str, Any]:
        """What makes two runs' episodes the same experiment (a stored run resumes only under it);
        how they are played (``progress``, ``ray``, ``max_live``) is not part of it."""
        return {k: v for k, v in asdict(self).items() if k not in ("progress", "ray", "max_live")}

    @property
    def needs_verifier(self) -> bool:
        return self.selector in ("pt+lv", "lv") and self.n > 1

    def sampling(self, seed: int) -> SamplingParams:
        greedy = self.n == 1 and self.greedy_when_n1
        return SamplingParams(
            n=self.n,
            temperature=0.0 if greedy else self.temperature,
            top_p=self.top_p,
            max_new_tokens=self.max_new_tokens,
            seed=seed,
        )


@dataclass
class BoNResult:
    """Per-episode trajectories of the picks, and accuracies.

    ``per_problem[pid]`` is the mean oracle of the final pick over the repeats; ``accuracy`` is
    the mean over problems; ``accuracy_by_turn[t]`` is the accuracy had every episode stopped
    after turn t+1 (the oracle of its pick at turn min(t, last)).
    """

    trajectories: list[Trajectory]
    per_problem: dict[str, float]
    accuracy_by_turn: list[float]
    config: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)

    @property
    def n_problems(self) -> int:
        return len(self.per_problem)

    @property
    def accuracy(self) -> float:
        return sum(self.per_problem.values()) / len(self.per_problem) if self.per_problem else 0.0

    @property
    def n_correct(self) -> float:
        return sum(self.per_problem.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "n_problems": self.n_problems,
            "accuracy_by_turn": self.accuracy_by_turn,
            "per_problem": self.per_problem,
            "config": self.config,
            "stats": self.stats,
        }


def _verifier_name(verifier: Any) -> str | None:
    """How a stored run names its verifier: its checkpoint path where it has one."""
    if verifier is None:
        return None
    path = getattr(verifier, "path", None)
    return str(path) if path is not None else getattr(verifier, "__qualname__", type(verifier).__qualname__)


def _pool(selector: str, passed: Sequence[bool]) -> list[int]:
    """The candidates ``selector`` chooses among: PT and PT+LV keep those that pass the public
    tests (all when none does)."""
    every = list(range(len(passed)))
    if selector in ("pt", "pt+lv"):
        return [i for i in every if passed[i]] or every
    return every


def scored_candidates(selector: str, passed: Sequence[bool], texts: Sequence[str]) -> list[int]:
    """The candidates whose verifier score can change ``selector``'s pick: the pool of LV and
    PT+LV, and only when it holds two or more distinct texts (otherwise the pick is its first).

    On a CPU a verifier forward pass costs about as much as generating the candidate; in the
    iteration-1 rollouts of the head-to-head, 350 of the 480 first-turn candidates needed one."""
    if selector not in ("lv", "pt+lv"):
        return []
    pool = _pool(selector, passed)
    return pool if len({texts[i] for i in pool}) > 1 else []


def pick(selector: str, candidates: Candidates, rng: random.Random) -> int:
    """The candidate ``selector`` chooses (ties: the lowest index; PT and random draw from ``rng``).
    LV and PT+LV read the scores of :func:`scored_candidates` only."""
    passed, scores = candidates.public_passed, candidates.scores
    n = len(passed)
    if selector == "random":
        return rng.randrange(n)
    pool = _pool(selector, passed)
    if selector == "pt":
        return pool[rng.randrange(len(pool))]
    ranked = scored_candidates(selector, passed, [g.text for g in candidates.generations])
    if not ranked:  # one distinct text in the pool
        return pool[0]
    best = max(scores[i] for i in ranked)  # type: ignore[index, type-var]
    return min(i for i in ranked if scores[i] == best)  # type: ignore[index]


def best_of_n(
    policy: Policy | PolicySpec,
    env_id: str,
    config: BoNConfig,
    *,
    verifier: Any | None = None,
    problem_ids: Sequence[str] | None = None,
    policy_name: str = "",
    sandbox=None,
    store_dir: str | os.PathLike | None = None,
    **env_kwargs: Any,
) -> BoNResult:
    """Multi-turn Best-of-N over the problems of ``env_id`` (Algorithm 2).

    Args:
        policy: the generator, or a :class:`~agents.backends.spec.PolicySpec` (built here, or in
            every Ray actor with ``config.ray``, where a picklable policy object also works).
        env_id: a MuCode environment id (``"MuCode-MBPP-v0"``).
        config: N, selector, T, sampling, repeats.
        verifier: an object with ``score(prompts, responses)`` (a :class:`agents.mucode.verifier.Verifier`)
            or a plain callable; needed by ``"pt+lv"``/``"lv"`` when N > 1.
        problem_ids: restrict to these problems.
        sandbox: the sandbox the environments share (default: the process-wide one); with
            ``config.ray`` each actor has its own (``RayEpisodesConfig.sandbox``).
        store_dir: save every finished episode there (:class:`agents.episode_store.EpisodeStore`)
            and, started again with the same directory, play only the episodes not yet saved: an
            interrupted evaluation resumes, with the same picks (episodes keep their indices) and,
            for policies that take per-episode seeds, the same samples. A directory made with
            another configuration, environment, policy name, verifier or problem list is refused.
        env_kwargs: more ``gym.make`` kwargs (``split``, ``data_dir``, ``termination``...).

    Returns:
        A :class:`BoNResult`; its trajectories hold the picks, repeat-major.
    """
    import gymnasium as gym

    from mucode_env import env_problems

    score_fn = None
    if verifier is not None:
        score_fn = verifier.score if hasattr(verifier, "score") else verifier
    if config.needs_verifier and score_fn is None:
        raise ValueError(f"selector {config.selector!r} with N={config.n} needs a verifier")
    problems = env_problems(env_id, split=env_kwargs.get("split"), problem_ids=problem_ids,
                            data_dir=env_kwargs.get("data_dir"))
    env_kwargs = {"max_turns": config.max_turns, **env_kwargs, "problems": problems}
    if sandbox is not None:
        if config.ray is not None:
            raise ValueError("best_of_n with config.ray takes no sandbox: each episode actor builds its own "
                             "(set RayEpisodesConfig.sandbox)")
        env_kwargs["sandbox"] = sandbox
    specs = [EpisodeSpec(p.id) for p in problems]
    store = None
    done: dict[tuple[str, int], Trajectory] = {}
    if store_dir is not None:
        from agents.episode_store import EpisodeStore

        identity = {**config.identity(), "env_id": env_id, "split": env_kwargs.get("split"),
                    "policy_name": policy_name, "verifier": _verifier_name(verifier),
                    "problem_ids": [p.id for p in problems]}
        store = EpisodeStore(store_dir, identity)
        done = store.load()  # keyed (problem_id, repeat): a repeat's trajectories carry it as sample_index
    stats = EpisodeStats(resumed_episodes=len(done))
    selector = config.selector  # what the select functions carry (to Ray actors too)
    with contextlib.ExitStack() as stack:
        if config.ray is not None:
            from agents.ray_episodes import RayEpisodes

            runner = stack.enter_context(RayEpisodes(config.ray, policy))
        elif isinstance(policy, PolicySpec):
            policy = policy.build()
        for r in range(config.repeats):
            rseed = derive_seed(config.seed, "repeat", r)
            # the episodes of this repeat still to play, with their indices in the whole repeat
            todo = [(i, spec) for i, spec in enumerate(specs) if (spec.problem_id, r) not in done]
            if not todo:
                continue

            def select(c: Candidates, rseed: int = rseed) -> int:
                return pick(selector, c, random.Random(derive_seed(rseed, "pick", c.episode, c.turn)))

            def finished(tr: Trajectory, r: int = r) -> None:
                tr.sample_index = r
                done[(tr.problem_id, r)] = tr
                if store is not None:
                    store.add(tr)

            play = dict(
                sampling=lambda t, rseed=rseed, make=config.sampling: make(derive_seed(rseed, "turn", t)),
                n=config.n, select=select if config.n > 1 else None,
                score_fn=score_fn if config.n > 1 and config.selector in ("pt+lv", "lv") else None,
                score_only=partial(scored_candidates, selector),
                max_live=config.max_live, on_done=finished,
                on_round=None if store is None else (lambda _: store.maybe_flush()),
                stats=stats, env_id=env_id, seed=rseed,
                sampling_record=jsonable(asdict(config.sampling(rseed))), policy_name=policy_name,
                progress=config.progress, progress_total=len(specs),
                progress_desc=f"episodes (N={config.n}, {config.selector})",
            )
            ids, pending = [i for i, _ in todo], [spec for _, spec in todo]
            try:
                if config.ray is not None:
                    runner.play(env_id, env_kwargs, pending, episode_ids=ids, **play)
                else:
                    play_episodes(policy, lambda: gym.make(env_id, disable_env_checker=True, **env_kwargs),
                                  pending, episode_ids=ids, **play)
            finally:
                if store is not None:
                    store.flush()
    all_trajs = [done[(spec.problem_id, r)] for r in range(config.repeats) for spec in specs]
    per_problem: dict[str, float] = {}
    counts: dict[str, int] = {}
    for tr in all_trajs:
        per_problem[tr.problem_id] = per_problem.get(tr.problem_id, 0.0) + (1.0 if tr.success else 0.0)
        counts[tr.problem_id] = counts.get(tr.problem_id, 0) + 1
    per_problem = {pid: v / counts[pid] for pid, v in per_problem.items()}
    return BoNResult(
        trajectories=all_trajs,
        per_problem=per_problem,
        accuracy_by_turn=accuracy_by_turn([[u.reward for u in tr.turns] for tr in all_trajs], config.max_turns,
                                          problem_ids=[tr.problem_id for tr in all_trajs]),
        config=asdict(config),
        stats=stats.to_dict(),
    )
