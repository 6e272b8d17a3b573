"""mucode's typed errors as HTTP answers, the same on the main app and on the mounted OpenEnv apps."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from mucode_env.errors import DatasetError, EpisodeError, MuCodeError, SandboxError, UnknownEnvError, UnknownProblemError
from mucode_env.serve.admission import Busy, ShuttingDown

# Most specific first.
STATUS: tuple[tuple[type[Exception], int, str], ...] = (
    (Busy, 429, "busy"),
    (ShuttingDown, 503, "shutting_down"),
    (SandboxError, 503, "sandbox_error"),
    (EpisodeError, 409, "episode"),
    (UnknownProblemError, 404, "unknown_problem"),
    (UnknownEnvError, 404, "unknown_env"),
    (DatasetError, 404, "dataset"),
    (MuCodeError, 400, "mucode"),
    (ValueError, 422, "invalid"),
    (IndexError, 422, "invalid"),
)


def error_response(exc: Exception) -> JSONResponse:
    for kind, status, code in STATUS:
        if isinstance(exc, kind):
            break
    else:  # pragma: no cover - only registered for the kinds above
        status, code = 500, "internal"
    headers = {}
    if isinstance(exc, Busy):
        headers["Retry-After"] = str(max(1, round(exc.retry_after_s)))
    if isinstance(exc, ShuttingDown):
        headers["Connection"] = "close"
    return JSONResponse({"error": code, "detail": str(exc)}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI, invalid_input: tuple[type[Exception], ...] = ()) -> None:
    """Answer mucode's errors with their status; ``invalid_input`` (e.g. ValueError from an
    environment's argument checks) become 422. Anything else stays a 500."""
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        return error_response(exc)

    for kind in (MuCodeError, *invalid_input):
        app.add_exception_handler(kind, handle)
