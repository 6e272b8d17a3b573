"""The one episode engine: a policy plays multi-turn episodes in MuCode environments.

Every path that plays episodes runs here: rollouts (:mod:`agents.rollout`, with storage and
resume), evaluation (:mod:`agents.evaluate`), multi-turn Best-of-N (:mod:`agents.bon`), the µCODE
trainer's rollout and validation stages and the RLEF-style PPO (token capture).

Each round, every live episode's chat goes to the policy in ONE ``generate`` call, and all their
programs run in ONE sandbox batch (:func:`mucode_env.step_batch`). Hooks cover what the callers
differ in:

- ``n`` candidates per turn and a ``select`` function (Best-of-N): candidates first run on the
  public tests in one batch (:func:`mucode_env.run_public_batch`), optionally scored by a
  verifier, and the selected one is the action;
- ``max_live``: how many episodes are in flight; finished ones are replaced from the queue
  (rollouts), or all start together and advance in lock-step (``None``: Best-of-N, PPO);
- ``on_turn``: sees every executed turn with the generation behind it (PPO keeps the tokens);
- ``on_done``: sees every finished trajectory (the rollout store writes it); ``on_round`` runs
  after every round.

Seeds: ``sampling(call)`` gives the parameters (seed included) of the ``call``-th generate call;
every seed in the project is :func:`derive_seed` of the run's seed and named parts. A policy whose
``generate`` takes a ``seeds`` keyword also gets one seed per chat, :func:`episode_seed` of the run's
seed, the episode's problem and sample and the turn: its samples then depend on the episode alone,
not on which other episodes share the call, so spreading episodes over processes or machines
(:mod:`agents.ray_episodes`) changes nothing in the results.

>>> trajs = play_episodes(policy, env_factory, [EpisodeSpec("MBPP/11")],
...                       sampling=lambda call: SamplingParams(seed=derive_seed(0, "turn", call)))  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from agents.policy import Generation, Policy, SamplingParams
from agents.records import Trajectory, TurnRecord

__all__ = [
    "Candidates", "EpisodeSpec", "EpisodeStats", "ScoreFn", "Selector", "StepOutcome", "derive_seed",
    "accepts_seeds", "episode_seed", "play_episodes",
]

ScoreFn = Callable[[Sequence[str], Sequence[str]], list[float]]


def derive_seed(*parts: Any) -> int:
    """A 31-bit seed derived from ``parts`` (stable across runs, processes and platforms).

    >>> derive_seed(0, "turn", 1) == derive_seed(0, "turn", 1) != derive_seed(0, "turn", 2)
    True
    """
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


def episode_seed(seed: int, problem_id: str, sample_index: int, turn: int) -> int:
    """The seed of one episode's ``turn`` (0-based) in a run seeded ``seed``: what a policy that takes
    ``seeds`` samples that episode's turn with, wherever and with whichever others it is played."""
    return derive_seed(seed, problem_id, sample_index, turn)


@dataclass(frozen=True)
class EpisodeSpec:
    """One episode to play: a problem and which of its samples this is."""

    problem_id: str
    sample_index: int = 0


@dataclass(frozen=True)
class Candidates:
    """What a selector sees for one episode at one turn.

    Attributes:
        episode: the episode's index in the run (position in ``specs``).
        turn: 0-based turn.
        prompt: the problem's first user message.
        generations: the ``n`` sampled candidates.
        public_passed: per candidate, whether it passes the public tests.
        scores: per candidate, the verifier's score (None without a score function; an entry is
            None for a candidate ``score_only`` left out).
    """

    episode: int
    turn: int
    prompt: str
    generations: list[Generation]
    public_passed: list[bool]
    scores: list[float | None] | None


Selector = Callable[[Candidates], int]
# (public_passed, texts) -> the candidates whose verifier score the selector reads
ScoreOnly = Callable[[Sequence[bool], Sequence[str]], Sequence[int]]


@dataclass(frozen=True)
class StepOutcome:
    """An executed turn as ``on_turn`` sees it: the env's 5-tuple and the generation behind it."""

    episode: int
    spec: EpisodeSpec
    generation: Generation
    observation: dict
    reward: float
    terminated: bool
    truncated: bool
    info: dict


@dataclass
class EpisodeStats:
    """Throughput of one run (only the episodes played in this run, not resumed ones)."""

    episodes: int = 0
    resumed_episodes: int = 0
    generation_calls: int = 0
    generations: int = 0  # sampled responses, every candidate included
    prompt_tokens: int = 0
    completion_tokens: int = 0
    executions: int = 0  # programs sent to the sandbox: executed turns and candidates with code
    generation_s: float = 0.0
    execution_s: float = 0.0
    verifier_s: float = 0.0
    verifier_programs: int = 0
    wall_s: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.generation_s if self.generation_s > 0 else 0.0

    @property
    def executions_per_s(self) -> float:
        return self.executions / self.execution_s if self.execution_s > 0 else 0.0

    @property
    def episodes_per_min(self) -> float:
        return 60.0 * self.episodes / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def verifier_programs_per_s(self) -> float:
        return self.verifier_programs / self.verifier_s if self.verifier_s > 0 else 0.0

    def add(self, other: "EpisodeStats") -> None:
        """Add the counters and busy seconds of ``other`` (a part of the run played elsewhere) to these;
        ``wall_s`` is left alone: the run's wall time is measured where the parts are gathered."""
        for name, value in asdict(other).items():
            if name != "wall_s":
                setattr(self, name, getattr(self, name) + value)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "tokens_per_s": self.tokens_per_s, "executions_per_s": self.executions_per_s,
                "episodes_per_min": self.episodes_per_min, "verifier_programs_per_s": self.verifier_programs_per_s}


@dataclass
class _Live:
    index: int
    spec: EpisodeSpec
    env: Any
    obs: dict
    turns: list[TurnRecord] = field(default_factory=list)


def _optional_keywords(policy: Policy) -> set[str]:
    """Which of the engine's optional ``generate`` keywords the policy takes: ``progress``
    (``callback(generations, tokens)`` within a call), ``episodes`` (the episode index of every
    chat, for policies that keep per-episode state such as token histories or a server affinity)
    and ``seeds`` (one :func:`episode_seed` per chat, for samples independent of the batch)."""
    try:
        parameters = inspect.signature(policy.generate).parameters
    except (TypeError, ValueError):
        return set()
    return {"progress", "episodes", "seeds"} & set(parameters)


def accepts_seeds(policy: Policy) -> bool:
    """Whether ``policy`` samples each chat from its own episode seed (see :func:`episode_seed`)."""
    return "seeds" in _optional_keywords(policy)


class _Progress:
    """A tqdm bar of finished episodes whose postfix shows the generations and tokens of the turn
    in flight (a first turn of many episodes takes minutes on a CPU)."""

    def __init__(self, enabled: bool, total: int, initial: int, desc: str) -> None:
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="ep")
        self.turn_total = 0
        self.turn_tokens = 0

    def start_turn(self, turn: int, generations: int) -> None:
        self.turn, self.turn_total, self.turn_done, self.turn_tokens = turn, generations, 0, 0
        self._show()

    def generated(self, done: int, tokens: int) -> None:
        """The policy's progress hook: ``done`` generations and ``tokens`` new tokens so far."""
        self.turn_done, self.turn_tokens = done, tokens
        self._show()

    def _show(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"round {self.turn + 1}: {self.turn_done}/{self.turn_total} generations, "
                                     f"{self.turn_tokens} tokens")

    def in_flight(self, generations: int, tokens: int) -> None:
        """Continuous play: generations in flight now, tokens generated so far."""
        if self.bar is not None:
            self.bar.set_postfix_str(f"{generations} generations in flight, {tokens} tokens", refresh=False)

    def finished(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def play_episodes(
    policy: Policy,
    env_factory: Callable[[], Any],
    specs: Sequence[EpisodeSpec],
    *,
    sampling: Callable[[int], SamplingParams],
    n: int = 1,
    select: Selector | None = None,
    score_fn: ScoreFn | None = None,
    score_only: ScoreOnly | None = None,
    max_live: int | None = None,
    on_turn: Callable[[StepOutcome], None] | None = None,
    on_done: Callable[[Trajectory], None] | None = None,
    on_round: Callable[[EpisodeStats], None] | None = None,
    stats: EpisodeStats | None = None,
    env_id: str = "",
    seed: int = 0,
    sampling_record: dict[str, Any] | None = None,
    policy_name: str | None = None,
    progress: bool = False,
    progress_total: int | None = None,
    progress_desc: str = "episodes",
    episode_ids: Sequence[int] | None = None,
    continuous: bool | None = None,
) -> list[Trajectory]:
    """Play one episode per spec and return the trajectories in spec order.

    Args:
        policy: the generator (:class:`agents.policy.Policy`).
        env_factory: makes a MuCode environment that can reset to any spec's problem; all of them
            must share one sandbox (the default shared one, or the same ``sandbox=``).
            Environments are reused across episodes.
        specs: the episodes.
        sampling: ``call -> SamplingParams`` of the ``call``-th generate call (its ``n`` is
            replaced by ``n``).
        n: candidates per turn; with ``n > 1`` a ``select`` function is required.
        select: picks the executed candidate (see :class:`Candidates`).
        score_fn: ``score(prompts, responses)``; when given, candidates are scored for ``select``
            (each distinct text of an episode's turn once).
        score_only: ``(public_passed, texts) -> indices``: the candidates whose score ``select``
            can read (default: all); the others are not scored. A verifier forward pass costs about
            as much as generating the candidate on a CPU, so a selector that reads few scores
            should say so (:func:`agents.bon.scored_candidates`).
        max_live: episodes in flight (None: all at once, in lock-step).
        on_turn / on_done / on_round: hooks (see the module docstring).
        stats: accumulates throughput (a fresh one when None).
        env_id, seed, sampling_record, policy_name: recorded in every :class:`Trajectory`.
        progress: show a progress bar; ``progress_total`` (default ``len(specs)``) and
            ``progress_desc`` set its total and label (resumed episodes count as done).
        episode_ids: the index of each spec's episode in the whole run (default: its position),
            as selectors, ``on_turn`` and policies see it: a part of a run played elsewhere keeps
            the indices, and so the picks, of the whole run.
        continuous: play every live episode on its own thread, each sending its next turn as soon
            as its last one was executed, instead of in rounds that wait for their longest
            generation. For servers that batch requests as they come (vLLM, any OpenAI-compatible
            one), whose batch then stays full instead of draining at the end of every round.
            ``None`` (default): on when the policy says its ``generate`` may be called from many
            threads at once (``concurrent_generate = True``) and ``max_live`` is set. The
            trajectories are the same either way for policies that take ``seeds``; ``sampling`` is
            then called with the episode's turn index, ``score_fn`` scores one episode's
            candidates at a time, and ``on_turn``/``on_done``/``on_round`` are called one at a time
            (``on_round`` after every turn).

    Raises:
        ValueError: ``n > 1`` without ``select``, or a policy that returns the wrong number of
            generations.
        SandboxError: the sandbox itself failed.
    """
    from mucode_env import step_batch, to_messages

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if n > 1 and select is None:
        raise ValueError("n > 1 candidates per turn needs a select function")
    if max_live is not None and max_live < 1:
        raise ValueError(f"max_live must be >= 1 or None, got {max_live}")
    stats = stats if stats is not None else EpisodeStats()
    name = policy_name if policy_name is not None else str(getattr(policy, "name", type(policy).__name__))
    record = dict(sampling_record) if sampling_record is not None else asdict(sampling(0))
    keywords = _optional_keywords(policy)
    ids = list(range(len(specs))) if episode_ids is None else list(episode_ids)
    if len(ids) != len(specs):
        raise ValueError(f"episode_ids has {len(ids)} entries for {len(specs)} specs")
    total = progress_total if progress_total is not None else len(specs)
    bar = _Progress(progress, total, total - len(specs), progress_desc)
    width = max_live or max(1, len(specs))
    if continuous is None:
        continuous = bool(getattr(policy, "concurrent_generate", False)) and max_live is not None
    if continuous:
        return _play_continuous(policy, env_factory, specs, ids, width, sampling, n, select, score_fn, score_only,
                                keywords, stats, bar, record, name, env_id, seed, on_turn, on_done, on_round)
    done: list[Trajectory | None] = [None] * len(specs)
    queue = list(reversed(list(enumerate(specs))))
    free_envs: list[Any] = []
    live: list[_Live] = []
    call = 0
    start = time.perf_counter()
    try:
        while queue or live:
            while queue and len(live) < width:
                index, spec = queue.pop()
                env = free_envs.pop() if free_envs else env_factory()
                obs, _ = env.reset(options={"problem_id": spec.problem_id})
                live.append(_Live(index, spec, env, obs))
            chats = [to_messages(ep.obs) for ep in live]
            bar.start_turn(call, len(chats) * n)
            t0 = time.perf_counter()
            extra = _episode_keywords(keywords, live, ids, seed)
            if "progress" in keywords:
                extra["progress"] = bar.generated
            gens = policy.generate(chats, _with_n(sampling(call), n), **extra)
            stats.generation_s += time.perf_counter() - t0
            _count_generations(stats, gens, len(chats), n, name)
            picks = [0] * len(live) if n == 1 else _select(live, ids, gens, select, score_fn, score_only, stats)
            actions = [gens[k][picks[k]] for k in range(len(live))]
            t0 = time.perf_counter()
            steps = step_batch([ep.env for ep in live], [g.text for g in actions])
            stats.execution_s += time.perf_counter() - t0
            still: list[_Live] = []
            for ep, g, (obs, reward, terminated, truncated, info) in zip(live, actions, steps):
                stats.executions += int(bool(info["code"].strip()))  # turns without code are not run
                ep.turns.append(_turn_record(g, info))
                ep.obs = obs
                if on_turn is not None:
                    on_turn(StepOutcome(ids[ep.index], ep.spec, g, obs, float(reward), bool(terminated),
                                        bool(truncated), info))
                if terminated or truncated:
                    traj = _trajectory(ep, env_id, seed, record, name)
                    done[ep.index] = traj
                    stats.episodes += 1
                    free_envs.append(ep.env)
                    bar.finished()
                    if on_done is not None:
                        on_done(traj)
                else:
                    still.append(ep)
            live = still
            call += 1
            if on_round is not None:
                on_round(stats)
    finally:
        bar.close()
        for env in free_envs + [ep.env for ep in live]:
            env.close()
        stats.wall_s += time.perf_counter() - start
    return done  # type: ignore[return-value]


def _play_continuous(policy: Policy, env_factory: Callable[[], Any], specs: Sequence[EpisodeSpec], ids: list[int],
                     width: int, sampling: Callable[[int], SamplingParams], n: int, select: Selector | None,
                     score_fn: ScoreFn | None, score_only: ScoreOnly | None, keywords: set[str],
                     stats: EpisodeStats,
                     bar: "_Progress", record: dict[str, Any], name: str, env_id: str, seed: int,
                     on_turn: Callable[[StepOutcome], None] | None, on_done: Callable[[Trajectory], None] | None,
                     on_round: Callable[[EpisodeStats], None] | None) -> list[Trajectory]:
    """:func:`play_episodes` with ``continuous``: ``width`` threads, each playing one episode at a
    time, turn after turn. Shared state (queue, environments, stats, hooks) is touched under one
    lock; the first error stops every thread after its current turn and is raised here."""
    import threading
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    from mucode_env import step_batch, to_messages

    lock = threading.Lock()
    # one verifier call at a time (a model with its own threads)
    scorer = None if score_fn is None else _serialised(score_fn, threading.Lock())
    queue = list(reversed(list(enumerate(specs))))
    free_envs: list[Any] = []
    all_envs: list[Any] = []
    done: list[Trajectory | None] = [None] * len(specs)
    stop = threading.Event()
    in_flight = [0]  # generate calls waiting for their answer

    def play_one(index: int, spec: EpisodeSpec, env: Any) -> None:
        ep = _Live(index, spec, env, env.reset(options={"problem_id": spec.problem_id})[0])
        while not stop.is_set():
            with lock:
                in_flight[0] += 1
                bar.in_flight(in_flight[0], stats.completion_tokens)
            gens = policy.generate([to_messages(ep.obs)], _with_n(sampling(len(ep.turns)), n),
                                   **_episode_keywords(keywords, [ep], ids, seed))
            part = EpisodeStats()  # what this turn adds, merged under the lock
            _count_generations(part, gens, 1, n, name)
            choice = 0 if n == 1 else _select([ep], ids, gens, select, scorer, score_only, part)[0]
            g = gens[0][choice]
            t0 = time.perf_counter()
            ((obs, reward, terminated, truncated, info),) = step_batch([env], [g.text])
            part.execution_s += time.perf_counter() - t0
            part.executions += int(bool(info["code"].strip()))  # turns without code are not run
            ep.turns.append(_turn_record(g, info))
            ep.obs = obs
            finished = terminated or truncated
            with lock:
                in_flight[0] -= 1
                stats.add(part)
                if on_turn is not None:
                    on_turn(StepOutcome(ids[index], spec, g, obs, float(reward), bool(terminated), bool(truncated),
                                        info))
                if finished:
                    traj = _trajectory(ep, env_id, seed, record, name)
                    done[index] = traj
                    stats.episodes += 1
                    bar.finished()
                    if on_done is not None:
                        on_done(traj)
                bar.in_flight(in_flight[0], stats.completion_tokens)
                if on_round is not None:
                    on_round(stats)
            if finished:
                return

    def worker() -> None:
        while not stop.is_set():
            with lock:
                if not queue:
                    return
                index, spec = queue.pop()
                env = free_envs.pop() if free_envs else None
            if env is None:
                env = env_factory()
                with lock:
                    all_envs.append(env)
            try:
                play_one(index, spec, env)
            finally:
                with lock:
                    free_envs.append(env)

    start = time.perf_counter()
    pool = ThreadPoolExecutor(max_workers=min(width, max(1, len(specs))), thread_name_prefix="mucode-episode")
    complete = False
    try:
        futures = [pool.submit(worker) for _ in range(min(width, len(specs)))]
        pending = set(futures)
        while pending:  # short waits, so that Ctrl-C reaches this thread
            _, pending = wait(pending, timeout=0.5, return_when=FIRST_EXCEPTION)
            failed = [f for f in futures if f.done() and f.exception() is not None]
            if failed:
                raise failed[0].exception()  # type: ignore[misc]
        complete = True
    finally:
        stop.set()
        # After an error or Ctrl-C the threads still waiting for a generation are not waited for:
        # they stop after it (at once when the caller then stops the server).
        pool.shutdown(wait=complete, cancel_futures=True)
        bar.close()
        with lock:
            for env in all_envs if complete else free_envs:
                env.close()
        elapsed = time.perf_counter() - start
        # generation and execution overlap here: the generation time is the run's wall time
        stats.generation_s += elapsed
        stats.wall_s += elapsed
    return done  # type: ignore[return-value]


def _with_n(params: SamplingParams, n: int) -> SamplingParams:
    """``params`` asking for ``n`` samples per chat."""
    return params if params.n == n else SamplingParams(**{**asdict(params), "n": n})


def _episode_keywords(keywords: set[str], live: Sequence[_Live], ids: list[int], seed: int) -> dict[str, Any]:
    """The optional ``generate`` keywords the policy takes (see :func:`_optional_keywords`) for
    these episodes' chats: their indices in the run and their per-episode seeds."""
    extra: dict[str, Any] = {}
    if "episodes" in keywords:
        extra["episodes"] = [ids[ep.index] for ep in live]
    if "seeds" in keywords:
        extra["seeds"] = [episode_seed(seed, ep.spec.problem_id, ep.spec.sample_index, len(ep.turns)) for ep in live]
    return extra


def _count_generations(stats: EpisodeStats, gens: list[list[Generation]], chats: int, n: int, name: str) -> None:
    """Check a ``generate`` answer's shape and count it."""
    if len(gens) != chats or any(len(g) != n for g in gens):
        raise ValueError(f"policy {name} returned {[len(g) for g in gens]} generations for {chats} chats with n={n}")
    stats.generation_calls += 1
    stats.generations += sum(len(g) for g in gens)
    stats.prompt_tokens += sum(g.prompt_tokens for gs in gens for g in gs)
    stats.completion_tokens += sum(g.completion_tokens for gs in gens for g in gs)


def _turn_record(g: Generation, info: dict) -> TurnRecord:
    """The executed turn as a trajectory keeps it."""
    return TurnRecord(
        response=g.text, code=info["code"], feedback=info["feedback"],
        public_passed=bool(info["public_passed"]), private_passed=bool(info["private_passed"]),
        status=str(info["status"]), prompt_tokens=int(g.prompt_tokens), completion_tokens=int(g.completion_tokens),
    )


def _trajectory(ep: _Live, env_id: str, seed: int, record: dict[str, Any], name: str) -> Trajectory:
    """A finished episode's record."""
    return Trajectory(problem_id=ep.spec.problem_id, env_id=env_id, prompt=ep.obs["prompt"], turns=ep.turns,
                      sample_index=ep.spec.sample_index, seed=seed, sampling=dict(record), policy_name=name)


def _serialised(score_fn: ScoreFn, lock: Any) -> ScoreFn:
    def score(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        with lock:
            return score_fn(prompts, responses)
    return score


def _select(live: list[_Live], ids: list[int], gens: list[list[Generation]], select: Selector | None,
            score_fn: ScoreFn | None, score_only: ScoreOnly | None, stats: EpisodeStats) -> list[int]:
    """Run every candidate on its episode's public tests (one batch), score the ones the selector
    reads (each distinct text once), pick one each."""
    from mucode_env import extract_code, run_public_batch

    t0 = time.perf_counter()
    public = run_public_batch([ep.env for ep in live], [[g.text for g in gs] for gs in gens])
    stats.execution_s += time.perf_counter() - t0
    stats.executions += sum(bool(extract_code(g.text).strip()) for gs in gens for g in gs)
    passed_by_episode = [[r.passed for r in rs] for rs in public]
    scores: list[list[float | None]] | None = None
    if score_fn is not None:
        # each episode's distinct texts once (per episode, so that the counts do not depend on
        # which episodes share a call) -> its position in the call
        slots: dict[tuple[int, str], int] = {}
        wanted: list[list[int | None]] = []  # per episode and candidate: its slot, None if not scored
        for e, (gs, passed) in enumerate(zip(gens, passed_by_episode)):
            texts = [g.text for g in gs]
            keep = range(len(gs)) if score_only is None else set(score_only(passed, texts))
            wanted.append([slots.setdefault((e, t), len(slots)) if k in keep else None
                           for k, t in enumerate(texts)])
        flat: list[float] = []
        if slots:
            t0 = time.perf_counter()
            flat = list(score_fn([live[e].obs["prompt"] for e, _ in slots], [t for _, t in slots]))
            stats.verifier_s += time.perf_counter() - t0
            stats.verifier_programs += len(slots)
            if len(flat) != len(slots):
                raise ValueError(f"score_fn returned {len(flat)} scores for {len(slots)} candidates")
        scores = [[None if slot is None else flat[slot] for slot in row] for row in wanted]
    return [select(Candidates(ids[ep.index], len(ep.turns), ep.obs["prompt"], gs, passed,
                              scores[k] if scores is not None else None))  # type: ignore[misc]
            for k, (ep, gs, passed) in enumerate(zip(live, gens, passed_by_episode))]
