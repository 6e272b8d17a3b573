"""The HTTP surface of ``mucode serve``: token, size and batch limits, the batch endpoint, 429 when
full, client disconnects. Uses a real server on a free loopback port."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

SLEEPER = "import time\ntime.sleep({s})\nprint('slept')\n"


def execute(server, auth, items, **kwargs) -> httpx.Response:
    return httpx.post(server.url + "/v1/execute", json={"items": items}, headers=auth, timeout=60, **kwargs)


def wait_until(predicate, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


# ---- token -----------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/v1/execute", "/run_code", "/submit", "/openenv/MuCode-MBPP-v0/reset"])
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-token-0123456789"}])
def test_every_endpoint_needs_the_token(server, path, headers):
    response = httpx.post(server.url + path, json={}, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "token" in response.json()["detail"]


def test_health_is_open_and_reports_the_load(server):
    report = httpx.get(server.url + "/health").json()
    assert report["status"] == "ok"
    assert report["max_concurrent"] == 4 and report["sandbox"]["workers"] == 2
    assert {"running", "queued", "counts"} <= set(report)


def test_the_token_also_works_as_basic_auth_in_the_url(url_with_token):
    response = httpx.post(url_with_token + "/v1/execute", json={"items": []})  # httpx sends Basic auth
    assert response.status_code == 200 and response.json() == {"results": []}


def test_openenv_sessions_need_the_token(server, openenv_core):
    import asyncio

    async def connect():
        async with openenv_core.GenericEnvClient(base_url=server.url + "/openenv/MuCode-MBPP-v0") as env:
            await env.reset()

    with pytest.raises(ConnectionError, match="401"):
        asyncio.run(connect())


# ---- limits ----------------------------------------------------------------------------------
def test_a_body_over_the_limit_is_refused_by_its_length(server, auth):
    response = httpx.post(server.url + "/v1/execute", content=b"x" * ((1 << 20) + 1), headers=auth)
    assert response.status_code == 413 and "max_body_bytes" in response.json()["detail"]


def test_a_streamed_body_over_the_limit_is_refused(server, auth):
    def chunks():
        for _ in range(20):
            yield b"y" * (64 << 10)

    response = httpx.post(server.url + "/v1/execute", content=chunks(), headers=auth)  # chunked, no length
    assert response.status_code == 413


def test_batch_size_and_item_rules(server, auth):
    item = {"kind": "program", "code": "print(1)"}
    too_many = execute(server, auth, [{**item, "id": str(i)} for i in range(17)])
    assert too_many.status_code == 413 and "max_batch of 16" in too_many.json()["detail"]
    duplicate = execute(server, auth, [{**item, "id": "a"}, {**item, "id": "a"}])
    assert duplicate.status_code == 422 and "'a' repeats" in duplicate.json()["detail"]
    too_long = execute(server, auth, [{**item, "id": "a", "timeout_s": 3600}])
    assert too_long.status_code == 422 and "above the server's limit" in too_long.json()["detail"]
    unknown = execute(server, auth, [{"kind": "score", "id": "s", "problem": "mbpp/test/MBPP/99999", "solution": ""}])
    assert unknown.status_code == 404 and "unknown problem id" in unknown.json()["detail"]
    malformed = execute(server, auth, [{"kind": "score", "id": "s", "problem": "MBPP/11", "solution": ""}])
    assert malformed.status_code == 422 and "benchmark/split/problem_id" in malformed.json()["detail"]
    unknown_kind = execute(server, auth, [{"kind": "shell", "id": "x", "code": "ls"}])
    assert unknown_kind.status_code == 422


# ---- the batch endpoint ------------------------------------------------------------------------
def test_batch_items_answer_in_order_with_their_ids(server, auth, data_dir):
    from mucode_env.datasets import load_problems

    mbpp11 = next(p for p in load_problems("mbpp", "test", data_dir=data_dir) if p.id == "MBPP/11")
    items = [
        {"kind": "program", "id": "p1", "code": "import sys\nx = input()\nprint(x * 2)\nsys.exit(4)", "stdin": "ab\n"},
        {"kind": "program", "id": "p2", "code": "print(input())", "stdin": "7\n", "expected_stdout": "7"},
        {"kind": "tests", "id": "t1", "problem": "mbpp/test/MBPP/11", "code": "def remove_Occ(s, ch):\n    return s\n"},
        {"kind": "tests", "id": "t2", "problem": "mbpp/test/MBPP/11", "code": mbpp11.reference_solution,
         "which": "private"},
        {"kind": "score", "id": "s1", "problem": "mbpp/test/MBPP/11",
         "solution": f"Here:\n```python\n{mbpp11.reference_solution}\n```"},
        {"kind": "score", "id": "s2", "problem": "mbpp/test/MBPP/11", "solution": "```python\nwhile True: pass\n```"},
    ]
    response = execute(server, auth, items)
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["id"] for r in results] == ["p1", "p2", "t1", "t2", "s1", "s2"]
    p1, p2, t1, t2, s1, s2 = results
    assert (p1["status"], p1["stdout"], p1["exit_code"]) == ("runtime_error", "abab\n", 4)  # exit status 4
    assert p2["status"] == "passed"
    assert t1["status"] == "wrong_answer" and "Your code returned: 'hello'" in t1["feedback"]
    assert t2["passed"] and t2["n_passed"] == t2["n_total"] == len(mbpp11.private_tests) and t2["feedback"] is None
    assert s1["score"] == 1.0 and s1["public_passed"] and s1["private_passed"]
    assert s2["score"] == 0.0 and s2["status"] == "timeout"


# ---- a full server -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_server(serve_sandbox):
    """One request at a time, one in the queue, 1 s queue timeout, one OpenEnv session, 64 KiB
    messages: easy to fill."""
    from mucode_env.serve import ServeConfig
    from mucode_env.serve.runtime import ServeRuntime
    from mucode_env.serve.server import RunningServer

    config = ServeConfig(port=0, max_concurrent=1, max_queue=1, queue_timeout_s=1.0, envs=("MuCode-MBPP-v0",),
                         max_sessions=1, max_body_bytes=64 << 10)
    runtime = ServeRuntime(config, sandbox=serve_sandbox)
    with RunningServer(config, runtime=runtime) as running:
        yield running
    runtime.close()


def _health(server) -> dict:
    return httpx.get(server.url + "/health").json()


def test_a_full_server_answers_429_and_a_long_wait_too(small_server):
    answers: dict[str, httpx.Response] = {}

    def send(name: str, seconds: float) -> None:
        answers[name] = execute(small_server, {}, [{"kind": "program", "id": name, "code": SLEEPER.format(s=seconds)}])

    first = threading.Thread(target=send, args=("first", 3.0))
    first.start()
    wait_until(lambda: _health(small_server)["running"] == 1)
    queued = threading.Thread(target=send, args=("queued", 0.1))
    queued.start()
    wait_until(lambda: _health(small_server)["queued"] == 1)
    rejected = execute(small_server, {}, [{"kind": "program", "id": "third", "code": "print(3)"}])
    assert rejected.status_code == 429
    assert "1 requests running and 1 queued" in rejected.json()["detail"]
    assert int(rejected.headers["retry-after"]) >= 1
    queued.join()
    first.join()
    assert answers["queued"].status_code == 429  # it waited 1 s while the first still ran
    assert "within 1 s" in answers["queued"].json()["detail"]
    assert answers["first"].status_code == 200 and answers["first"].json()["results"][0]["stdout"] == "slept\n"
    assert _health(small_server)["running"] == 0


def test_a_client_that_disconnects_keeps_its_slot_until_its_program_ends(small_server):
    before = _health(small_server)["counts"]["admitted"]
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(small_server.url + "/v1/execute", timeout=0.5,
                   json={"items": [{"kind": "program", "id": "gone", "code": SLEEPER.format(s=2.5)}]})
    assert _health(small_server)["running"] == 1  # the program still runs: its slot is still taken
    wait_until(lambda: _health(small_server)["running"] == 0)
    after = execute(small_server, {}, [{"kind": "program", "id": "next", "code": "print('next')"}])
    assert after.status_code == 200 and after.json()["results"][0]["stdout"] == "next\n"
    assert _health(small_server)["counts"]["admitted"] == before + 2


def test_openenv_sessions_are_bounded_and_so_are_their_messages(small_server, openenv_core, data_dir):
    import asyncio
    import os

    os.environ.setdefault("MUCODE_DATA_DIR", str(data_dir))
    base = small_server.url + "/openenv/MuCode-MBPP-v0"

    async def scenario():
        async with openenv_core.GenericEnvClient(base_url=base) as first:
            await first.reset(problem_id="MBPP/11")
            with pytest.raises(ConnectionError, match="429"):  # refused at the handshake
                async with openenv_core.GenericEnvClient(base_url=base):
                    pass
            with pytest.raises(Exception, match="1009|too big"):  # WebSocket close code 1009: message too big
                await first.step({"text": "x" * (80 << 10)})
        async with openenv_core.GenericEnvClient(base_url=base) as again:  # the slot came back
            result = await again.reset(problem_id="MBPP/12")
            assert result.observation["problem_id"] == "MBPP/12"

    asyncio.run(scenario())
