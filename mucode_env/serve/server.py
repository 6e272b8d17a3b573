"""Running ``mucode serve``: uvicorn with a shutdown that answers every request.

On SIGTERM/Ctrl-C (or ``RunningServer.stop``) the server stops accepting connections and new
requests (503), lets in-flight ones finish for ``shutdown_grace_s``, answers those still running
503, then closes the remaining connections (OpenEnv sessions get WebSocket close code 1012,
"service restart") and the sandbox. uvicorn's own graceful shutdown would wait forever or cancel
requests without an answer.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import uvicorn

from mucode_env.serve.app import create_app
from mucode_env.serve.config import ServeConfig
from mucode_env.serve.runtime import ServeRuntime

BACKSTOP_S = 5  # after the 503s: how long uvicorn may still wait for connections to close
# An idle keep-alive connection is closed by the server only after this long. Clients (httpx:
# 5 s, aiohttp: 15 s, requests: until reused) must give up an idle connection first: with equal
# timeouts a request sent just as the server closes the connection dies with a read error, a
# lost result under load (measured by benchmarks/serve_load.py with uvicorn's default of 5 s).
KEEP_ALIVE_S = 75
START_TIMEOUT_S = 60.0


class DrainingServer(uvicorn.Server):
    """uvicorn.Server whose shutdown drains the runtime first (see the module docstring)."""

    def __init__(self, config: uvicorn.Config, runtime: ServeRuntime) -> None:
        super().__init__(config)
        self.runtime = runtime

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:  # stop accepting connections at once
            server.close()
        await self.runtime.drain(self.runtime.config.shutdown_grace_s, cut_short=lambda: self.force_exit)
        await super().shutdown(sockets)


def uvicorn_config(app: object, config: ServeConfig, log_level: str = "info") -> uvicorn.Config:
    return uvicorn.Config(app, host=config.host, port=config.port, log_level=log_level, lifespan="on",
                          ws_max_size=config.max_body_bytes, timeout_graceful_shutdown=BACKSTOP_S,
                          timeout_keep_alive=KEEP_ALIVE_S,
                          server_header=False, proxy_headers=False)


def serve(config: ServeConfig, runtime: ServeRuntime | None = None, log_level: str = "info") -> None:
    """Run the server in this thread until SIGTERM/Ctrl-C (see the module docstring)."""
    app = create_app(config, runtime)
    server = DrainingServer(uvicorn_config(app, config, log_level), app.state.runtime)
    server.run()


class RunningServer:
    """The server on a background thread, for tests, benchmarks and notebooks.

    >>> with RunningServer(ServeConfig(port=0)) as server:              # doctest: +SKIP
    ...     httpx.get(server.url + "/health").json()["status"]
    'ok'

    ``stop()`` runs the same draining shutdown as SIGTERM.
    """

    def __init__(self, config: ServeConfig, runtime: ServeRuntime | None = None, log_level: str = "warning") -> None:
        self.config = config
        self.app = create_app(config, runtime)
        self.runtime: ServeRuntime = self.app.state.runtime
        uv_config = uvicorn_config(self.app, config, log_level)
        self._socket = uv_config.bind_socket()  # bound here: port 0 gets its number before start
        self.port = self._socket.getsockname()[1]
        self.server = DrainingServer(uv_config, self.runtime)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="mucode-serve", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._socket.close()
                raise RuntimeError(f"mucode serve did not start: {self._error!r}")
            time.sleep(0.01)

    def _run(self) -> None:
        try:
            asyncio.run(self.server.serve(sockets=[self._socket]))
        except BaseException as exc:  # reported by __init__ or stop()
            self._error = exc

    @property
    def url(self) -> str:
        host = self.config.host
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def stop(self, timeout_s: float | None = None) -> None:
        """Shut down like SIGTERM (drain, 503 for what is left) and wait for the thread."""
        self.server.should_exit = True
        self._thread.join(timeout_s)
        if self._error is not None:
            raise RuntimeError(f"mucode serve failed: {self._error!r}") from self._error

    def __enter__(self) -> "RunningServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
