"""mucode's own batch endpoint: ``POST /v1/execute``.

One request carries up to ``max_batch`` items, executed in one sandbox batch under one admission
slot; the answer lists one result per item, in order, each with the item's ``id`` (ids must be
unique within a request). Item kinds:

- ``program``: run ``code`` on ``stdin``; returns stdout, stderr, exit code and a status: for a
  normal end (exit status 0) ``passed``/``wrong_answer`` when ``expected_stdout`` is given, else
  ``finished``; otherwise ``runtime_error`` (an exception or a non-zero exit), ``timeout``,
  ``memory_limit``, ``output_limit``, ``compile_error``.
- ``tests``: run ``code`` on a problem's ``public`` or ``private`` tests (``problem`` is a
  reference ``benchmark/split/problem_id``); returns the verdict per test and, for public tests,
  the feedback text the environment would show.
- ``score``: the oracle of a model ``solution`` (its code block is extracted): 1.0 iff the
  program passes the public and the private tests, judged exactly like the environment.

Tests and their checks always come from the server's own datasets: a client can never send
check code, which runs in the server process.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from mucode_env.errors import DatasetError, SandboxError, UnknownProblemError
from mucode_env.problem import Problem
from mucode_env.feedback import render_feedback
from mucode_env.sandbox import ExecResult, Job, Status
from mucode_env.problem_jobs import problem_job
from mucode_env.scoring import ProblemRef, finish_score, score_jobs
from mucode_env.serve.programs import FINISHED, program_job, program_run
from mucode_env.serve.runtime import ServeRuntime

ID = Annotated[str, Field(min_length=1, max_length=256, description="your id for this item; echoed in its result")]


class _Item(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProgramItem(_Item):
    kind: Literal["program"]
    id: ID
    code: str
    stdin: str = ""
    expected_stdout: str | None = Field(None, description="when given, the status says passed/wrong_answer")
    timeout_s: float = Field(10.0, gt=0, description="wall-clock limit of the run")
    memory_mb: int | None = Field(None, ge=64, le=65536)


class TestsItem(_Item):
    __test__ = False  # not a pytest class
    kind: Literal["tests"]
    id: ID
    problem: str = Field(description="benchmark/split/problem_id, e.g. mbpp/test/MBPP/11")
    code: str
    which: Literal["public", "private"] = "public"


class ScoreItem(_Item):
    kind: Literal["score"]
    id: ID
    problem: str = Field(description="benchmark/split/problem_id, e.g. mbpp/test/MBPP/11")
    solution: str = Field(description="the model's text; its first ```python block is the program")


Item = Annotated[ProgramItem | TestsItem | ScoreItem, Field(discriminator="kind")]


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[Item]


class BatchResponse(BaseModel):
    results: list[dict[str, Any]]


def find_problem(runtime: ServeRuntime, reference: str, item_id: str) -> Problem:
    """The problem a reference names, or an HTTP error naming the item (422 malformed, 404 unknown)."""
    try:
        return runtime.problems.get(ProblemRef.parse(reference))
    except ValueError as exc:
        raise HTTPException(422, f"item {item_id!r}: {exc}") from None
    except (UnknownProblemError, DatasetError) as exc:
        raise HTTPException(404, f"item {item_id!r}: {exc}") from None


def _outcomes(result: ExecResult) -> list[dict[str, Any]]:
    return [{"status": t.status.value, "message": t.message, "got": t.got} for t in result.tests]


class _Plan:
    """The jobs of a batch and how to turn their results back into per-item answers."""

    def __init__(self, runtime: ServeRuntime, items: list[ProgramItem | TestsItem | ScoreItem]) -> None:
        self.items = items
        self.jobs: list[Job] = []
        self.spans: list[tuple[int, int]] = []
        self.context: list[Any] = []
        for item in items:
            start = len(self.jobs)
            if isinstance(item, ProgramItem):
                if item.timeout_s > runtime.config.max_run_timeout_s:
                    raise HTTPException(422, f"item {item.id!r}: timeout_s {item.timeout_s:g} is above the server's "
                                             f"limit of {runtime.config.max_run_timeout_s:g} s")
                self.jobs.append(program_job(item.code, item.stdin, item.timeout_s, item.memory_mb,
                                             item.expected_stdout or ""))
                self.context.append(None)
            elif isinstance(item, TestsItem):
                problem = find_problem(runtime, item.problem, item.id)
                self.jobs.append(problem_job(problem, item.code, item.which))
                self.context.append(problem)
            else:
                problem = find_problem(runtime, item.problem, item.id)
                code, jobs = score_jobs(problem, item.solution)
                self.jobs.extend(jobs)
                self.context.append((problem, code))
            self.spans.append((start, len(self.jobs)))

    def answer(self, results: list[ExecResult]) -> list[dict[str, Any]]:
        answers = []
        for item, (start, end), context in zip(self.items, self.spans, self.context):
            mine = results[start:end]
            head: dict[str, Any] = {"id": item.id, "kind": item.kind}
            if isinstance(item, ProgramItem):
                answers.append({**head, **_program_answer(item, mine[0])})
            elif isinstance(item, TestsItem):
                result = mine[0]
                answers.append({**head, "status": result.status.value, "passed": result.passed,
                                "n_passed": result.n_passed, "n_total": result.n_total, "message": result.message,
                                "tests": _outcomes(result),
                                "feedback": render_feedback(result, context.public_tests)
                                if item.which == "public" else None})
            else:
                problem, code = context
                try:
                    score = finish_score(problem, code, mine)
                except SandboxError as exc:
                    answers.append({**head, "status": Status.SANDBOX_ERROR.value, "score": None, "message": str(exc)})
                    continue
                answers.append({**head, "status": score.public.status.value, "score": score.score,
                                "public_passed": score.public_passed, "private_passed": score.private_passed,
                                "code": code, "feedback": render_feedback(score.public, problem.public_tests)
                                if mine else score.public.message})
        return answers


def _program_answer(item: ProgramItem, result: ExecResult) -> dict[str, Any]:
    run = program_run(result)
    if run is None:
        return {"status": Status.SANDBOX_ERROR.value, "message": result.message, "stdout": None, "stderr": None,
                "exit_code": None, "wall_ms": None}
    if run.status in FINISHED:
        status = run.status.value if item.expected_stdout is not None else "finished"
    else:
        status = run.status.value
    return {"status": status, "stdout": run.stdout, "stderr": run.stderr, "exit_code": run.exit_code,
            "wall_ms": round(run.wall_ms, 3)}


def router(runtime: ServeRuntime) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["mucode"])

    @api.post("/execute", response_model=BatchResponse)
    async def execute(request: BatchRequest) -> BatchResponse:
        """Run a batch of programs, test runs and scores (see the module docstring)."""
        if len(request.items) > runtime.config.max_batch:
            raise HTTPException(413, f"{len(request.items)} items is more than the server's max_batch of "
                                     f"{runtime.config.max_batch}; split the batch")
        ids = [item.id for item in request.items]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise HTTPException(422, f"item ids must be unique within a request; {dup!r} repeats")

        def work() -> list[dict[str, Any]]:
            plan = _Plan(runtime, list(request.items))  # may load a dataset: off the event loop
            return plan.answer(runtime.sandbox.execute(plan.jobs) if plan.jobs else [])

        return BatchResponse(results=await runtime.call(work))

    return api
