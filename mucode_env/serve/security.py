"""The outermost layer of ``mucode serve``: token, request size, and no new sessions at shutdown.

A pure ASGI middleware, so it guards plain HTTP routes, the mounted OpenEnv apps and their
WebSocket handshakes alike.

- Without a token only loopback clients are served (403 otherwise), whatever address the app
  was bound to.
- Token: ``Authorization: Bearer <token>``, or HTTP Basic auth whose password (or user) is the
  token: that is what ``requests``, ``aiohttp`` and ``websockets`` send for a URL
  ``http://user:<token>@host:port``, so unmodified clients (SandboxFusion's, OpenEnv's) that
  cannot set headers still authenticate. Compared in constant time. ``GET /health`` is open.
- Size: a body over ``max_body_bytes`` is refused with 413 before the endpoint sees it (by its
  Content-Length, or while it streams in).
- WebSocket handshakes are refused with 503 while shutting down and 429 when the environment's
  sessions are all in use.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from mucode_env.serve.config import is_loopback

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _same(secret: bytes, candidate: str) -> bool:
    return hmac.compare_digest(secret, candidate.encode("utf-8", "surrogatepass"))


def token_matches(token: str, authorization: str | None) -> bool:
    """Whether an ``Authorization`` header carries ``token`` (Bearer, or Basic user or password)."""
    if not authorization:
        return False
    scheme, _, value = authorization.strip().partition(" ")
    secret = token.encode("utf-8")
    value = value.strip()
    if scheme.lower() == "bearer":
        return _same(secret, value)
    if scheme.lower() == "basic":
        try:
            user, _, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        # Both comparisons always run: how long this takes does not tell which one matched.
        return _same(secret, password) | _same(secret, user)
    return False


def _from_loopback(scope: Scope) -> bool:
    client = scope.get("client")
    return client is None or is_loopback(str(client[0]))  # None: an in-process test client


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


async def send_json(send: Send, status: int, body: dict[str, Any], headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": data})


async def deny_websocket(scope: Scope, send: Send, status: int, body: dict[str, Any],
                         headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """Refuse a WebSocket handshake with an HTTP status when the server supports it, else close it."""
    if "websocket.http.response" in (scope.get("extensions") or {}):
        data = json.dumps(body).encode()
        await send({"type": "websocket.http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), *headers]})
        await send({"type": "websocket.http.response.body", "body": data})
    else:
        await send({"type": "websocket.close", "code": 1008 if status in (401, 403) else 1013})


class Guard:
    """ASGI middleware: authentication, body size, WebSocket refusal while draining.

    Args:
        app: the application.
        token: required token, or None (loopback only: the config refuses other hosts).
        max_body_bytes: largest request body.
        draining: returns True once the server is shutting down.
        sessions_full: whether a WebSocket path's environment has no free session (429).
        open_paths: paths reachable without the token.
    """

    def __init__(self, app: ASGIApp, token: str | None, max_body_bytes: int, draining: Callable[[], bool],
                 sessions_full: Callable[[str], bool] = lambda path: False,
                 open_paths: tuple[str, ...] = ("/health",)) -> None:
        self.app = app
        self.token = token
        self.max_body_bytes = max_body_bytes
        self.draining = draining
        self.sessions_full = sessions_full
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):  # lifespan
            await self.app(scope, receive, send)
            return
        if self.token is None and not _from_loopback(scope):
            # No token means this machine only (ServeConfig refuses other hosts); this also holds
            # when someone binds the app elsewhere with uvicorn directly.
            body = {"error": "forbidden", "detail": "this server has no token, so it only answers this machine; "
                                                    "start it with a token to serve other hosts"}
            if kind == "websocket":
                await deny_websocket(scope, send, 403, body)
            else:
                await send_json(send, 403, body)
            return
        if self.token is not None and scope.get("path") not in self.open_paths \
                and not token_matches(self.token, _header(scope, b"authorization")):
            body = {"error": "unauthorized", "detail": "missing or wrong token: send 'Authorization: Bearer <token>' "
                                                       "or put it in the URL as http://user:<token>@host:port"}
            challenge = [(b"www-authenticate", b'Bearer realm="mucode"')]
            if kind == "websocket":
                await deny_websocket(scope, send, 401, body, challenge)
            else:
                await send_json(send, 401, body, challenge)
            return
        if kind == "websocket":
            if self.draining():
                await deny_websocket(scope, send, 503, {"error": "shutting_down",
                                                        "detail": "the server is shutting down; no new sessions"})
                return
            if self.sessions_full(scope.get("path", "")):
                await deny_websocket(scope, send, 429, {"error": "busy", "detail": "every session of this environment "
                                                                                   "is in use; retry later"},
                                     [(b"retry-after", b"1")])
                return
            await self.app(scope, receive, send)
            return
        await self._http(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        too_large = {"error": "too_large", "detail": f"request body larger than the server's limit of "
                                                     f"{self.max_body_bytes} bytes (ServeConfig.max_body_bytes)"}
        length = _header(scope, b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            await send_json(send, 413, too_large, [(b"connection", b"close")])
            return
        # Read the whole (bounded) body before the endpoint runs, so that a body that turns out
        # too large while streaming is refused cleanly instead of half-way through a handler.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await send_json(send, 413, too_large, [(b"connection", b"close")])
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # then the real stream: the endpoint can still see a disconnect

        await self.app(scope, replay, send)
