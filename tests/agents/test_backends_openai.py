"""The OpenAI-compatible backend against a real llama.cpp server on 127.0.0.1 (SmolLM2-135M)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from agents.backends import make_policy
from agents.backends.openai import OpenAIPolicy, RequestRefusedError, ServerUnreachableError
from agents.policy import Policy, SamplingParams

pytest.importorskip("llama_cpp.server.app", reason="needs llama-cpp-python[server]")
httpx = pytest.importorskip("httpx")

CHAT = [{"role": "user", "content": "Write a Python function that adds two numbers."}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(smollm2_gguf, tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf), "--model_alias", "smollm2",
             "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "1024", "--n_threads", "1", "--n_threads_batch", "1"],
            stdout=fh, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not start in 120 s: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_lists_models_and_defaults_to_the_first(server):
    policy = OpenAIPolicy(server)  # no /v1: added
    assert policy.list_models() == ["smollm2"]
    (gen,), = policy.generate([CHAT], SamplingParams(max_new_tokens=4))
    assert policy.model == "smollm2"
    assert gen.completion_tokens >= 1 and gen.prompt_tokens > 10


def test_concurrent_samples_have_token_counts_and_finish_reasons(server):
    policy = make_policy("openai", "smollm2", base_url=f"{server}/v1", max_concurrency=4)
    assert isinstance(policy, Policy)
    out = policy.generate([CHAT, [{"role": "user", "content": "Say hi"}]],
                          SamplingParams(n=2, temperature=0.9, max_new_tokens=5, seed=2))
    assert [len(row) for row in out] == [2, 2]
    for row in out:
        for gen in row:
            assert gen.completion_tokens >= 1  # the server may finish a multi-byte character past 5
            assert gen.finish_reason in ("stop", "length")
            assert gen.prompt_tokens > 0
    assert out[0][0].prompt_tokens != out[1][0].prompt_tokens


def test_per_chat_seeds_make_samples_independent_of_the_batch(server):
    policy = make_policy("openai", "smollm2", base_url=f"{server}/v1", max_concurrency=4)
    other = [{"role": "user", "content": "Say hi"}]
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=6, seed=0)
    seen = []
    alone = policy.generate([CHAT], params, seeds=[11], progress=lambda g, t: seen.append(g))
    batched = policy.generate([other, CHAT], params, seeds=[5, 11])
    assert [g.text for g in alone[0]] == [g.text for g in batched[1]]  # CHAT with seed 11, wherever it sits
    assert seen[-1] == 2  # both samples reported as they arrived
    with pytest.raises(ValueError, match="seeds"):
        policy.generate([CHAT], params, seeds=[1, 2])


def test_refusal_fails_at_once_with_the_servers_message(server):
    policy = OpenAIPolicy(f"{server}/no-such-api/v1", "smollm2", max_retries=3, backoff_s=5.0)
    started = time.monotonic()
    with pytest.raises(RequestRefusedError, match="HTTP 404"):
        # a wrong address on a live server is a client error (404), not retried
        policy.generate([CHAT], SamplingParams(max_new_tokens=4))
    assert time.monotonic() - started < 60  # no backoff sleeps of 5, 10, 20 s happened (not a timing measure)


def test_a_prompt_over_the_servers_context_generates_nothing_instead_of_failing(server):
    policy = OpenAIPolicy(server, "smollm2", max_retries=3, backoff_s=5.0)
    # longer than the server's 1024-token context: a late turn of a long episode must not end the run
    (gen,), = policy.generate([[{"role": "user", "content": "word " * 3000}]], SamplingParams(max_new_tokens=4))
    assert gen.text == "" and gen.completion_tokens == 0 and gen.finish_reason == "length"
    assert gen.prompt_tokens > 1024 and gen.extra["error"] == "prompt exceeds the context"


def test_timeouts_are_retried_then_reported(server):
    policy = OpenAIPolicy(server, "smollm2", timeout_s=0.001, max_retries=1, backoff_s=0.01)
    with pytest.raises(ServerUnreachableError, match="timed out"):
        policy.generate([CHAT], SamplingParams(max_new_tokens=200))


def test_unreachable_server_is_a_clear_error():
    policy = OpenAIPolicy(f"http://127.0.0.1:{_free_port()}/v1", "m", max_retries=1, backoff_s=0.01)
    with pytest.raises(ServerUnreachableError, match="failed after 2 attempts: unreachable"):
        policy.list_models()


def test_bad_url_and_inside_an_event_loop(server):
    import asyncio

    with pytest.raises(ValueError, match="http"):
        OpenAIPolicy("127.0.0.1:8000")

    async def inside():
        policy = OpenAIPolicy(server, "smollm2")
        return policy.generate([CHAT], SamplingParams(max_new_tokens=2))  # sync call from a running loop

    (row,) = asyncio.run(inside())
    assert len(row) == 1


def test_mucode_eval_runs_through_the_server(server, tmp_path, capsys):
    import json

    from mucode_cli.main import main

    out = tmp_path / "eval"
    code = main(["eval", "--backend", "openai", "--base-url", server, "--limit", "1", "--turns", "1",
                 "--max-new-tokens", "8", "--out", str(out), "--no-progress"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["policy_name"] == "openai:smollm2" and results["n_problems"] == 1
    assert "accuracy after turn 1" in capsys.readouterr().out


def test_a_prompt_near_the_context_limit_generates_what_fits(monkeypatch):
    """vLLM refuses prompt + max_tokens over its context; the policy retries with what fits."""
    seen = []

    def handler(request):
        body = json.loads(request.content)
        seen.append(body["max_tokens"])
        if body["max_tokens"] > 96:
            return httpx.Response(400, json={"error": {"message": (
                "This model's maximum context length is 4096 tokens. However, your prompt contains 4000 input "
                "tokens, which exceeds this limit even without any output tokens.")}})
        return httpx.Response(200, json={"choices": [{"index": 0, "message": {"content": "ok"},
                                                      "finish_reason": "length"}],
                                         "usage": {"prompt_tokens": 4000, "completion_tokens": 96}})

    policy = OpenAIPolicy("http://127.0.0.1:9/v1", "m")
    monkeypatch.setattr(policy, "_client", lambda: httpx.AsyncClient(base_url=policy.base_url,
                                                                     transport=httpx.MockTransport(handler)))
    (gen,), = policy.generate([CHAT], SamplingParams(max_new_tokens=1000))
    assert seen == [1000, 96] and gen.text == "ok" and gen.finish_reason == "length"
