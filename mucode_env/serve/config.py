"""``ServeConfig``: what ``mucode serve`` binds to, who may call it and how much it takes on."""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field

from mucode_env.env import REWARD_MODES, TERMINATIONS
from mucode_env.registration import ENV_IDS, check_env_id
from mucode_env.sandbox import SandboxConfig

MIN_TOKEN_CHARS = 16
TOKEN_HINT = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


@dataclass(frozen=True)
class ServeConfig:
    """Settings of ``mucode serve``.

    Safe by default: it binds 127.0.0.1, and refuses any other address without a bearer token.

    Attributes:
        host: address to bind. Anything but a loopback address needs ``token``.
        port: TCP port (0: any free port).
        token: shared secret; when set every request but ``GET /health`` must carry
            ``Authorization: Bearer <token>`` (or HTTP Basic auth with the token as password, which
            clients send for a URL ``http://user:<token>@host/``). At least 16 characters.
        max_body_bytes: largest request body (and WebSocket message) accepted; larger: 413.
        max_batch: most items in one native batch request; more: 413.
        max_concurrent: requests executing at once (each may hold several sandbox jobs).
        max_queue: requests allowed to wait for a slot; beyond it the server answers 429 at once.
        queue_timeout_s: how long a request may wait for a slot before a 429.
        shutdown_grace_s: on SIGTERM/Ctrl-C, how long in-flight requests may still finish; the
            ones still running then are answered 503 (never dropped without an answer).
        max_run_timeout_s: the largest per-run time limit a client may ask for.
        max_sessions: concurrent OpenEnv (WebSocket) sessions per environment id.
        envs: environment ids served over OpenEnv, at ``/openenv/<env id>``.
        max_turns / termination / reward_mode: the environments' settings (see ``EnvConfig``).
        data_dir: offline data directory (default ``$MUCODE_DATA_DIR``).
        sandbox: the sandbox pool every endpoint shares.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    max_body_bytes: int = 8 << 20
    max_batch: int = 256
    max_concurrent: int = 8
    max_queue: int = 64
    queue_timeout_s: float = 30.0
    shutdown_grace_s: float = 30.0
    max_run_timeout_s: float = 60.0
    max_sessions: int = 64
    envs: tuple[str, ...] = tuple(ENV_IDS)
    max_turns: int = 3
    termination: str = "public"
    reward_mode: str = "final"
    data_dir: str | None = None
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host:
            raise ValueError(f"host must be a non-empty address, got {self.host!r}")
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ValueError(f"port must be an int in [0, 65535] (0: any free port), got {self.port!r}")
        if self.token is not None:
            if not isinstance(self.token, str) or len(self.token) < MIN_TOKEN_CHARS or self.token != self.token.strip():
                raise ValueError(f"token must be a string of at least {MIN_TOKEN_CHARS} characters without "
                                 f"surrounding spaces; make one with: {TOKEN_HINT}")
        elif not is_loopback(self.host):
            raise ValueError(f"host {self.host!r} is not a loopback address, so anyone who can reach it could run "
                             f"code: a token is required. Set one (mucode serve reads $MUCODE_SERVE_TOKEN or "
                             f"--token-file; make one with: {TOKEN_HINT}) or bind 127.0.0.1")
        for name in ("max_body_bytes", "max_batch", "max_concurrent", "max_sessions", "max_turns"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(self.max_queue, int) or self.max_queue < 0:
            raise ValueError(f"max_queue must be an int >= 0 (0: answer 429 as soon as all slots are busy), "
                             f"got {self.max_queue!r}")
        for name in ("queue_timeout_s", "shutdown_grace_s", "max_run_timeout_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
        if self.max_run_timeout_s <= 0:
            raise ValueError(f"max_run_timeout_s must be positive, got {self.max_run_timeout_s!r}")
        if self.termination not in TERMINATIONS:
            raise ValueError(f"termination must be one of {TERMINATIONS}, got {self.termination!r}")
        if self.reward_mode not in REWARD_MODES:
            raise ValueError(f"reward_mode must be one of {REWARD_MODES}, got {self.reward_mode!r}")
        if isinstance(self.envs, str):
            raise TypeError("envs must be a sequence of environment ids, not a single string")
        object.__setattr__(self, "envs", tuple(self.envs))
        for env_id in self.envs:
            check_env_id(env_id)
        if not isinstance(self.sandbox, SandboxConfig):
            raise TypeError(f"sandbox must be a SandboxConfig, got {type(self.sandbox).__name__}")

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)
