"""One running ``mucode serve`` (with a token) shared by the serve tests, and the hostile programs.

The server gets its own sandbox with the result cache off, so that comparisons with in-process
runs compare two real executions.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

import pytest

from mucode_env.problem import IOStyle, Problem
from mucode_env.sandbox import Sandbox, SandboxConfig

TOKEN = "serve-test-token-0123456789"
ADVERSARIAL = Path(__file__).resolve().parents[1] / "test_sandbox_adversarial.py"
ADVERSARIAL_TIME_LIMIT_S = 2.0  # wide enough that no hostile program sits between two statuses


def require(module: str):
    """Import an optional test dependency: skip without it locally, fail under CI=true."""
    if os.environ.get("CI") == "true":
        return importlib.import_module(module)
    return pytest.importorskip(module)


def load_adversarial():
    """The adversarial suite's module, registered as ``mucode_adversarial_cases`` so that the test
    modules here can ``import mucode_adversarial_cases`` for its table of hostile programs
    (``CASES``: code, tests, limits, expected status) instead of copying it."""
    name = "mucode_adversarial_cases"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ADVERSARIAL)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


ADV = load_adversarial()  # before any sandbox starts: it sets the canary the jail must not see


def _adversarial_problems() -> list[Problem]:
    """Two problems whose public and private tests are the adversarial suite's: a function call
    that must return 7919 (the program never learns it) and a stdin/stdout sum."""
    return [
        Problem("ADV/call", "Return the secret.", IOStyle.FUNCTION, "f", tuple(ADV.SECRET), tuple(ADV.SECRET), "",
                time_limit_s=ADVERSARIAL_TIME_LIMIT_S, source="adversarial", split="adversarial"),
        Problem("ADV/stdio", "Add two numbers.", IOStyle.STDIO, None, tuple(ADV.STDIO), tuple(ADV.STDIO), "",
                time_limit_s=ADVERSARIAL_TIME_LIMIT_S, source="adversarial", split="adversarial"),
    ]


@pytest.fixture(scope="session")
def serve_sandbox():
    with Sandbox(SandboxConfig(cache_size=0, n_workers=2)) as sandbox:
        yield sandbox


@pytest.fixture(scope="session")
def server(serve_sandbox, data_dir):
    """``mucode serve`` on a free loopback port with a token; MBPP and HumanEval over OpenEnv, and
    the adversarial problems as split ``mbpp/adversarial``."""
    require("fastapi")
    require("uvicorn")
    require("openenv.core")
    from mucode_env.serve import ServeConfig
    from mucode_env.serve.runtime import ServeRuntime
    from mucode_env.serve.server import RunningServer

    config = ServeConfig(port=0, token=TOKEN, envs=("MuCode-MBPP-v0", "MuCode-HumanEval-v0"), max_concurrent=4,
                         max_queue=32, data_dir=str(data_dir), max_batch=16, max_body_bytes=1 << 20)
    runtime = ServeRuntime(config, sandbox=serve_sandbox)
    runtime.problems.add("mbpp", "adversarial", _adversarial_problems())
    running = RunningServer(config, runtime=runtime)
    try:
        yield running
    finally:
        running.stop()
        runtime.close()


@pytest.fixture
def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def token() -> str:
    return TOKEN


@pytest.fixture
def url_with_token(server) -> str:
    """``http://mucode:<token>@host:port``: for clients that cannot set headers (HTTP Basic auth)."""
    scheme, rest = server.url.split("://", 1)
    return f"{scheme}://mucode:{TOKEN}@{rest}"


@pytest.fixture(scope="session")
def adversarial_problems() -> list[Problem]:
    """The problems served as ``mbpp/adversarial`` (``ADV/call``, ``ADV/stdio``)."""
    return _adversarial_problems()


@pytest.fixture(scope="session")
def adversarial():
    """The adversarial suite's module: ``CASES`` (hostile programs and their statuses), ``SECRET``, ``STDIO``."""
    return ADV


@pytest.fixture(scope="session")
def sandbox_fusion():
    return require("sandbox_fusion")


@pytest.fixture(scope="session")
def openenv_core():
    return require("openenv.core")
