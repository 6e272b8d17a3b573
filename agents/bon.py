"""Multi-turn Best-of-N inference (µCODE Algorithm 2), and the episode engine it runs on.

At each turn every active episode samples N candidates, runs each on the PUBLIC tests (one
sandbox batch for all episodes), and a selector picks one:

- ``"pt+lv"`` (default): prefer candidates that pass the public tests, break ties by verifier;
- ``"pt"``: public tests only (ties broken by a seeded random draw);
- ``"lv"``: verifier score only;
- ``"random"``: a seeded uniform draw.

The pick is executed in the environment (public + private, via ``mucode_env.step_batch``): the
episode stops when it passes the public tests or at t = T, else the pick and its feedback are
appended to the chat. The score of an episode is the oracle (private tests) of its final pick.
N = 1 uses greedy decoding, as in the paper. ``repeats`` runs independent searches per problem
and averages them (the reference code uses 10). Private results never reach the prompts.

>>> res = best_of_n(policy, "MuCode-MBPP-v0", BoNConfig(n=5), verifier=v, split="test")  # doctest: +SKIP
>>> res.accuracy, res.n_problems  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from agents.evaluate import per_turn_accuracy
from agents.policy import Policy, SamplingParams
from agents.records import Trajectory, TurnRecord

__all__ = ["SELECTORS", "BoNConfig", "BoNResult", "best_of_n", "run_episodes", "make_envs", "derive_seed"]

SELECTORS = ("pt+lv", "pt", "lv", "random")
ScoreFn = Callable[[Sequence[str], Sequence[str]], list[float]]


def derive_seed(*parts: Any) -> int:
    """A 31-bit seed derived from ``parts`` (stable across runs and platforms)."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


@dataclass(frozen=True)
class BoNConfig:
    """Multi-turn Best-of-N settings (paper: N = 5, temperature 0.7, T = 3, PT+LV)."""

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

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.selector not in SELECTORS:
            raise ValueError(f"selector must be one of {SELECTORS}, got {self.selector!r}")
        if self.max_turns < 1 or self.repeats < 1:
            raise ValueError(f"max_turns and repeats must be >= 1, got {self.max_turns}, {self.repeats}")

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


def make_envs(env_id: str, problem_ids: Sequence[str] | None, copies: int, *, sandbox=None, **env_kwargs):
    """``copies`` environments per problem (one per episode), sharing one sandbox.

    Problems are loaded once; each env gets its single problem through ``problems=``.
    """
    import gymnasium as gym

    import mucode_env

    sb = sandbox if sandbox is not None else mucode_env.shared_sandbox()
    probe = gym.make(env_id, problem_ids=tuple(problem_ids) if problem_ids is not None else None, **env_kwargs)
    problems = list(probe.unwrapped.problems)
    probe.close()
    envs = []
    for p in problems:
        for _ in range(copies):
            envs.append(gym.make(env_id, problems=[p], sandbox=sb, **env_kwargs))
    return envs, problems


def _pick(selector: str, passed: list[bool], scores: list[float] | None, rng: random.Random) -> int:
    n = len(passed)
    if selector == "random":
        return rng.randrange(n)
    if selector == "lv":
        best = max(scores)  # type: ignore[arg-type]
        return min(i for i in range(n) if scores[i] == best)  # type: ignore[index]
    pool = [i for i in range(n) if passed[i]] or list(range(n))
    if selector == "pt":
        return pool[rng.randrange(len(pool))]
    best = max(scores[i] for i in pool)  # type: ignore[index]
    return min(i for i in pool if scores[i] == best)  # type: ignore[index]


def run_episodes(
    policy: Policy,
    envs: Sequence[Any],
    *,
    n: int,
    selector: str,
    sampling: Callable[[int], SamplingParams],
    score_fn: ScoreFn | None = None,
    seed: int = 0,
    reset_seeds: Sequence[int] | None = None,
    env_id: str = "",
    policy_name: str = "",
    progress: bool = False,
    stats: dict[str, float] | None = None,
    sandbox=None,
) -> list[Trajectory]:
    """Run one multi-turn episode per env; at each turn choose among ``n`` candidates.

    With ``n == 1`` this is plain multi-turn sampling (the rollouts of Algorithm 1). The
    episodes advance in lock-step: one ``policy.generate`` call and one sandbox batch per turn.

    Returns:
        One :class:`Trajectory` per env (in env order) holding the executed picks.
    """
    import mucode_env
    from mucode_env import extract_code, step_batch, to_messages

    stats = stats if stats is not None else {}
    if n > 1 and selector in ("pt+lv", "lv") and score_fn is None:
        raise ValueError(f"selector {selector!r} needs a verifier: pass score_fn (Verifier.score)")
    obs_list, prompts = [], []
    for i, env in enumerate(envs):
        obs, _ = env.reset(seed=reset_seeds[i] if reset_seeds is not None else derive_seed(seed, "reset", i))
        obs_list.append(obs)
        prompts.append(obs["prompt"])
    trajs = [
        Trajectory(problem_id=o["problem_id"], env_id=env_id, prompt=o["prompt"], turns=[], sample_index=i, seed=seed,
                   sampling={}, policy_name=policy_name)
        for i, o in enumerate(obs_list)
    ]
    active = list(range(len(envs)))
    sb = None
    t = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(envs), desc=f"episodes (N={n}, {selector})", leave=False)
    while active:
        params = sampling(derive_seed(seed, "turn", t))
        params = SamplingParams(**{**asdict(params), "n": n})
        chats = [to_messages(obs_list[i]) for i in active]
        t0 = time.perf_counter()
        gens = policy.generate(chats, params)
        stats["generate_s"] = stats.get("generate_s", 0.0) + time.perf_counter() - t0
        stats["completion_tokens"] = stats.get("completion_tokens", 0) + sum(g.completion_tokens for gs in gens for g in gs)
        stats["candidates"] = stats.get("candidates", 0) + sum(len(gs) for gs in gens)
        picks: list[int] = []
        if n > 1:
            if sb is None:
                sb = sandbox or getattr(envs[active[0]].unwrapped, "sandbox", None) or mucode_env.shared_sandbox()
            jobs, owners = [], []
            codes = [[extract_code(g.text) for g in gs] for gs in gens]
            for k, i in enumerate(active):
                problem = envs[i].unwrapped.problem
                for j, code in enumerate(codes[k]):
                    if code.strip():
                        jobs.append(sb.problem_job(problem, code, "public"))
                        owners.append((k, j))
            t0 = time.perf_counter()
            results = sb.execute(jobs) if jobs else []
            stats["exec_s"] = stats.get("exec_s", 0.0) + time.perf_counter() - t0
            passed = [[False] * len(gs) for gs in gens]
            for (k, j), r in zip(owners, results):
                passed[k][j] = bool(r.passed)
            scores: list[list[float]] | None = None
            if selector in ("pt+lv", "lv"):
                flat_p = [prompts[i] for k, i in enumerate(active) for _ in gens[k]]
                flat_r = [g.text for gs in gens for g in gs]
                t0 = time.perf_counter()
                flat_s = score_fn(flat_p, flat_r)  # type: ignore[misc]
                stats["verifier_s"] = stats.get("verifier_s", 0.0) + time.perf_counter() - t0
                stats["verifier_programs"] = stats.get("verifier_programs", 0) + len(flat_r)
                scores, c = [], 0
                for gs in gens:
                    scores.append(list(flat_s[c : c + len(gs)]))
                    c += len(gs)
            for k, i in enumerate(active):
                rng = random.Random(derive_seed(seed, "pick", i, t))
                picks.append(_pick(selector, passed[k], scores[k] if scores else None, rng))
        else:
            picks = [0] * len(active)
        actions = [gens[k][picks[k]].text for k in range(len(active))]
        t0 = time.perf_counter()
        steps = step_batch([envs[i] for i in active], actions)
        stats["exec_s"] = stats.get("exec_s", 0.0) + time.perf_counter() - t0
        still = []
        for k, (i, (obs, _reward, term, trunc, info)) in enumerate(zip(active, steps)):
            g = gens[k][picks[k]]
            trajs[i].turns.append(
                TurnRecord(
                    response=actions[k],
                    code=info["code"],
                    feedback=info["feedback"],
                    public_passed=bool(info["public_passed"]),
                    private_passed=bool(info["private_passed"]),
                    status=str(info["status"]),
                    prompt_tokens=int(g.prompt_tokens),
                    completion_tokens=int(g.completion_tokens),
                )
            )
            obs_list[i] = obs
            if term or trunc:
                if bar is not None:
                    bar.update(1)
            else:
                still.append(i)
        active = still
        t += 1
    if bar is not None:
        bar.close()
    for tr in trajs:
        tr.sampling = asdict(sampling(seed))
    return trajs


def best_of_n(
    policy: Policy,
    env_id: str,
    config: BoNConfig,
    *,
    verifier: Any | None = None,
    problem_ids: Sequence[str] | None = None,
    policy_name: str = "",
    sandbox=None,
    **env_kwargs: Any,
) -> BoNResult:
    """Multi-turn Best-of-N over the problems of ``env_id`` (Algorithm 2).

    Args:
        policy: the generator.
        env_id: a MuCode environment id (``"MuCode-MBPP-v0"``).
        config: N, selector, T, sampling, repeats.
        verifier: an object with ``score(prompts, responses)`` (a :class:`agents.verifier.Verifier`)
            or a plain callable; needed by ``"pt+lv"``/``"lv"`` when N > 1.
        problem_ids: restrict to these problems.
        env_kwargs: more ``gym.make`` kwargs (``split``, ``data_dir``, ``termination``...).

    Returns:
        A :class:`BoNResult`; its trajectories hold the picks, repeat-major.
    """
    score_fn = None
    if verifier is not None:
        score_fn = verifier.score if hasattr(verifier, "score") else verifier
    if config.needs_verifier and score_fn is None:
        raise ValueError(f"selector {config.selector!r} with N={config.n} needs a verifier")
    env_kwargs = {"max_turns": config.max_turns, **env_kwargs}
    envs, problems = make_envs(env_id, problem_ids, 1, sandbox=sandbox, **env_kwargs)
    all_trajs: list[Trajectory] = []
    stats: dict[str, float] = {}
    t0 = time.perf_counter()
    try:
        for r in range(config.repeats):
            rseed = derive_seed(config.seed, "repeat", r)
            trajs = run_episodes(
                policy, envs, n=config.n, selector=config.selector, sampling=config.sampling, score_fn=score_fn,
                seed=rseed, env_id=env_id, policy_name=policy_name, progress=config.progress, stats=stats,
                sandbox=sandbox,
            )
            for tr in trajs:
                tr.seed = rseed
                tr.sample_index = r
            all_trajs.extend(trajs)
    finally:
        for env in envs:
            env.close()
    stats["wall_s"] = time.perf_counter() - t0
    if stats.get("generate_s"):
        stats["rollout_tokens_per_s"] = stats.get("completion_tokens", 0) / stats["generate_s"]
    if stats.get("verifier_s"):
        stats["verifier_programs_per_s"] = stats.get("verifier_programs", 0) / stats["verifier_s"]
    per_problem: dict[str, float] = {}
    counts: dict[str, int] = {}
    for tr in all_trajs:
        per_problem[tr.problem_id] = per_problem.get(tr.problem_id, 0.0) + (1.0 if tr.success else 0.0)
        counts[tr.problem_id] = counts.get(tr.problem_id, 0) + 1
    per_problem = {pid: v / counts[pid] for pid, v in per_problem.items()}
    return BoNResult(
        trajectories=all_trajs,
        per_problem=per_problem,
        accuracy_by_turn=accuracy_by_turn(all_trajs, config.max_turns),
        config=asdict(config),
        stats=stats,
    )


def accuracy_by_turn(trajectories: Sequence[Trajectory], max_turns: int) -> list[float]:
    """Accuracy had every episode stopped after turn t (t = 1..max_turns), averaged per problem
    first (independent repeats of a problem count once)."""
    per_problem: dict[str, list[Trajectory]] = {}
    for tr in trajectories:
        if tr.turns:
            per_problem.setdefault(tr.problem_id, []).append(tr)
    if not per_problem:
        return [0.0] * max_turns
    curves = [per_turn_accuracy(trs, max_turns) for trs in per_problem.values()]
    return [sum(c[t] for c in curves) / len(curves) for t in range(max_turns)]