"""``mucode serve``: the environments and the sandbox as an HTTP service.

One process, one sandbox pool, three protocols (see ``app``): OpenEnv (``/openenv/<env id>``),
SandboxFusion (``/run_code``, ``/submit``, ...) and mucode's batch API (``/v1/execute``).
Loopback by default; any other address needs a token (``ServeConfig``).

Importing this package does not import FastAPI, uvicorn or openenv-core (``pip install
'mucode[serve]'``); ``create_app``, ``serve`` and ``RunningServer`` load them when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mucode_env.serve.admission import Busy, ShuttingDown
from mucode_env.serve.config import ServeConfig, is_loopback

if TYPE_CHECKING:
    from fastapi import FastAPI

    from mucode_env.serve.runtime import ServeRuntime
    from mucode_env.serve.server import RunningServer


def create_app(config: ServeConfig | None = None, runtime: "ServeRuntime | None" = None) -> "FastAPI":
    """The FastAPI application (see ``mucode_env.serve.app.create_app``)."""
    from mucode_env.serve.app import create_app as _create_app

    return _create_app(config, runtime)


def serve(config: ServeConfig, **kwargs: Any) -> None:
    """Run the server until SIGTERM/Ctrl-C (see ``mucode_env.serve.server.serve``)."""
    from mucode_env.serve.server import serve as _serve

    _serve(config, **kwargs)


def RunningServer(config: ServeConfig, **kwargs: Any) -> "RunningServer":  # noqa: N802 (a class, loaded lazily)
    """The server on a background thread (see ``mucode_env.serve.server.RunningServer``)."""
    from mucode_env.serve.server import RunningServer as _RunningServer

    return _RunningServer(config, **kwargs)


__all__ = ["Busy", "RunningServer", "ServeConfig", "ShuttingDown", "create_app", "is_loopback", "serve"]
