"""Score a solution on a benchmark problem outside an episode: the oracle of one turn.

``mucode serve`` (its native and SandboxFusion endpoints) and the verl/SkyRL reward
(:func:`mucode_env.integrations.verl.compute_score`) judge through here, exactly like the
environment does: the program extracted from the text runs on the public and on the private
tests as two separate executions, and the score is 1.0 iff both pass. A sandbox failure raises
``SandboxError``; it is never scored as the model's failure.

Problems are named by a reference ``"benchmark/split/problem_id"`` (``"mbpp/test/MBPP/11"``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from mucode_env.env import NO_CODE_FEEDBACK
from mucode_env.errors import SandboxError, UnknownProblemError, did_you_mean
from mucode_env.extract import extract_code
from mucode_env.problem import Problem
from mucode_env.problem_jobs import TEST_SETS, problem_job
from mucode_env.sandbox import ExecResult, Job, Sandbox, Status



@dataclass(frozen=True)
class ProblemRef:
    """``benchmark/split/problem_id``: which problem a row or a request is about."""

    benchmark: str
    split: str
    problem_id: str

    def __post_init__(self) -> None:
        for name in ("benchmark", "split", "problem_id"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"ProblemRef.{name} must be a non-empty str, got {value!r}")
        if "/" in self.benchmark or "/" in self.split:
            raise ValueError(f"benchmark and split may not contain '/', got {self.benchmark!r}, {self.split!r}")

    def __str__(self) -> str:
        return f"{self.benchmark}/{self.split}/{self.problem_id}"

    @classmethod
    def parse(cls, text: str) -> "ProblemRef":
        """``"mbpp/test/MBPP/11"`` -> ProblemRef("mbpp", "test", "MBPP/11")."""
        parts = text.split("/", 2) if isinstance(text, str) else []
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"a problem reference is 'benchmark/split/problem_id' (e.g. 'mbpp/test/MBPP/11'), "
                             f"got {text!r}")
        return cls(*parts)


class ProblemStore:
    """Benchmark splits loaded once and shared between threads.

    ``add`` registers your own problems under a benchmark/split name (custom sets, tests).
    """

    def __init__(self, data_dir: str | os.PathLike[str] | None = None) -> None:
        self.data_dir = data_dir
        self._splits: dict[tuple[str, str], list[Problem]] = {}
        self._by_id: dict[tuple[str, str], dict[str, Problem]] = {}
        self._lock = threading.Lock()

    def add(self, benchmark: str, split: str, problems: Sequence[Problem]) -> None:
        problems = list(problems)
        if not problems:
            raise ValueError(f"ProblemStore.add needs at least one problem for {benchmark}/{split}")
        with self._lock:
            self._splits[(benchmark, split)] = problems
            self._by_id[(benchmark, split)] = {p.id: p for p in problems}

    def problems(self, benchmark: str, split: str) -> list[Problem]:
        """The split's problems (loaded on first use with ``load_problems``)."""
        key = (benchmark, split)
        with self._lock:  # one load per split, even when many requests ask at once
            if key not in self._splits:
                from mucode_env.datasets import load_problems

                problems = load_problems(benchmark, split, data_dir=self.data_dir)
                self._splits[key] = problems
                self._by_id[key] = {p.id: p for p in problems}
            return self._splits[key]

    def get(self, ref: ProblemRef | str) -> Problem:
        ref = ProblemRef.parse(ref) if isinstance(ref, str) else ref
        self.problems(ref.benchmark, ref.split)
        by_id = self._by_id[(ref.benchmark, ref.split)]
        if ref.problem_id not in by_id:
            raise UnknownProblemError(f"unknown problem id {ref.problem_id!r} in {ref.benchmark}/{ref.split}."
                                      f"{did_you_mean(ref.problem_id, by_id)}")
        return by_id[ref.problem_id]


@dataclass(frozen=True)
class Score:
    """The oracle of one solution: 1.0 iff its program passes the public and the private tests."""

    score: float
    code: str
    public: ExecResult
    private: ExecResult

    @property
    def public_passed(self) -> bool:
        return self.public.passed

    @property
    def private_passed(self) -> bool:
        return self.private.passed


def score_jobs(problem: Problem, solution: str) -> tuple[str, list[Job]]:
    """The program extracted from ``solution`` and its two jobs ([] when there is no code)."""
    if not isinstance(solution, str):
        raise TypeError(f"the solution must be the model's text (str), got {type(solution).__name__}")
    code = extract_code(solution)
    if not code.strip():
        return code, []
    return code, [problem_job(problem, code, which) for which in TEST_SETS]


def finish_score(problem: Problem, code: str, results: Sequence[ExecResult]) -> Score:
    """The Score from ``score_jobs``' results (no results: no code, a failed turn)."""
    if not results:
        failed = ExecResult(Status.COMPILE_ERROR, message=NO_CODE_FEEDBACK)
        return Score(0.0, code, failed, failed)
    public, private = results
    for result in (public, private):
        if result.status is Status.SANDBOX_ERROR:
            raise SandboxError(f"the sandbox failed on {problem.id}: {result.message}")
    return Score(float(public.passed and private.passed), code, public, private)


def score_solutions(sandbox: Sandbox, items: Sequence[tuple[Problem, str]]) -> list[Score]:
    """Score many (problem, solution) pairs in one sandbox batch."""
    prepared = [score_jobs(problem, solution) for problem, solution in items]
    flat = [job for _, jobs in prepared for job in jobs]
    results = sandbox.execute(flat) if flat else []
    scores, cursor = [], 0
    for (problem, _), (code, jobs) in zip(items, prepared):
        scores.append(finish_score(problem, code, results[cursor: cursor + len(jobs)]))
        cursor += len(jobs)
    return scores
