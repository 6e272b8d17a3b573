"""The real clients, unmodified, against ``mucode serve``: they pass and fail the same programs as
the in-process environment and sandbox. Reference solutions pass; the adversarial suite's hostile
programs keep their statuses.

- OpenEnv: ``openenv.core.GenericEnvClient`` (and our typed ``MuCodeEnvClient``) over WebSocket,
  compared step by step with ``gym.make`` on an in-process sandbox.
- SandboxFusion: the ``sandbox-fusion`` package's ``run_code``/``submit``/``get_prompts``,
  compared with in-process ``Sandbox.execute`` and the environment's oracle.
- verl: ``compute_score`` through the server equals ``compute_score`` in process.

The server executes on its own sandbox (cache off), the in-process side on the session sandbox.
Credentials travel in the URL (HTTP Basic auth), since neither client can set headers.
"""

from __future__ import annotations

import asyncio
from typing import Any

import gymnasium as gym
import httpx
import mucode_adversarial_cases as ADV  # registered by conftest: the adversarial suite's module
import pytest

from mucode_env.datasets import load_problems
from mucode_env.errors import SandboxError
from mucode_env.sandbox import ExecResult, Status
from mucode_env.sandbox.checking import stdout_matches
from mucode_env.serve.programs import program_job

ADVERSARIAL_SKIP = ADV.pytestmark.args[0]  # the suite needs Linux, bubblewrap and root
hostile = pytest.mark.skipif(ADVERSARIAL_SKIP, reason=ADV.pytestmark.kwargs.get("reason", ""))
# A quick cross-section of the table for the fast suite; the slow tests run all of it.
FAST_CASES = ("fork_bomb", "kill_parent", "network_connect", "read_mbpp_dataset", "always_equal_object",
              "sys_exit_top", "memory_one_huge_allocation", "syntax_error", "stdio_fork", "stdio_fake_pass_print")
SLOW_CASES = tuple(name for name in ADV.CASES if name not in FAST_CASES)


def fenced(code: str) -> str:
    return f"Here is my solution.\n```python\n{code}\n```\n"


# ---- OpenEnv ---------------------------------------------------------------------------------------
def remote_episode(openenv_core, base_url: str, env_id: str, responses: list[str], typed: bool = False,
                   **reset: Any) -> list[tuple[dict, float | None, bool]]:
    """(observation, reward, done) after reset and after each step, through an OpenEnv client."""
    async def episode():
        if typed:
            from mucode_env.serve.openenv import MuCodeAction, MuCodeEnvClient

            client, wrap = MuCodeEnvClient, (lambda text: MuCodeAction(text=text))
        else:
            client, wrap = openenv_core.GenericEnvClient, (lambda text: {"text": text})
        out = []
        async with client(base_url=f"{base_url}/openenv/{env_id}") as env:
            result = await env.reset(**reset)
            for response in [None, *responses]:
                if response is not None:
                    result = await env.step(wrap(response))
                obs = result.observation if isinstance(result.observation, dict) else result.observation.model_dump()
                out.append((obs, result.reward, result.done))
                if result.done:
                    break
        return out

    return asyncio.run(episode())


def local_episode(env_id: str, problems, sandbox, responses: list[str], problem_id: str,
                  split: str | None = None) -> list[tuple[dict, float | None, bool]]:
    kwargs = {"split": split} if split else {}
    env = gym.make(env_id, problems=problems, sandbox=sandbox, max_turns=3, **kwargs)
    obs, _ = env.reset(options={"problem_id": problem_id})
    out = [({"obs": obs, "status": "", "feedback": "", "public_passed": None}, None, False)]
    for response in responses:
        obs, reward, terminated, truncated, info = env.step(response)
        done = terminated or truncated
        out.append(({"obs": obs, "status": info["status"], "feedback": info["feedback"],
                     "public_passed": info["public_passed"]}, reward, done))
        if done:
            break
    return out


def assert_same_episode(remote, local) -> None:
    from mucode_env import to_messages

    assert len(remote) == len(local)
    for (r_obs, r_reward, r_done), (l, l_reward, l_done) in zip(remote, local):
        obs = l["obs"]
        assert (r_obs["problem_id"], r_obs["turn"], r_obs["prompt"]) == (obs["problem_id"], obs["turn"], obs["prompt"])
        assert r_obs["history"] == [dict(turn) for turn in obs["history"]]
        assert r_obs["messages"] == to_messages(obs)
        assert (r_obs["status"], r_obs["feedback"], r_obs["public_passed"]) == \
            (l["status"], l["feedback"], l["public_passed"])
        assert (r_reward, r_done) == (l_reward, l_done)


@pytest.mark.parametrize("env_id, bench_name, n", [("MuCode-MBPP-v0", "mbpp", 4), ("MuCode-HumanEval-v0", "humaneval", 3)])
def test_openenv_reference_solutions_pass_like_in_process(server, url_with_token, openenv_core, sandbox, data_dir,
                                                          env_id, bench_name, n):
    problems = load_problems(bench_name, "test", data_dir=data_dir)
    for problem in problems[:n]:
        responses = [fenced(problem.reference_solution)]
        remote = remote_episode(openenv_core, url_with_token, env_id, responses, problem_id=problem.id)
        assert_same_episode(remote, local_episode(env_id, problems, sandbox, responses, problem.id))
        assert remote[-1][1:] == (1.0, True) and remote[-1][0]["status"] == "passed"


def test_openenv_multi_turn_episode_matches_in_process(server, url_with_token, openenv_core, sandbox, data_dir):
    problems = load_problems("mbpp", "test", data_dir=data_dir)
    responses = [fenced("def remove_Occ(s, ch):\n    return s\n"), "no code at all, sorry",
                 fenced("def remove_Occ(s, ch):\n    return 1 / 0\n")]
    remote = remote_episode(openenv_core, url_with_token, "MuCode-MBPP-v0", responses, problem_id="MBPP/11")
    assert_same_episode(remote, local_episode("MuCode-MBPP-v0", problems, sandbox, responses, "MBPP/11"))
    assert [r[0]["status"] for r in remote[1:]] == ["wrong_answer", "compile_error", "runtime_error"]
    assert remote[-1][1:] == (0.0, True) and remote[-1][0]["truncated"]
    assert "ZeroDivisionError" in remote[-1][0]["feedback"]


def test_openenv_typed_client_and_state(server, url_with_token, openenv_core, sandbox, data_dir):
    problems = load_problems("humaneval", "test", data_dir=data_dir)
    responses = [fenced(problems[5].prompt + problems[5].reference_solution)]
    remote = remote_episode(openenv_core, url_with_token, "MuCode-HumanEval-v0", responses, typed=True,
                            problem_index=5)
    assert_same_episode(remote, local_episode("MuCode-HumanEval-v0", problems, sandbox, responses, problems[5].id))

    async def state():
        async with openenv_core.GenericEnvClient(base_url=f"{url_with_token}/openenv/MuCode-MBPP-v0") as env:
            await env.reset(problem_id="MBPP/12", episode_id="ep-1")
            return await env.state()

    got = asyncio.run(state())
    assert (got["episode_id"], got["problem_id"], got["split"], got["turn"], got["done"]) == \
        ("ep-1", "MBPP/12", "test", 0, False)


def test_openenv_bad_requests_are_errors_not_silence(server, url_with_token, openenv_core):
    async def scenario():
        async with openenv_core.GenericEnvClient(base_url=f"{url_with_token}/openenv/MuCode-MBPP-v0") as env:
            with pytest.raises(RuntimeError, match="unknown problem id 'MBPP/1l'.*Did you mean"):
                await env.reset(problem_id="MBPP/1l")
            with pytest.raises(RuntimeError, match="unknown reset option"):
                await env.reset(problemid="MBPP/11")
            with pytest.raises(RuntimeError, match="no episode in progress"):
                await env.step({"text": "print(1)"})
            await env.reset(problem_id="MBPP/11")
            with pytest.raises(RuntimeError, match="VALIDATION_ERROR"):
                await env.step({"txt": "misspelled field"})

    asyncio.run(scenario())
    stateless = httpx.post(f"{url_with_token}/openenv/MuCode-MBPP-v0/step", json={"action": {"text": "x"}})
    assert stateless.status_code == 409 and "/ws" in stateless.json()["detail"]


def _openenv_hostile(name, server, url_with_token, openenv_core, sandbox, adversarial_problems):
    code, tests, _, status, _ = ADV.CASES[name]
    problem_id = "ADV/stdio" if tests is ADV.STDIO else "ADV/call"
    responses = [fenced(code)]
    remote = remote_episode(openenv_core, url_with_token, "MuCode-MBPP-v0", responses, split="adversarial",
                            problem_id=problem_id)
    local = local_episode("MuCode-MBPP-v0", adversarial_problems, sandbox, responses, problem_id, split="adversarial")
    assert remote[-1][0]["status"] == local[-1][0]["status"] == status.value, name
    assert remote[-1][1] == local[-1][1] == 0.0


@hostile
@pytest.mark.parametrize("name", FAST_CASES)
def test_openenv_hostile_programs_keep_their_statuses(name, server, url_with_token, openenv_core, sandbox,
                                                      adversarial_problems):
    _openenv_hostile(name, server, url_with_token, openenv_core, sandbox, adversarial_problems)


@pytest.mark.slow
@hostile
@pytest.mark.parametrize("name", SLOW_CASES)
def test_openenv_hostile_programs_keep_their_statuses_all(name, server, url_with_token, openenv_core, sandbox,
                                                          adversarial_problems):
    _openenv_hostile(name, server, url_with_token, openenv_core, sandbox, adversarial_problems)


# ---- SandboxFusion ---------------------------------------------------------------------------------
RUN_TIMEOUT_S = 2.0


def as_program(name: str) -> tuple[str, str, str]:
    """A hostile case as a whole program: (code, stdin, expected stdout). Function-style cases get
    a last line that prints f(), whose expected value is the suite's secret."""
    code, tests, _, _, _ = ADV.CASES[name]
    if tests is ADV.STDIO:
        return code, tests[0].stdin, tests[0].expected_stdout
    return code + "\nprint(f())\n", "", "7919\n"


def verdict_of_run_code(response, expected: str) -> str:
    """How a SandboxFusion user (verl's check_correctness) reads a run_code answer."""
    run = response.run_result
    if run.status.value == "TimeLimitExceeded":
        return "timeout"
    if response.status.value == "Success" and stdout_matches(run.stdout or "", expected):
        return "pass"
    return "fail"


def verdict_in_process(result: ExecResult) -> str:
    return {Status.PASSED: "pass", Status.TIMEOUT: "timeout"}.get(result.status, "fail")


def _run_code_hostile(name, url_with_token, sandbox_fusion, sandbox):
    code, stdin, expected = as_program(name)
    remote = sandbox_fusion.run_code(sandbox_fusion.RunCodeRequest(code=code, stdin=stdin, language="python",
                                                                   run_timeout=RUN_TIMEOUT_S),
                                     endpoint=url_with_token, max_attempts=1)
    local = sandbox.execute([program_job(code, stdin, RUN_TIMEOUT_S, expected_stdout=expected)])[0]
    assert verdict_of_run_code(remote, expected) == verdict_in_process(local) != "pass", (name, remote, local)


@hostile
@pytest.mark.parametrize("name", FAST_CASES)
def test_run_code_hostile_programs_fail_like_in_process(name, server, url_with_token, sandbox_fusion, sandbox):
    _run_code_hostile(name, url_with_token, sandbox_fusion, sandbox)


@pytest.mark.slow
@hostile
@pytest.mark.parametrize("name", SLOW_CASES)
def test_run_code_hostile_programs_fail_like_in_process_all(name, server, url_with_token, sandbox_fusion, sandbox):
    _run_code_hostile(name, url_with_token, sandbox_fusion, sandbox)


@pytest.mark.parametrize("name", list(ADV.CONTROLS))
def test_run_code_legitimate_programs_pass_like_in_process(name, server, url_with_token, sandbox_fusion, sandbox):
    code, tests = ADV.CONTROLS[name]
    if tests is ADV.STDIO:
        program, stdin, expected = code, tests[0].stdin, tests[0].expected_stdout
    else:  # call the function of the control on its test's expression and print the result
        setup = "def helper(x):\n    return x * 2\n" if name == "test_setup_code" else ""
        program, stdin, expected = f"{code}\n{setup}\nprint(repr({tests[0].exprs[0]}))\n", "", \
            tests[0].check.removeprefix("assert _0 == ")
        if name == "large_allowed_output":  # it prints 20,000 lines (1.8 MB) before its value
            expected = "".join(f"line {i} {'x' * 80}\n" for i in range(20000)) + expected
    remote = sandbox_fusion.run_code(sandbox_fusion.RunCodeRequest(code=program, stdin=stdin, language="python",
                                                                   run_timeout=5.0),
                                     endpoint=url_with_token, max_attempts=1)
    local = sandbox.execute([program_job(program, stdin, 5.0, expected_stdout=expected)])[0]
    assert verdict_of_run_code(remote, expected) == verdict_in_process(local) == "pass", (name, remote, local)


@pytest.mark.parametrize("code, status, return_code, stdout, in_stderr", [
    ("print(sum(map(int, input().split())))", "Success", 0, "6\n", ""),
    ("import sys\nprint('partial')\nsys.exit(3)", "Failed", 3, "partial\n", ""),
    ("print('a')\nraise KeyError('k')", "Failed", 1, "a\n", "Traceback (most recent call last):"),
    ("def f(:", "Failed", 1, "", "SyntaxError: invalid syntax"),
    ("import socket\nsocket.socket()", "Failed", 1, "", "PermissionError"),
])
def test_run_code_reports_a_python_process(server, url_with_token, sandbox_fusion, code, status, return_code, stdout,
                                           in_stderr):
    response = sandbox_fusion.run_code(sandbox_fusion.RunCodeRequest(code=code, stdin="1 2 3\n", language="python"),
                                       endpoint=url_with_token, max_attempts=1)
    assert response.status.value == status and response.compile_result is None
    run = response.run_result
    assert (run.status.value, run.return_code, run.stdout) == ("Finished", return_code, stdout)
    assert in_stderr in run.stderr and (in_stderr or run.stderr == "")
    assert run.execution_time is not None and run.execution_time >= 0


def test_run_code_timeout_is_time_limit_exceeded(server, url_with_token, sandbox_fusion):
    response = sandbox_fusion.run_code(
        sandbox_fusion.RunCodeRequest(code="print('begin', flush=True)\nwhile True:\n    pass\n", language="python",
                                      run_timeout=0.5), endpoint=url_with_token, max_attempts=1)
    assert response.status.value == "Failed"
    assert (response.run_result.status.value, response.run_result.return_code) == ("TimeLimitExceeded", None)
    assert response.run_result.stdout == "begin\n"
    assert sandbox_fusion.summary_run_code_result(response, sandbox_fusion.SummaryMapping(RunTimeout="tle")) == "tle"


def test_run_code_other_languages_get_sandbox_fusions_error_shape(server, url_with_token, sandbox_fusion):
    raw = httpx.post(f"{url_with_token}/run_code", json={"code": "int main(){}", "language": "cpp"})
    assert raw.status_code == 200
    parsed = sandbox_fusion.RunCodeResponse(**raw.json())
    assert parsed.status.value == "SandboxError" and "runs only python" in parsed.message
    with pytest.raises(Exception, match="Sandbox responded with error: mucode serve runs only python"):
        sandbox_fusion.run_code(sandbox_fusion.RunCodeRequest(code="int main(){}", language="cpp"),
                                endpoint=url_with_token, max_attempts=1)


@pytest.mark.parametrize("dataset, bench_name, n", [("mbpp", "mbpp", 3), ("humaneval/test", "humaneval", 2)])
def test_submit_accepts_references_and_judges_like_the_environment(server, url_with_token, sandbox_fusion, sandbox,
                                                                   data_dir, dataset, bench_name, n):
    problems = load_problems(bench_name, "test", data_dir=data_dir)
    for problem in problems[:n]:
        for completion in (fenced(problem.prompt + problem.reference_solution if bench_name == "humaneval"
                                  else problem.reference_solution), fenced("def nothing():\n    return None\n")):
            got = sandbox_fusion.submit(sandbox_fusion.SubmitRequest(dataset=dataset, id=problem.id,
                                                                     completion=completion,
                                                                     config=sandbox_fusion.TestConfig()),
                                        endpoint=url_with_token, max_attempts=1)
            env = gym.make(f"MuCode-{'MBPP' if bench_name == 'mbpp' else 'HumanEval'}-v0", problems=problems,
                           sandbox=sandbox, max_turns=1)
            env.reset(options={"problem_id": problem.id})
            _, reward, _, _, info = env.step(completion)
            assert got.accepted is (reward == 1.0)
            assert len(got.tests) == len(problem.public_tests) + len(problem.private_tests)
            assert [t.test_info["which"] for t in got.tests].count("private") == len(problem.private_tests)
            assert all("display" not in t.test_info for t in got.tests if t.test_info["which"] == "private")
            assert got.extra["status"] == info["status"]
        assert got.accepted is False  # the second completion


def test_submit_takes_a_numeric_id_and_get_prompts_serves_the_first_turn(server, url_with_token, sandbox_fusion,
                                                                         data_dir):
    from mucode_env.prompts import first_user_message

    problems = load_problems("mbpp", "test", data_dir=data_dir)
    got = sandbox_fusion.submit(sandbox_fusion.SubmitRequest(dataset="mbpp", id=11, completion=fenced(
        problems[0].reference_solution), config=sandbox_fusion.TestConfig()), endpoint=url_with_token, max_attempts=1)
    assert got.accepted and got.extra["reference"] == "mbpp/test/MBPP/11"
    prompts = sandbox_fusion.get_prompts(sandbox_fusion.GetPromptsRequest(
        dataset="mbpp", config=sandbox_fusion.TestConfig(), offset=1, limit=2), endpoint=url_with_token)
    assert [p.id for p in prompts] == [problems[1].id, problems[2].id]
    assert prompts[0].prompt == first_user_message(problems[1])
    assert prompts[0].labels["reference"] == f"mbpp/test/{problems[1].id}"


# ---- verl's reward through the server -------------------------------------------------------------
def test_verl_compute_score_through_the_server_equals_in_process(server, token, data_dir, monkeypatch):
    from mucode_env.integrations import verl

    problems = load_problems("mbpp", "test", data_dir=data_dir)[:3]
    solutions = [fenced(p.reference_solution) for p in problems] + [fenced("def remove_Occ(s, ch):\n    return s\n"),
                                                                      fenced(ADV.CASES["fork_bomb"][0])]
    truths = [f"mbpp/test/{p.id}" for p in problems] + ["mbpp/test/MBPP/11"] * 2
    monkeypatch.delenv("MUCODE_SERVE_URL", raising=False)
    local = verl.compute_score_batch(["MuCode-MBPP-v0"] * 5, solutions, truths)
    remote = verl.compute_score_batch(["MuCode-MBPP-v0"] * 5, solutions, truths, url=server.url, token=token)
    assert remote == local == [1.0, 1.0, 1.0, 0.0, 0.0]
    monkeypatch.setenv("MUCODE_SERVE_URL", server.url)
    monkeypatch.setenv("MUCODE_SERVE_TOKEN", token)
    assert verl.compute_score("MuCode-MBPP-v0", solutions[0], truths[0]) == 1.0  # verl's call, from the env
    monkeypatch.setenv("MUCODE_SERVE_TOKEN", "wrong-token-0123456789")
    with pytest.raises(SandboxError, match="answered 401"):
        verl.compute_score("MuCode-MBPP-v0", solutions[0], truths[0])
