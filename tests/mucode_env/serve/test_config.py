"""Safe by default: loopback without a token, anything else refused unless a token is set."""

from __future__ import annotations

import base64
import subprocess
import sys

import pytest

from mucode_env.serve import ServeConfig, is_loopback
from mucode_cli.serve import read_token
from mucode_env.serve.security import token_matches

GOOD = "a-token-of-sixteen-or-more"


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("192.168.1.5", False), ("10.0.0.1", False), ("example.com", False),
    ("localhost.evil.com", False),
])
def test_loopback_addresses(host, loopback):
    assert is_loopback(host) is loopback


def test_default_binds_loopback_without_a_token():
    config = ServeConfig()
    assert config.host == "127.0.0.1" and config.token is None and config.loopback


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "myhost"])
def test_any_other_address_needs_a_token(host):
    with pytest.raises(ValueError, match=f"host '{host}' is not a loopback address.*token is required"):
        ServeConfig(host=host)
    assert ServeConfig(host=host, token=GOOD).token == GOOD


@pytest.mark.parametrize("token", ["short", " " + GOOD, "", 12345678901234567])
def test_weak_or_malformed_tokens_are_refused(token):
    with pytest.raises(ValueError, match="token must be a string of at least 16 characters"):
        ServeConfig(token=token)


@pytest.mark.parametrize("field, value, message", [
    ("port", 70000, "port must be an int"), ("max_concurrent", 0, "max_concurrent must be a positive int"),
    ("max_queue", -1, "max_queue must be an int >= 0"), ("queue_timeout_s", float("inf"), "queue_timeout_s"),
    ("max_batch", 0, "max_batch"), ("termination", "never", "termination must be one of"),
])
def test_invalid_settings_name_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        ServeConfig(**{field: value})


def test_unknown_environment_ids_are_refused():
    with pytest.raises(KeyError, match="Did you mean"):
        ServeConfig(envs=("MuCode-MBPP-v1",))


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize("header, ok", [
    (f"Bearer {GOOD}", True), (f"bearer  {GOOD} ", True), (_basic("anyone", GOOD), True), (_basic(GOOD, ""), True),
    (None, False), ("", False), (f"Bearer {GOOD}x", False), (f"Bearer {GOOD[:-1]}", False), (f"Token {GOOD}", False),
    (_basic("anyone", "wrong"), False), ("Basic !!!not-base64", False), (GOOD, False),
])
def test_token_matching(header, ok):
    assert token_matches(GOOD, header) is ok


def test_token_comes_from_a_file_or_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("MUCODE_SERVE_TOKEN", raising=False)
    assert read_token(None) is None
    monkeypatch.setenv("MUCODE_SERVE_TOKEN", GOOD)
    assert read_token(None) == GOOD
    path = tmp_path / "token"
    path.write_text(GOOD + "-file\n")
    assert read_token(str(path)) == GOOD + "-file"


def test_the_command_refuses_a_public_address_without_a_token():
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)}
    out = subprocess.run([sys.executable, "-m", "mucode_cli", "serve", "--host", "0.0.0.0", "--port", "0"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2
    assert "not a loopback address" in out.stderr and "token is required" in out.stderr


def test_importing_the_serve_package_stays_light():
    code = ("import sys, mucode_env.serve, mucode_cli, mucode_env.integrations.verl\n"
            "mucode_cli.build_parser()\n"
            "print(','.join(m for m in ('fastapi', 'uvicorn', 'starlette', 'openenv', 'pyarrow', 'gradio') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)})
    assert out.stdout.strip() == ""


def test_without_a_token_only_this_machine_is_served():
    import asyncio

    from mucode_env.serve.security import Guard

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def call(client):
        sent = []

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "path": "/v1/execute", "headers": [], "client": client}
        await Guard(app, token=None, max_body_bytes=1024, draining=lambda: False)(scope, receive, send)
        return sent[0]["status"]

    # Bound to 0.0.0.0 by hand (uvicorn.run(create_app(...), host=...)): remote clients are refused.
    assert asyncio.run(call(("192.168.1.5", 40000))) == 403
    assert asyncio.run(call(("127.0.0.1", 40000))) == 200
    assert asyncio.run(call(("::1", 40000))) == 200
