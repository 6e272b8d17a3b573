"""The host side of the sandbox: a pool of jailed fork-server workers with a result cache."""

from __future__ import annotations

import functools
import hashlib
import json
import marshal
import os
import queue
import select
import shutil
import signal
import struct
import subprocess
import threading
import time
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields

from mucode_env.errors import SandboxError
from mucode_env.problem import TestCase
from mucode_env.sandbox import jail
from mucode_env.sandbox.cache import ResultCache, run_once_each
from mucode_env.sandbox.checking import judge_call, judge_stdio, loads_strict
from mucode_env.sandbox.executor import SharedPool
from mucode_env.sandbox.limits import SandboxLimits
from mucode_env.sandbox.results import ExecResult, Status
from mucode_env.sandbox.seccomp import child_filter_bpf


STARTUP_TIMEOUT_S = 30.0
REPLY_MARGIN_S = 10.0
DEFAULT_PRELOAD = ("numpy",)
MAX_MESSAGE_BYTES = 256 << 20
# Jobs sent to a worker in one message (each still runs in its own child): one round trip, one
# wake-up of the host thread and of the zygote, for up to this many executions.
MAX_BATCH = 8


def starved(result: ExecResult) -> bool:
    """Whether ``result``'s child was kept from running by load rather than by itself.

    With the kernel's run-queue wait (``run_delay_ms``): waiting for a CPU at least a quarter of
    the wall time (a program that runs alone waits a few milliseconds; CI saw a memory hog time
    out after waiting 49% of its second, so half was too strict).
    Without it: getting under half a CPU, which cannot tell a sleeping program from a starved
    one (such a program is then retried once too)."""
    if result.run_delay_ms is not None:
        return result.run_delay_ms >= 0.25 * result.wall_ms
    return result.cpu_ms < 0.5 * result.wall_ms


@dataclass(frozen=True)
class SandboxConfig:
    """How the pool is built.

    Attributes:
        tier: "auto" (bwrap jail if it works, else the process tier with a warning), "bwrap",
            "process", or "none" (no uid switch, no seccomp: explicit opt-in only).
        n_workers: worker processes; default one per core.
        preload: packages made visible inside the jail and imported once per worker, in a second
            fork server that runs the programs whose code or setup names one of them (the
            others fork from a zygote without them, which is cheaper). That server also holds
            the rarely used standard modules (``zygote.RARE_STDLIB``: decimal, datetime, ...);
            with ``preload=()`` there is no second server and programs import those themselves.
        tmpfs_mb: size of each jail's private /tmp.
        cache_size: results kept for identical (code, tests, limits); 0 disables the cache.
        max_executions_per_worker: recycle a worker after this many executions.
        retry_starved_timeouts: re-run once a TIMEOUT whose child waited for a CPU for at least
            a quarter of its wall time (the machine was oversubscribed; see :func:`starved`), so load
            does not turn into false negatives. A program that sleeps is not retried.
        default_limits: limits for jobs that do not bring their own.
    """

    tier: str = "auto"
    n_workers: int | None = None
    preload: tuple[str, ...] = DEFAULT_PRELOAD
    tmpfs_mb: int = 64
    cache_size: int = 4096
    max_executions_per_worker: int = 5000
    retry_starved_timeouts: bool = True
    default_limits: SandboxLimits = field(default_factory=SandboxLimits)

    def __post_init__(self) -> None:
        if self.tier not in jail.TIERS:
            raise ValueError(f"tier must be one of {jail.TIERS}, got {self.tier!r}")
        if self.n_workers is not None and self.n_workers < 1:
            raise ValueError(f"n_workers must be >= 1 or None, got {self.n_workers}")
        if self.tmpfs_mb < 1:
            raise ValueError(f"tmpfs_mb must be >= 1, got {self.tmpfs_mb}")


@dataclass(frozen=True)
class Job:
    """One program to run on a list of tests (all FUNCTION style or all STDIO style).

    ``capture_streams`` (stdio jobs only): also return each run's raw stdout, stderr and exit
    status in ``ExecResult.runs``, for callers that need the program's output itself.
    """

    code: str
    tests: tuple[TestCase, ...]
    setup: str = ""
    limits: SandboxLimits | None = None
    capture_streams: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.code, str):
            raise TypeError(f"Job.code must be a str, got {type(self.code).__name__}")
        object.__setattr__(self, "tests", tuple(self.tests))
        kinds = {t.is_stdio for t in self.tests}
        if len(kinds) > 1:
            raise ValueError("a Job mixes stdin/stdout tests with function tests; split it into two jobs")
        if self.capture_streams and kinds != {True}:
            raise ValueError("capture_streams needs stdin/stdout tests (TestCase(display, stdin=...)); "
                             "function tests return values, not streams")

    @property
    def is_stdio(self) -> bool:
        return bool(self.tests) and self.tests[0].is_stdio

    def key(self, limits: SandboxLimits) -> tuple | str:
        """The key of identical jobs (dedup in a batch, the result cache): the fields themselves,
        which hash in a microsecond (a JSON dump and a SHA-256 of them took a tenth of the host's
        CPU per job); the digest when a test was built with lists, which do not hash."""
        key = (self.code, self.setup, self.tests, limits, self.capture_streams)
        try:
            hash(key)
        except TypeError:
            return self.cache_key(limits)
        return key

    def cache_key(self, limits: SandboxLimits) -> str:
        """A stable digest of the job under ``limits`` (for caches that outlive this process;
        the pool itself keys on the job's fields, :meth:`key`)."""
        # Every field of every dataclass, in declaration order (dataclasses.asdict deep-copies
        # and took a third of the host's CPU per execution).
        parts = [self.code, self.setup, [_field_values(t) for t in self.tests], _field_values(limits)]
        if self.capture_streams:  # a different result (it carries the streams); old keys unchanged
            parts.append("streams")
        payload = json.dumps(parts)
        return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()




@functools.lru_cache(maxsize=None)
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


def _field_values(obj: object) -> list:
    return [getattr(obj, name) for name in _field_names(type(obj))]


class _Worker:
    """One zygote process (jailed) and the pipe protocol to it."""

    def __init__(self, tier: str, slot: int, config: SandboxConfig, seccomp_hex: str) -> None:
        self.slot = slot
        self.spec = jail.build_worker(tier, slot, config.preload, config.tmpfs_mb, seccomp_hex)
        self.proc: subprocess.Popen | None = None
        self.executions = 0
        self.preloaded: list[str] = []
        self.start()

    def start(self) -> None:
        self.proc = jail.start_process(self.spec)
        self.executions = 0
        self._pending = bytearray()  # read ahead from the worker's stdout (see _read_exact)
        try:
            self._send(self.spec.config)
            ready = self._receive(STARTUP_TIMEOUT_S)
        except SandboxError as exc:
            stderr = self._stderr_tail()
            self.kill()
            raise SandboxError(f"sandbox worker ({self.spec.tier} tier) failed to start: {exc}. {stderr}") from None
        if not ready.get("ready"):
            self.kill()
            raise SandboxError(f"sandbox worker sent an unexpected greeting: {str(ready)[:200]}")
        self.preloaded = ready.get("preloaded", [])
        self.landlock = int(ready.get("landlock") or 0)  # the ABI its children confine themselves with

    def _stderr_tail(self) -> str:
        if self.proc is None or self.proc.stderr is None:
            return ""
        try:
            if self.proc.poll() is not None:
                return self.proc.stderr.read().decode("utf-8", "replace")[-500:]
        except (OSError, ValueError):
            pass
        return ""

    def _send(self, obj: dict) -> None:
        # Requests go as marshal (trusted to trusted, same interpreter; ~4x cheaper than JSON
        # to write and to read). Replies come back as JSON: marshal is not safe to load from a
        # process that untrusted code runs next to.
        assert self.proc is not None and self.proc.stdin is not None
        data = marshal.dumps(obj)
        try:
            self.proc.stdin.write(struct.pack(">I", len(data)) + data)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise SandboxError(f"worker pipe closed ({exc})") from None

    def _read_exact(self, n: int, deadline: float) -> bytes:
        # Reads ahead (up to 1 MiB) into self._pending: a reply's header and body usually come
        # in one read, one select and one read syscall per message instead of two of each.
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        pending = self._pending
        while len(pending) < n:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                raise SandboxError("worker did not answer in time")
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                continue
            chunk = os.read(fd, min(max(n - len(pending), 1 << 16), 1 << 20))
            if not chunk:
                raise SandboxError("worker exited")
            pending += chunk
        data = bytes(pending[:n])
        del pending[:n]
        return data

    def _receive(self, timeout_s: float) -> dict:
        deadline = time.monotonic() + timeout_s
        (size,) = struct.unpack(">I", self._read_exact(4, deadline))
        if size > MAX_MESSAGE_BYTES:
            raise SandboxError(f"worker sent an oversized message ({size} bytes)")
        try:
            return loads_strict(self._read_exact(size, deadline).decode("utf-8"))
        except ValueError as exc:
            raise SandboxError(f"worker sent malformed JSON ({exc})") from None

    def request(self, payload: dict, timeout_s: float) -> dict:
        self._send(payload)
        reply = self._receive(timeout_s)
        self.executions += 1
        if "infra_error" in reply:
            raise SandboxError(f"worker failed: {reply['infra_error']}")
        return reply

    def request_batch(self, payloads: list[dict], timeout_s: float) -> list[dict]:
        """Run several requests in one message; one reply each, in order. A reply may be an
        ``infra_error`` of its own (the others stand)."""
        self._send({"op": "batch", "requests": payloads})
        reply = self._receive(timeout_s)
        replies = reply.get("replies")
        if not isinstance(replies, list) or len(replies) != len(payloads) \
                or not all(isinstance(r, dict) for r in replies):
            raise SandboxError(f"worker sent a malformed batch reply: {str(reply)[:200]}")
        self.executions += len(payloads)
        return replies

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.kill()
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        self.proc = None

    def restart(self) -> None:
        self.kill()
        self.start()


def _detect_tier(requested: str) -> str:
    """The strongest tier that starts here: a real worker is launched and pinged to prove it."""
    if requested != "auto":
        return requested
    if jail.bwrap_path() is not None:
        try:
            probe = _Worker("bwrap", 0, SandboxConfig(tier="bwrap", preload=()), child_filter_bpf().hex())
            probe.kill()
            return "bwrap"
        except (SandboxError, OSError) as exc:
            reason = str(exc)
    else:
        reason = "bwrap is not installed (apt-get install bubblewrap)"
    weaker = "no namespaces: files are kept out of reach by Landlock where the kernel has it"
    if not jail.is_root():
        weaker += " (as this host is not root there is no uid switch either: install bubblewrap)"
    warnings.warn(f"mucode sandbox: falling back to the 'process' tier ({weaker}): {reason}", RuntimeWarning,
                  stacklevel=3)
    return "process"


class Sandbox(SharedPool):
    """Runs untrusted programs in a pool of jailed fork servers, one per core.

    Programs never run in this process and never decide their own verdict: the child returns
    plain values or stdout, and this process compares them with the hidden answers.

    >>> with Sandbox() as sandbox:                                        # doctest: +SKIP
    ...     result = sandbox.run("def f(x): return x + 1",
    ...                          [TestCase("assert f(1) == 2", ("f(1)",), "assert _0 == 2")])
    >>> result.status                                                      # doctest: +SKIP
    <Status.PASSED: 'passed'>
    """

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        if self.config.tier == "none":
            warnings.warn("mucode sandbox tier 'none': no uid switch and no seccomp filter. Use only for "
                          "trusted code.", RuntimeWarning, stacklevel=2)
        self.tier = _detect_tier(self.config.tier)
        self._seccomp_hex = child_filter_bpf().hex() if self.tier != "none" else ""
        n = self.config.n_workers or os.cpu_count() or 1
        self._workers: list[_Worker] = []
        try:
            for slot in range(n):
                self._workers.append(_Worker(self.tier, slot, self.config, self._seccomp_hex))
        except BaseException:
            self.close()
            raise
        if self.tier == "process" and self.landlock_abi == 0:
            warnings.warn("mucode sandbox: this kernel has no Landlock (Linux >= 5.13 with landlock among its "
                          "LSMs), so the 'process' tier cannot keep programs from reading files their uid can "
                          "read (and, on a host that is not root, writing this user's files)", RuntimeWarning,
                          stacklevel=2)
        self._idle: queue.Queue[_Worker] = queue.Queue()
        for worker in self._workers:
            self._idle.put(worker)
        self._executor = ThreadPoolExecutor(max_workers=n, thread_name_prefix="mucode-sandbox")
        self._cache = ResultCache(self.config.cache_size)
        self._closed = False
        self.stats = {"executions": 0, "cache_hits": 0, "retries": 0, "restarts": 0}

    # ---- public API --------------------------------------------------------------------------
    @property
    def landlock_abi(self) -> int:
        """The Landlock ABI the process tier's children confine themselves with (0: none; the
        bwrap tier relies on its mount namespace instead)."""
        return min((worker.landlock for worker in self._workers), default=0)

    @property
    def n_workers(self) -> int:
        return len(self._workers)

    def run(self, code: str, tests: Sequence[TestCase], setup: str = "", limits: SandboxLimits | None = None) -> ExecResult:
        """Run one program on ``tests``."""
        return self.execute([Job(code, tuple(tests), setup, limits)])[0]

    def execute(self, jobs: Iterable[Job]) -> list[ExecResult]:
        """Run every job, all workers busy; identical jobs run once. Results keep the input order.

        Raises:
            SandboxError: a job failed for infrastructure reasons twice in a row.
        """
        if self._closed:
            raise SandboxError("this Sandbox is closed")
        results = run_once_each(list(jobs), self.config.default_limits, self._cache, self._run_unique)
        self.stats["cache_hits"] += sum(r.cache_hit for r in results)
        return results

    def close(self) -> None:
        """Kill every worker (idempotent)."""
        if getattr(self, "_closed", False):
            return
        self._closed = True
        executor = getattr(self, "_executor", None)
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        for worker in self._workers:
            worker.kill()
            # Process/none tiers keep their scratch root on the host's /tmp: remove it (rmtree
            # does not follow the symlinks a program may have left).
            if worker.spec.tier in ("process", "none"):
                shutil.rmtree(worker.spec.config["scratch_root"], ignore_errors=True)

    def worker_pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers if w.proc is not None]

    # ---- internals ---------------------------------------------------------------------------
    def _limits(self, job: Job) -> SandboxLimits:
        return job.limits or self.config.default_limits

    def _run_unique(self, jobs: list[Job]) -> list[ExecResult]:
        """Run distinct jobs on every worker. One task per worker pulls jobs until none is left
        (not one future per job: a thread handoff per execution was a tenth of the host's CPU per
        execution), several at a time while many remain (see MAX_BATCH), fewer towards the end so
        that workers finish together."""
        results: list[ExecResult | None] = [None] * len(jobs)
        todo = list(enumerate(jobs))
        todo.reverse()
        take = threading.Lock()

        def drain() -> None:
            while True:
                with take:
                    size = max(1, min(MAX_BATCH, len(todo) // (2 * self.n_workers)))
                    batch = [todo.pop() for _ in range(min(size, len(todo)))]
                if not batch:
                    return
                for (index, _), result in zip(batch, self._run_batch([job for _, job in batch])):
                    results[index] = result

        tasks = [self._executor.submit(drain) for _ in range(min(len(jobs), self.n_workers))]
        for task in tasks:
            task.result()
        return results  # type: ignore[return-value]

    def _recycle(self, worker: _Worker) -> None:
        try:
            worker.restart()
            self.stats["restarts"] += 1
        except SandboxError:
            worker.kill()  # restarted (or reported) when it is next used

    def _payload(self, job: Job, limits: SandboxLimits) -> tuple[dict, float]:
        if job.is_stdio:
            deadline = limits.total_s or limits.per_test_s + 1.0
            payload = {"mode": "stdio", "code": job.code, "stdins": [t.stdin for t in job.tests],
                       "per_test_s": limits.per_test_s}
            reply_timeout = len(job.tests) * (deadline + 1.0) + REPLY_MARGIN_S
        else:
            deadline = limits.deadline_s(len(job.tests))
            payload = {"mode": "call", "code": job.code, "setup": job.setup,
                       "tests": [list(t.exprs) for t in job.tests], "per_test_s": limits.per_test_s}
            reply_timeout = deadline + REPLY_MARGIN_S
        payload["value_bytes"] = limits.value_bytes
        payload["limits"] = {
            "deadline_s": deadline, "cpu_s": int(deadline) + 1, "memory_mb": limits.memory_mb,
            "fsize_mb": limits.fsize_mb, "nofile": limits.nofile, "nproc": limits.nproc,
            "capture_bytes": limits.capture_bytes,
        }
        return payload, reply_timeout

    def _judge(self, job: Job, limits: SandboxLimits, reply: dict, deadline: float) -> ExecResult:
        runs = reply.get("runs") or []
        if job.is_stdio:
            return judge_stdio(job.tests, runs, limits.memory_mb, limits.fsize_mb, deadline,
                               capture_streams=job.capture_streams)
        return judge_call(job.tests, runs[0] if runs else {}, limits.memory_mb, limits.fsize_mb, deadline)

    def _retry_starved(self, result: ExecResult, attempt: int) -> bool:
        return (attempt == 0 and result.status is Status.TIMEOUT and self.config.retry_starved_timeouts
                and starved(result))

    def _run_batch(self, batch: list[Job]) -> list[ExecResult]:
        """Run jobs on one worker in one message; same verdicts, retries and errors as running
        each with _run_job (the batch is each job's first attempt)."""
        if len(batch) == 1:
            return [self._run_job(batch[0])]
        results: list[ExecResult | None] = [None] * len(batch)
        prepared = []
        for index, job in enumerate(batch):
            limits = self._limits(job)
            if not job.tests:
                results[index] = ExecResult(Status.PASSED)
                continue
            payload, reply_timeout = self._payload(job, limits)
            prepared.append((index, job, limits, payload, reply_timeout))
        if not prepared:
            return results  # type: ignore[return-value]
        # The jobs run one after the other: their budgets add up (one margin for the message).
        timeout = sum(p[4] - REPLY_MARGIN_S for p in prepared) + REPLY_MARGIN_S
        worker = self._idle.get()
        replies: list[dict] | None = None
        last_error = ""
        try:
            if not worker.alive() or worker.executions >= self.config.max_executions_per_worker:
                worker.restart()
                self.stats["restarts"] += 1
            replies = worker.request_batch([p[3] for p in prepared], timeout)
            if any(isinstance(run, dict) and run.get("dirty") for reply in replies for run in reply.get("runs") or ()):
                self._recycle(worker)  # as in _run_job; the zygote ran nothing after the dirty one
        except SandboxError as exc:
            last_error = str(exc)
            self.stats["retries"] += 1
            try:
                worker.restart()
                self.stats["restarts"] += 1
            except SandboxError as restart_error:
                last_error += f"; restart failed: {restart_error}"
        finally:
            self._idle.put(worker)
        for n, (index, job, limits, payload, _) in enumerate(prepared):
            reply = replies[n] if replies is not None else None
            if reply is None or "infra_error" in reply:
                if reply is not None and reply.get("skipped"):
                    results[index] = self._run_job(job)  # never ran: both attempts left
                else:
                    if reply is not None:
                        last_error = f"worker failed: {reply['infra_error']}"
                        self.stats["retries"] += 1
                    results[index] = self._run_job(job, first_attempt=1, last_error=last_error)
                continue
            self.stats["executions"] += 1
            result = self._judge(job, limits, reply, payload["limits"]["deadline_s"])
            if self._retry_starved(result, 0):
                self.stats["retries"] += 1
                result = self._run_job(job, first_attempt=1)
            results[index] = result
        return results  # type: ignore[return-value]

    def _run_job(self, job: Job, first_attempt: int = 0, last_error: str = "") -> ExecResult:
        limits = self._limits(job)
        if not job.tests:
            return ExecResult(Status.PASSED)
        payload, reply_timeout = self._payload(job, limits)
        deadline = payload["limits"]["deadline_s"]
        for attempt in range(first_attempt, 2):
            worker = self._idle.get()
            try:
                if not worker.alive() or worker.executions >= self.config.max_executions_per_worker:
                    worker.restart()
                    self.stats["restarts"] += 1
                reply = worker.request(payload, reply_timeout)
                if any(isinstance(run, dict) and run.get("dirty") for run in reply.get("runs") or ()):
                    # The zygote could not wipe the program's scratch quickly (inode flood): a
                    # fresh jail frees its tmpfs at once. The verdict below stands.
                    self._recycle(worker)
            except SandboxError as exc:
                last_error = str(exc)
                self.stats["retries"] += 1
                try:
                    worker.restart()
                    self.stats["restarts"] += 1
                except SandboxError as restart_error:
                    last_error += f"; restart failed: {restart_error}"
                continue
            finally:
                self._idle.put(worker)
            self.stats["executions"] += 1
            result = self._judge(job, limits, reply, deadline)
            if self._retry_starved(result, attempt):
                self.stats["retries"] += 1
                continue
            return result
        return ExecResult(Status.SANDBOX_ERROR, message=f"sandbox failure (retried once): {last_error}")
