"""Graceful shutdown: stop accepting, let in-flight work finish until the grace deadline, then
answer what is left with 503; never drop a request without an answer."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

SLEEPER = "import time\ntime.sleep({s})\nprint('slept {s}')\n"


def post_program(url: str, name: str, seconds: float, answers: dict) -> None:
    try:
        response = httpx.post(url + "/v1/execute", timeout=60, json={
            "items": [{"kind": "program", "id": name, "code": SLEEPER.format(s=seconds), "timeout_s": 20}]})
        answers[name] = (response.status_code, response.json())
    except httpx.HTTPError as exc:
        answers[name] = ("error", repr(exc))


def wait_running(url: str, n: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while httpx.get(url + "/health").json()["running"] < n:
        assert time.monotonic() < deadline
        time.sleep(0.02)


@pytest.mark.slow  # a server process of its own: ~25 s to start here; the in-thread test below is fast
def test_sigterm_finishes_what_fits_in_the_grace_period_and_answers_503_for_the_rest(data_dir):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "MUCODE_DATA_DIR": str(data_dir)}
    env.pop("MUCODE_SERVE_TOKEN", None)
    process = subprocess.Popen([sys.executable, "-m", "mucode_cli", "serve", "--port", str(port), "--grace", "2",
                                "--envs", "MuCode-MBPP-v0", "--workers", "2", "--log-level", "warning"], env=env)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, "the server exited during start-up"
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        answers: dict = {}
        threads = [threading.Thread(target=post_program, args=(url, name, seconds, answers))
                   for name, seconds in (("short", 0.5), ("long", 8.0))]
        for thread in threads:
            thread.start()
        wait_running(url, 2)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        post_program(url, "late", 0.1, answers)
        for thread in threads:
            thread.join()
        assert process.wait(timeout=60) in (0, -signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert answers["short"][0] == 200 and answers["short"][1]["results"][0]["stdout"] == "slept 0.5\n"
    status, body = answers["long"]
    assert status == 503 and body["error"] == "shutting_down"
    assert "grace period" in body["detail"] and "discarded" in body["detail"]
    assert answers["late"][0] in ("error", 503)  # refused: no listener any more, or a 503


@pytest.fixture
def stoppable(serve_sandbox):
    from mucode_env.serve import ServeConfig
    from mucode_env.serve.runtime import ServeRuntime
    from mucode_env.serve.server import RunningServer

    config = ServeConfig(port=0, shutdown_grace_s=0.5, max_concurrent=2, envs=("MuCode-MBPP-v0",))
    runtime = ServeRuntime(config, sandbox=serve_sandbox)
    running = RunningServer(config, runtime=runtime)
    yield running
    runtime.close()


def test_stop_answers_an_http_request_and_an_openenv_step_in_flight(stoppable, openenv_core, data_dir):
    os.environ.setdefault("MUCODE_DATA_DIR", str(data_dir))
    answers: dict = {}
    http = threading.Thread(target=post_program, args=(stoppable.url, "http", 5.0, answers))
    outcome: dict = {}

    async def session():
        async with openenv_core.GenericEnvClient(base_url=stoppable.url + "/openenv/MuCode-MBPP-v0") as env:
            await env.reset(problem_id="MBPP/11")
            outcome["started"] = True
            try:
                await env.step({"text": "```python\nimport time\ntime.sleep(5)\n```"})
                outcome["result"] = "answered"
            except Exception as exc:  # the server must say why, not leave the client waiting
                outcome["result"] = f"{type(exc).__name__}: {exc}"

    ws = threading.Thread(target=lambda: asyncio.run(session()))
    http.start()
    ws.start()
    wait_running(stoppable.url, 2)
    started = time.monotonic()
    stoppable.stop(timeout_s=60)
    http.join(30)
    ws.join(30)
    assert time.monotonic() - started < 20  # not the 5 s programs twice over, nor forever
    assert answers["http"][0] == 503 and "grace period" in answers["http"][1]["detail"]
    assert outcome["started"] and "grace period" in outcome["result"]
    assert stoppable.runtime.admission.counts["expired"] == 2
