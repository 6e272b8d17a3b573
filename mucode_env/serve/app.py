"""The FastAPI application of ``mucode serve``: every protocol on one sandbox.

Routes:
- ``GET /health``: status and load (open without the token; 503 while shutting down).
- ``POST /v1/execute``: mucode's batch endpoint (``native``).
- ``POST /run_code``, ``/submit``, ``/get_prompts``, ``/get_prompt_by_id``, ``GET /v1/ping``:
  SandboxFusion's API (``sandbox_fusion``).
- ``/openenv/<env id>/...``: the OpenEnv protocol per environment (``openenv``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.responses import JSONResponse

import mucode_env
from mucode_env.serve import native, openenv, sandbox_fusion
from mucode_env.serve.config import ServeConfig
from mucode_env.serve.http_errors import install_error_handlers
from mucode_env.serve.runtime import ServeRuntime
from mucode_env.serve.security import Guard


def create_app(config: ServeConfig | None = None, runtime: ServeRuntime | None = None) -> FastAPI:
    """Build the application. Without ``runtime`` it starts one (a sandbox pool) and closes it on
    shutdown; a given runtime is left open for its owner."""
    config = config or (runtime.config if runtime is not None else ServeConfig())
    owned = runtime is None
    runtime = runtime if runtime is not None else ServeRuntime(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if owned:
                runtime.close()

    app = FastAPI(title="mucode serve", version=mucode_env.__version__, lifespan=lifespan,
                  description="mucode's sandbox and environments: OpenEnv, SandboxFusion and a native batch API")
    app.state.runtime = runtime
    install_error_handlers(app)

    @app.get("/health", tags=["health"])
    async def health() -> JSONResponse:
        report = runtime.health()
        return JSONResponse(report, status_code=503 if report["status"] == "draining" else 200)

    app.include_router(native.router(runtime))
    app.include_router(sandbox_fusion.router(runtime))
    sessions = openenv.mount(app, runtime)
    app.add_middleware(Guard, token=config.token, max_body_bytes=config.max_body_bytes,
                       draining=lambda: runtime.admission.draining, sessions_full=sessions.full)
    return app
