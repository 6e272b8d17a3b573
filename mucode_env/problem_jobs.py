"""A problem's tests as sandbox jobs: the bridge between problems and the sandbox.

The sandbox is a leaf that runs :class:`~mucode_env.sandbox.Job` objects and knows nothing of
problems; which tests a program faces (public or private), with which time limit, is decided
here, on the environment's side. Public and private tests are always separate jobs, so nothing a
program prints while handling private inputs can reach the feedback built from the public run.

>>> from mucode_env.problem_jobs import problem_job
>>> job = problem_job(problem, code, "public")                        # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from mucode_env.problem import Problem
from mucode_env.sandbox import ExecResult, Job, SandboxLimits

__all__ = ["TEST_SETS", "problem_job", "run_problem"]

TEST_SETS = ("public", "private")


def problem_job(problem: Problem, code: str, which: str = "public", limits: SandboxLimits | None = None) -> Job:
    """The Job for ``code`` on ``problem``'s ``which`` ("public" or "private") tests.

    Args:
        problem: the problem whose tests and setup code apply.
        code: the program.
        which: ``"public"`` (shown to the model) or ``"private"`` (hidden).
        limits: the job's limits; default :class:`SandboxLimits` with the problem's calibrated
            per-test time limit.
    """
    if which not in TEST_SETS:
        raise ValueError(f"which must be 'public' or 'private', got {which!r}")
    tests = problem.public_tests if which == "public" else problem.private_tests
    if limits is None:
        limits = replace(SandboxLimits(), per_test_s=problem.time_limit_s)
    return Job(code, tests, problem.test_setup, limits)


def run_problem(sandbox, problem: Problem, codes: Sequence[str], which: str = "public") -> list[ExecResult]:
    """Run every program of ``codes`` on ``problem``'s ``which`` tests in one sandbox batch.

    ``sandbox`` is anything with the sandbox's ``execute(jobs)`` contract.
    """
    return sandbox.execute([problem_job(problem, code, which) for code in codes])
