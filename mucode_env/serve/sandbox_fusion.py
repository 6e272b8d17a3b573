"""SandboxFusion-compatible endpoints, so its clients use mucode's sandbox unchanged.

The wire format follows SandboxFusion's server (``bytedance/SandboxFusion``, ``sandbox_api.py``)
and its PyPI client ``sandbox-fusion`` 0.3.7, whose pydantic-v1 models FastAPI cannot serve, so
the same fields are declared here:

- ``POST /run_code``: run a program with a stdin. Only ``language="python"`` runs; any other
  language gets SandboxFusion's error shape (``status: "SandboxError"`` and a message saying so),
  as do ``files``/``fetch_files`` (not supported). The run result follows a ``python`` process:
  ``Finished`` with its ``return_code`` (1 after an uncaught exception, whose traceback ends
  stderr), or ``TimeLimitExceeded`` with no return code; ``status`` is ``Success`` iff it finished
  with 0. Python has no compile step, so ``compile_result`` is null.
- ``POST /submit``: judge a completion on one of mucode's problems (dataset ``"mbpp"`` or
  ``"mbpp/test"``; ``config.extra["split"]`` also picks the split; ``id`` is the problem id, or its
  number): accepted iff the public and the private tests pass, one ``tests`` entry per test. The
  problem's own calibrated time limit applies (``config.run_timeout`` and ``language`` are ignored).
- ``POST /get_prompts``, ``POST /get_prompt_by_id``: the problems' first-turn prompts.
- ``GET /v1/ping``: ``"pong"``.

A Busy server answers 429, a shutting-down one 503: SandboxFusion's client retries both.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from mucode_env.errors import DatasetError, SandboxError, UnknownProblemError
from mucode_env.problem import Problem
from mucode_env.prompts import first_user_message
from mucode_env.registration import ENV_IDS
from mucode_env.sandbox import ExecResult, Status, TestOutcome
from mucode_env.scoring import ProblemRef, finish_score, score_jobs
from mucode_env.serve.programs import program_job, program_run
from mucode_env.serve.runtime import ServeRuntime

SUPPORTED_LANGUAGES = ("python",)
DEFAULT_SPLITS = {spec["benchmark"]: spec["split"] for spec in ENV_IDS.values()}


# ---- wire models (SandboxFusion's field names and defaults) ----------------------------------
class RunCodeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # like SandboxFusion: unknown fields do no harm
    compile_timeout: float = 10
    run_timeout: float = Field(10, gt=0)
    memory_limit_MB: int = -1
    code: str
    stdin: str | None = None
    language: str
    files: dict[str, str | None] = {}
    fetch_files: list[str] = []


class CommandRunResult(BaseModel):
    status: Literal["Finished", "Error", "TimeLimitExceeded"]
    execution_time: float | None = None
    cpu_time: float | None = None
    return_code: int | None = None
    stdout: str | None = None
    stderr: str | None = None


class RunCodeResponse(BaseModel):
    status: Literal["Success", "Failed", "SandboxError"]
    message: str = ""
    compile_result: CommandRunResult | None = None
    run_result: CommandRunResult | None = None
    executor_pod_name: str | None = None
    files: dict[str, str] = {}


class TestConfig(BaseModel):
    __test__ = False  # not a pytest class
    model_config = ConfigDict(extra="ignore")
    language: str | None = None
    run_timeout: float | None = None
    extra: dict[str, Any] = {}


class SubmitRequest(BaseModel):
    dataset: str
    id: int | str
    completion: str
    config: TestConfig = TestConfig()


class EvalTestCase(BaseModel):
    passed: bool
    exec_info: RunCodeResponse
    test_info: dict[str, Any] | None = None


class EvalResult(BaseModel):
    id: int | str
    accepted: bool
    extracted_code: str
    full_code: str | None = None
    test_code: str | None = None
    tests: list[EvalTestCase]
    extracted_type: Literal["fenced", "incomplete_fenced", "heuristic", "empty"] | None = None
    extra: dict[str, Any] | None = None


class GetPromptsRequest(BaseModel):
    dataset: str
    config: TestConfig = TestConfig()
    offset: int = Field(0, ge=0)
    limit: int = Field(1000000, ge=0)


class GetPromptByIdRequest(BaseModel):
    dataset: str
    config: TestConfig = TestConfig()
    id: int | str


class Prompt(BaseModel):
    id: int | str
    prompt: str
    labels: dict[str, Any] = {}


# ---- run_code ------------------------------------------------------------------------------
def sandbox_error(message: str) -> RunCodeResponse:
    return RunCodeResponse(status="SandboxError", message=message)


def run_code_response(result: ExecResult) -> RunCodeResponse:
    """A program run in SandboxFusion's terms (see the module docstring)."""
    run = program_run(result)
    if run is None:
        return sandbox_error(f"mucode sandbox failure: {result.message}")
    seconds = round(run.wall_ms / 1000.0, 6)
    if run.timed_out:
        command = CommandRunResult(status="TimeLimitExceeded", execution_time=seconds, stdout=run.stdout,
                                   stderr=run.stderr)
        return RunCodeResponse(status="Failed", run_result=command)
    command = CommandRunResult(status="Finished", execution_time=seconds, return_code=run.exit_code,
                               stdout=run.stdout, stderr=run.stderr)
    return RunCodeResponse(status="Success" if run.exit_code == 0 else "Failed", run_result=command)


def _unsupported(request: RunCodeRequest) -> str | None:
    if request.language not in SUPPORTED_LANGUAGES:
        return (f"mucode serve runs only python; language {request.language!r} is not supported "
                f"(supported: {', '.join(SUPPORTED_LANGUAGES)})")
    if request.files or request.fetch_files:
        return "mucode serve does not support files/fetch_files: pass input through stdin"
    return None


# ---- datasets (submit, prompts) ------------------------------------------------------------
def _split_of(dataset: str, config: TestConfig) -> tuple[str, str]:
    benchmark, _, split = dataset.partition("/")
    split = split or str(config.extra.get("split") or DEFAULT_SPLITS.get(benchmark, "test"))
    return benchmark, split


def _problems(runtime: ServeRuntime, dataset: str, config: TestConfig) -> tuple[str, str, list[Problem]]:
    benchmark, split = _split_of(dataset, config)
    try:
        return benchmark, split, runtime.problems.problems(benchmark, split)
    except DatasetError as exc:
        raise HTTPException(404, f"dataset {dataset!r}: {exc}") from None


def _find(runtime: ServeRuntime, dataset: str, config: TestConfig, problem_id: int | str) -> tuple[ProblemRef, Problem]:
    benchmark, split, problems = _problems(runtime, dataset, config)
    ref = ProblemRef(benchmark, split, str(problem_id))
    try:
        return ref, runtime.problems.get(ref)
    except UnknownProblemError as exc:
        if isinstance(problem_id, int) or str(problem_id).isdigit():  # 11 -> "MBPP/11"
            matches = [p for p in problems if p.id.rsplit("/", 1)[-1] == str(problem_id)]
            if len(matches) == 1:
                return ProblemRef(benchmark, split, matches[0].id), matches[0]
        raise HTTPException(404, str(exc)) from None


def _test_case(outcome: TestOutcome, which: str, index: int, display: str | None) -> EvalTestCase:
    passed = outcome.passed
    seconds = round(outcome.duration_ms / 1000.0, 6)
    if outcome.status is Status.TIMEOUT:
        command = CommandRunResult(status="TimeLimitExceeded", execution_time=seconds, stderr=outcome.message)
    else:
        command = CommandRunResult(status="Finished", execution_time=seconds, return_code=0 if passed else 1,
                                   stdout="", stderr=outcome.message)
    info = {"which": which, "index": index, "status": outcome.status.value}
    if display is not None:  # only public tests are ever shown
        info["display"] = display
    return EvalTestCase(passed=passed, exec_info=RunCodeResponse(status="Success" if passed else "Failed",
                                                                 message=outcome.message, run_result=command),
                        test_info=info)


def _prompt(ref: ProblemRef, problem: Problem) -> Prompt:
    return Prompt(id=problem.id, prompt=first_user_message(problem),
                  labels={"reference": str(ref), "benchmark": ref.benchmark, "split": ref.split,
                          "io_style": problem.io_style.value, "entry_point": problem.entry_point})


def router(runtime: ServeRuntime) -> APIRouter:
    api = APIRouter(tags=["SandboxFusion"])

    @api.post("/run_code", response_model=RunCodeResponse)
    async def run_code(request: RunCodeRequest) -> RunCodeResponse:
        """SandboxFusion's run_code on mucode's sandbox (python only)."""
        refusal = _unsupported(request)
        if refusal is not None:
            return sandbox_error(refusal)
        if request.run_timeout > runtime.config.max_run_timeout_s:
            raise HTTPException(422, f"run_timeout {request.run_timeout:g} is above the server's limit of "
                                     f"{runtime.config.max_run_timeout_s:g} s")
        memory = request.memory_limit_MB if request.memory_limit_MB > 0 else None
        if memory is not None and memory < 64:
            raise HTTPException(422, f"memory_limit_MB must be at least 64 (or -1 for the default), got {memory}")
        job = program_job(request.code, request.stdin, request.run_timeout, memory)
        result = (await runtime.call(runtime.sandbox.execute, [job]))[0]
        return run_code_response(result)

    @api.post("/submit", response_model=EvalResult)
    async def submit(request: SubmitRequest) -> EvalResult:
        """Judge a completion on a mucode problem: accepted iff public and private tests pass."""

        def work() -> EvalResult:
            ref, problem = _find(runtime, request.dataset, request.config, request.id)
            code, jobs = score_jobs(problem, request.completion)
            try:
                score = finish_score(problem, code, runtime.sandbox.execute(jobs) if jobs else [])
            except SandboxError as exc:
                raise HTTPException(503, f"sandbox failure, not a verdict: {exc}") from None
            tests = [_test_case(o, "public", i, problem.public_tests[i].display) for i, o in enumerate(score.public.tests)]
            tests += [_test_case(o, "private", i, None) for i, o in enumerate(score.private.tests)]
            return EvalResult(id=request.id, accepted=score.score == 1.0, extracted_code=code, full_code=code,
                              tests=tests, extracted_type="empty" if not code.strip() else None,
                              extra={"reference": str(ref), "public_passed": score.public_passed,
                                     "private_passed": score.private_passed, "status": score.public.status.value,
                                     "message": score.public.message})

        return await runtime.call(work)

    @api.post("/get_prompts", response_model=list[Prompt])
    async def get_prompts(request: GetPromptsRequest) -> list[Prompt]:
        benchmark, split, problems = await asyncio.to_thread(_problems, runtime, request.dataset, request.config)
        chosen = problems[request.offset: request.offset + request.limit]
        return [_prompt(ProblemRef(benchmark, split, p.id), p) for p in chosen]

    @api.post("/get_prompt_by_id", response_model=Prompt)
    async def get_prompt_by_id(request: GetPromptByIdRequest) -> Prompt:
        ref, problem = await asyncio.to_thread(_find, runtime, request.dataset, request.config, request.id)
        return _prompt(ref, problem)

    @api.get("/v1/ping")
    async def ping() -> str:
        return "pong"

    return api
