"""The multi-turn code generation environment (the paper's MDP, section 1).

One episode is one problem. At each turn the agent sends text; the program extracted from it
runs on the public tests (whose outcome becomes the next observation) and on the private tests
(whose outcome only reaches ``info`` and the reward).
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from mucode_env.errors import EpisodeError, SandboxError, UnknownProblemError, did_you_mean
from mucode_env.extract import extract_code
from mucode_env.problem import Problem
from mucode_env.prompts import feedback_message, first_user_message
from mucode_env.feedback import render_feedback
from mucode_env.problem_jobs import problem_job
from mucode_env.sandbox import ExecResult, Executor, Job, Sandbox, SandboxConfig, Status
from mucode_env.spaces import UnicodeText

TERMINATIONS = ("public", "oracle")
REWARD_MODES = ("final", "per_turn")
MAX_ACTION_CHARS = 200_000
NO_CODE_FEEDBACK = "No code found in the response. Return the implementation in a ```python code block."
TOO_LONG_FEEDBACK = "The response is too long ({n} characters; the limit is {limit})."


@dataclass(frozen=True)
class EnvConfig:
    """Settings of a MuCode environment (the kwargs of ``gym.make``).

    Attributes:
        benchmark: "mbpp", "humaneval", "codecontests" or "apps".
        split: dataset split ("test", "train", "validation", ...).
        max_turns: T, the horizon (paper: 3).
        termination: "public" (the paper: stop when the public tests pass) or "oracle" (the
            reference code: stop when public and private tests pass).
        reward_mode: "final" (the oracle of the last turn, at the step that ends the episode)
            or "per_turn" (the oracle of every turn's code).
        problem_ids: restrict the episodes to these problems (None: the whole split).
        data_dir: offline data directory (else ``$MUCODE_DATA_DIR``, else the HF hub).
        feedback_chars: cap on the feedback text.
        max_action_chars: longer responses are scored as failures without running.
    """

    benchmark: str
    split: str = "test"
    max_turns: int = 3
    termination: str = "public"
    reward_mode: str = "final"
    problem_ids: tuple[str, ...] | None = None
    data_dir: str | None = None
    feedback_chars: int = 3000
    max_action_chars: int = MAX_ACTION_CHARS

    def __post_init__(self) -> None:
        if not isinstance(self.max_turns, int) or self.max_turns < 1:
            raise ValueError(f"max_turns must be a positive int, got {self.max_turns!r}")
        if self.termination not in TERMINATIONS:
            raise ValueError(f"termination must be one of {TERMINATIONS}, got {self.termination!r}")
        if self.reward_mode not in REWARD_MODES:
            raise ValueError(f"reward_mode must be one of {REWARD_MODES}, got {self.reward_mode!r}")
        if self.feedback_chars < 40:
            raise ValueError(f"feedback_chars must be >= 40, got {self.feedback_chars}")
        if self.max_action_chars < 1:
            raise ValueError(f"max_action_chars must be >= 1, got {self.max_action_chars}")
        if self.problem_ids is not None:
            if isinstance(self.problem_ids, str):
                raise TypeError("problem_ids must be a sequence of ids, not a single string")
            object.__setattr__(self, "problem_ids", tuple(self.problem_ids))


_shared_lock = threading.Lock()
_shared_sandbox: Sandbox | None = None


def shared_sandbox() -> Sandbox:
    """The process-wide default sandbox that environments share (started on first use)."""
    global _shared_sandbox
    with _shared_lock:
        if _shared_sandbox is None or _shared_sandbox._closed:
            _shared_sandbox = Sandbox(SandboxConfig())
            atexit.register(_shared_sandbox.close)
        return _shared_sandbox


def to_messages(obs: dict[str, Any]) -> list[dict[str, str]]:
    """Render an observation as chat messages: the problem, then (response, feedback) turns.

    >>> to_messages({"prompt": "Q", "history": ({"response": "A", "code": "", "feedback": "F"},)})
    [{'role': 'user', 'content': 'Q'}, {'role': 'assistant', 'content': 'A'}, {'role': 'user', 'content': 'Feedback:\\nF'}]
    """
    messages = [{"role": "user", "content": obs["prompt"]}]
    for turn in obs["history"]:
        messages.append({"role": "assistant", "content": turn["response"]})
        messages.append({"role": "user", "content": feedback_message(turn["feedback"])})
    return messages


def resolve_problem_id(problem_ids: Sequence[str], problem_id: str | int, where: str = "") -> str:
    """The id in ``problem_ids`` that ``problem_id`` names: the id itself (``"MBPP/11"``), or a bare
    task number (``11`` or ``"11"``) when exactly one id ends in it.

    Raises:
        UnknownProblemError: no such problem (the message suggests the closest id).
    """
    key = str(problem_id)
    if key in problem_ids:
        return key
    matches = [pid for pid in problem_ids if pid.rsplit("/", 1)[-1] == key]
    if len(matches) == 1:
        return matches[0]
    if matches:
        hint = f" Several problems end in {key!r} ({', '.join(matches[:4])}): pass the full id."
    else:
        hint = did_you_mean(key, problem_ids) or (f" Ids look like {problem_ids[0]!r}." if problem_ids else "")
    raise UnknownProblemError(f"unknown problem id {problem_id!r}{f' in {where}' if where else ''}.{hint}")


def select_problems(problems: Sequence[Problem], problem_ids: Sequence[str | int] | None = None,
                    limit: int | None = None, where: str = "") -> list[Problem]:
    """``problems`` restricted to ``problem_ids`` (in that order; bare task numbers allowed), then
    to the first ``limit``.

    Raises:
        UnknownProblemError: an id is not among ``problems``.
        ValueError: nothing is left, or ``limit < 1``.
    """
    if isinstance(problem_ids, str):
        raise TypeError("problem_ids must be a sequence of ids, not a single string")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 or None, got {limit}")
    selected = list(problems)
    if problem_ids is not None:
        by_id = {p.id: p for p in selected}
        ids = list(by_id)
        selected = [by_id[resolve_problem_id(ids, pid, where)] for pid in problem_ids]
    if limit is not None:
        selected = selected[:limit]
    if not selected:
        raise ValueError(f"no problems{f' in {where}' if where else ''}: check the split, problem_ids and limit")
    return selected


class MuCodeEnv(gym.Env[dict, str]):
    """Multi-turn code generation on one benchmark split.

    Observation (dict): ``problem_id`` (str), ``turn`` (turns taken, 0 after reset), ``prompt``
    (the paper's first user message: task and public tests), ``history`` (a tuple of
    ``{"response", "code", "feedback"}`` per turn). It never contains private-test text or
    results. ``to_messages(obs)`` renders it for a chat model.

    Action: the model's text (str). The program is its first ```python block (see
    ``mucode_env.extract``). Responses longer than ``max_action_chars`` or without any code are
    scored as failed turns without running; a non-str action raises TypeError.

    Reward: the oracle R(x, y) = 1 iff the program passes public and private tests, at the step
    that ends the episode ("final") or at every step ("per_turn").

    ``terminated``: the public tests pass ("public") or all tests pass ("oracle").
    ``truncated``: the turn limit T was reached first.

    ``info`` after ``step``: ``problem_id, turn, code, feedback, status`` (public run status value),
    ``public_passed, private_passed, oracle``, and the ExecResults ``public_result`` and
    ``private_result``. Private outcomes appear only here and in the reward.

    A sandbox failure raises ``SandboxError`` (after a retry); it is never scored as a failure.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 1}

    def __init__(self, benchmark: str = "mbpp", split: str = "test", max_turns: int = 3, termination: str = "public",
                 reward_mode: str = "final", problem_ids: Sequence[str] | None = None, data_dir: str | None = None,
                 feedback_chars: int = 3000, max_action_chars: int = MAX_ACTION_CHARS,
                 sandbox: Executor | SandboxConfig | None = None, problems: Sequence[Problem] | None = None,
                 render_mode: str | None = None) -> None:
        self.config = EnvConfig(benchmark, split, max_turns, termination, reward_mode,
                                tuple(problem_ids) if problem_ids is not None else None, data_dir,
                                feedback_chars, max_action_chars)
        if render_mode not in (None, "ansi"):
            raise ValueError(f"render_mode must be None or 'ansi', got {render_mode!r}")
        self.render_mode = render_mode
        if problems is None:
            from mucode_env.datasets import load_problems

            problems = load_problems(benchmark, split, data_dir=data_dir)
        self.problems = select_problems(problems, self.config.problem_ids, where=f"{benchmark}/{split}")
        self._by_id = {p.id: p for p in self.problems}
        if isinstance(sandbox, Executor):  # the local Sandbox, a RaySandbox, any execute/close object
            self.sandbox, self._owns_sandbox = sandbox, False
        elif isinstance(sandbox, SandboxConfig):
            self.sandbox, self._owns_sandbox = Sandbox(sandbox), True
        elif sandbox is None:
            self.sandbox, self._owns_sandbox = None, False  # the shared sandbox, started lazily
        else:
            raise TypeError(f"sandbox must be a Sandbox (or another Executor such as RaySandbox), a SandboxConfig "
                            f"or None, got {type(sandbox).__name__}")
        longest = max(len(first_user_message(p)) for p in self.problems)
        text = UnicodeText(max_length=max(longest, self.config.max_action_chars, 1 << 20))
        self.observation_space = gym.spaces.Dict({
            "problem_id": UnicodeText(max_length=256),
            "turn": gym.spaces.Discrete(max_turns + 1),
            "prompt": text,
            "history": gym.spaces.Sequence(gym.spaces.Dict({"response": text, "code": text, "feedback": text}),
                                           stack=False),
        })
        self.action_space = UnicodeText(max_length=self.config.max_action_chars)
        self._problem: Problem | None = None
        self._prompt = ""
        self._history: list[dict[str, str]] = []
        self._done = True

    def resolve_problem_id(self, problem_id: str | int) -> str:
        """The id of this env's problem named ``problem_id`` (see :func:`resolve_problem_id`)."""
        return resolve_problem_id(list(self._by_id), problem_id, f"{self.config.benchmark}/{self.config.split}")

    def run_public(self, responses: Sequence[str]) -> list[ExecResult]:
        """Run candidate responses on the current problem's PUBLIC tests, without stepping.

        For choosing among candidates (Best-of-N): the episode does not advance and nothing is
        recorded; only public outcomes are returned, as in the observation. A response without
        code (or longer than ``max_action_chars``) gets a COMPILE_ERROR result without running.
        :func:`run_public_batch` does the same for many environments in one sandbox batch.
        """
        return run_public_batch([self], [responses])[0]

    def _public_jobs(self, responses: Sequence[str]) -> list[Job | None]:
        problem = self.problem
        codes = [extract_code(r) if len(r) <= self.config.max_action_chars else "" for r in responses]
        return [problem_job(problem, code, "public") if code.strip() else None for code in codes]

    def _sandbox(self) -> Executor:
        if self.sandbox is None:
            self.sandbox = shared_sandbox()
        return self.sandbox

    # ---- Gymnasium API -----------------------------------------------------------------------
    @property
    def problem(self) -> Problem:
        if self._problem is None:
            raise EpisodeError("no episode yet: call reset() first")
        return self._problem

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        """Start an episode. ``options={"problem_id": id}`` picks a problem; otherwise the env's
        own RNG (seeded by ``seed``) draws one uniformly."""
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = set(options) - {"problem_id", "problem_index"}
        if unknown:
            raise ValueError(f"unknown reset option(s) {sorted(unknown)}; allowed: 'problem_id', 'problem_index'")
        if "problem_id" in options:
            self._problem = self._by_id[self.resolve_problem_id(options["problem_id"])]
        elif "problem_index" in options:
            index = options["problem_index"]
            if not isinstance(index, (int, np.integer)) or not 0 <= index < len(self.problems):
                raise IndexError(f"problem_index must be in [0, {len(self.problems)}), got {index!r}")
            self._problem = self.problems[int(index)]
        else:
            self._problem = self.problems[int(self.np_random.integers(len(self.problems)))]
        self._prompt = first_user_message(self._problem)
        self._history = []
        self._done = False
        return self._observation(), {"problem_id": self._problem.id, "turn": 0}

    def step(self, action: str) -> tuple[dict, float, bool, bool, dict]:
        jobs = self.prepare_step(action)
        results = self._sandbox().execute(jobs) if jobs else []
        return self.finish_step(results)

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        lines = [f"[{self.problem.id}] turn {len(self._history)}/{self.config.max_turns}", self._prompt]
        for i, turn in enumerate(self._history, 1):
            lines += [f"--- turn {i} code ---", turn["code"], f"--- turn {i} feedback ---", turn["feedback"]]
        return "\n".join(lines)

    def close(self) -> None:
        if self._owns_sandbox and self.sandbox is not None:
            self.sandbox.close()
        super().close()

    # ---- the two halves of step (so that many envs can share one sandbox batch) --------------
    def prepare_step(self, action: str) -> list[Job]:
        """Validate the action and return the sandbox jobs it needs ([] if it cannot run)."""
        if self._done:
            raise EpisodeError("the episode has ended (or never started): call reset() before step()")
        if not isinstance(action, str):
            raise TypeError(f"the action must be the model's text (str), got {type(action).__name__}")
        self._pending_action = action
        self._pending_code = "" if len(action) > self.config.max_action_chars else extract_code(action)
        if not self._pending_code.strip():
            return []
        return [problem_job(self.problem, self._pending_code, which) for which in ("public", "private")]

    def finish_step(self, results: Sequence[ExecResult]) -> tuple[dict, float, bool, bool, dict]:
        """Turn the sandbox results of ``prepare_step``'s jobs into the step's 5-tuple."""
        action, code = self._pending_action, self._pending_code
        problem = self.problem
        if results:
            public, private = results
            for result in (public, private):
                if result.status is Status.SANDBOX_ERROR:
                    raise SandboxError(f"the sandbox failed on {problem.id}: {result.message}")
            feedback = render_feedback(public, problem.public_tests, self.config.feedback_chars)
        else:
            too_long = len(action) > self.config.max_action_chars
            message = (TOO_LONG_FEEDBACK.format(n=len(action), limit=self.config.max_action_chars)
                       if too_long else NO_CODE_FEEDBACK)
            public = private = ExecResult(Status.COMPILE_ERROR, message=message)
            feedback = message
        public_passed, private_passed = public.passed, private.passed
        oracle = float(public_passed and private_passed)
        stored_response = action if len(action) <= self.config.max_action_chars else action[: self.config.max_action_chars]
        self._history.append({"response": stored_response, "code": code, "feedback": feedback})
        turn = len(self._history)
        terminated = public_passed if self.config.termination == "public" else bool(oracle)
        truncated = not terminated and turn >= self.config.max_turns
        self._done = terminated or truncated
        if self.config.reward_mode == "per_turn":
            reward = oracle
        else:
            reward = oracle if self._done else 0.0
        info = {
            "problem_id": problem.id, "turn": turn, "code": code, "feedback": feedback,
            "status": public.status.value, "public_passed": public_passed, "private_passed": private_passed,
            "oracle": oracle, "public_result": public, "private_result": private,
        }
        return self._observation(), reward, terminated, truncated, info

    def _observation(self) -> dict:
        return {
            "problem_id": self.problem.id,
            "turn": len(self._history),
            "prompt": self._prompt,
            "history": tuple(dict(turn) for turn in self._history),
        }


def _mucode_envs(envs: Sequence[gym.Env], what: str) -> list[MuCodeEnv]:
    raw = [env.unwrapped for env in envs]
    for env in raw:
        if not isinstance(env, MuCodeEnv):
            raise TypeError(f"{what} takes MuCode environments, got {type(env).__name__}")
    if len({id(env._sandbox()) for env in raw}) > 1:
        raise ValueError(f"{what} needs environments that share one Sandbox (pass the same sandbox=)")
    return raw


def run_public_batch(envs: Sequence[gym.Env], candidates: Sequence[Sequence[str]]) -> list[list[ExecResult]]:
    """:meth:`MuCodeEnv.run_public` for many environments: every candidate of every env runs on
    its env's public tests in one sandbox batch. Returns one result list per env.

    Raises:
        SandboxError: the sandbox itself failed (never turned into a failed candidate).
    """
    if len(envs) != len(candidates):
        raise ValueError(f"got {len(envs)} envs but {len(candidates)} candidate lists")
    raw = _mucode_envs(envs, "run_public_batch")
    job_lists = [env._public_jobs(responses) for env, responses in zip(raw, candidates)]
    flat = [job for jobs in job_lists for job in jobs if job is not None]
    results = iter(raw[0]._sandbox().execute(flat) if flat else [])
    no_code = ExecResult(Status.COMPILE_ERROR, message=NO_CODE_FEEDBACK)
    out = []
    for env, jobs in zip(raw, job_lists):
        row = [next(results) if job is not None else no_code for job in jobs]
        failed = next((r for r in row if r.status is Status.SANDBOX_ERROR), None)
        if failed is not None:
            raise SandboxError(f"the sandbox failed on {env.problem.id}: {failed.message}")
        out.append(row)
    return out


def step_batch(envs: Sequence[gym.Env], actions: Sequence[str]) -> list[tuple[dict, float, bool, bool, dict]]:
    """Step many environments at once, running all their programs in one sandbox batch.

    The environments must share one executor (the default shared Sandbox, or the same ``sandbox=``).
    """
    if len(envs) != len(actions):
        raise ValueError(f"got {len(envs)} envs but {len(actions)} actions")
    raw = _mucode_envs(envs, "step_batch")
    job_lists = [env.prepare_step(action) for env, action in zip(raw, actions)]
    flat = [job for jobs in job_lists for job in jobs]
    results = raw[0]._sandbox().execute(flat) if flat else []
    out, cursor = [], 0
    for env, jobs in zip(raw, job_lists):
        out.append(env.finish_step(results[cursor: cursor + len(jobs)]))
        cursor += len(jobs)
    return out
