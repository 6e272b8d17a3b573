"""What every endpoint of ``mucode serve`` shares: the sandbox, the problems and the admission gate.

Endpoints never execute anything themselves: they hand a blocking function (which calls
``Sandbox.execute``; the untrusted programs run in the sandbox's jailed workers) to
:meth:`ServeRuntime.call`, which takes an admission slot, runs the function on a worker thread
and gives the slot back when the function has really finished, even if the client has gone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from mucode_env.scoring import ProblemStore
from mucode_env.sandbox import Sandbox
from mucode_env.serve.admission import Admission, ShuttingDown
from mucode_env.serve.config import ServeConfig

T = TypeVar("T")
DRAIN_POLL_S = 0.05
ANSWER_S = 1.0  # after the grace period: time for the handlers to write their 503s


class ServeRuntime:
    """The shared state of one server.

    Args:
        config: the server's settings.
        sandbox: a sandbox to use (not closed by ``close``); default: one started from
            ``config.sandbox`` and owned by the runtime.
        problems: a problem store to use; default: one reading ``config.data_dir``.
    """

    def __init__(self, config: ServeConfig, sandbox: Sandbox | None = None,
                 problems: ProblemStore | None = None) -> None:
        self.config = config
        self._owns_sandbox = sandbox is None
        self.sandbox = sandbox if sandbox is not None else Sandbox(config.sandbox)
        self.problems = problems if problems is not None else ProblemStore(config.data_dir)
        self.admission = Admission(config.max_concurrent, config.max_queue, config.queue_timeout_s)
        self._executor = ThreadPoolExecutor(max_workers=config.max_concurrent, thread_name_prefix="mucode-serve")
        self.started_at = time.time()
        self._calls = 0  # calls between entering call() and answering

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on a worker thread under an admission slot.

        Raises:
            Busy: no slot (HTTP 429).
            ShuttingDown: the server is shutting down, or its grace period ended before ``fn``
                finished (HTTP 503; ``fn`` still runs to its end in the background).
        """
        self._calls += 1
        try:
            await self.admission.acquire()
            loop = asyncio.get_running_loop()
            try:
                work = self._executor.submit(fn, *args)
            except BaseException:
                self.admission.release()
                raise

            def release(_: object) -> None:
                try:
                    loop.call_soon_threadsafe(self.admission.release)
                except RuntimeError:  # the server's loop is closed: it has shut down, nothing to release
                    pass

            # The slot is released when the work is really over, not when this coroutine ends
            # (a disconnected client or an expired shutdown must not let more work in than allowed).
            work.add_done_callback(release)
            result = asyncio.wrap_future(work)
            expired = self.admission.expired()
            done, _ = await asyncio.wait({result, expired}, return_when=asyncio.FIRST_COMPLETED)
            if result in done:
                return result.result()
            self.admission.counts["expired"] += 1
            raise ShuttingDown(f"the server shut down after its {self.config.shutdown_grace_s:g} s grace period "
                               f"before this request finished; its result was discarded")
        finally:
            self._calls -= 1

    async def drain(self, grace_s: float, cut_short: Callable[[], bool] = lambda: False) -> None:
        """Refuse new work, let running and queued work finish for up to ``grace_s`` (or until
        ``cut_short()``: a second Ctrl-C), then fail the rest."""
        self.admission.begin_drain()
        deadline = time.monotonic() + grace_s
        while not self.admission.idle and time.monotonic() < deadline and not cut_short():
            await asyncio.sleep(DRAIN_POLL_S)
        self.admission.expire()
        # Let the waiting handlers answer (503, or an error message in an OpenEnv session) before
        # uvicorn closes the connections: it closes WebSockets at once.
        deadline = time.monotonic() + ANSWER_S
        while self._calls and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(ANSWER_S / 10)

    def health(self) -> dict[str, Any]:
        admission = self.admission
        return {
            "status": "draining" if admission.draining else "ok",
            "running": admission.running,
            "queued": admission.waiting,
            "max_concurrent": admission.max_concurrent,
            "max_queue": admission.max_queue,
            "counts": dict(admission.counts),
            "sandbox": {"tier": self.sandbox.tier, "workers": self.sandbox.n_workers},
            "uptime_s": round(time.time() - self.started_at, 1),
        }

    def close(self) -> None:
        """Stop the worker threads (work in progress ends by its own deadline) and an owned sandbox."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._owns_sandbox:
            self.sandbox.close()
