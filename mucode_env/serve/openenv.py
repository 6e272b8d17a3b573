"""mucode environments over the OpenEnv protocol (``openenv-core``), one mount per environment id.

The protocol is OpenEnv's own: ``openenv.core.env_server.HTTPEnvServer`` serves
``/openenv/<env id>/{ws,reset,step,state,schema,metadata,health}``; a session is a WebSocket
(``/ws``) with its own environment, which is what OpenEnv's clients (``GenericEnvClient``, any
``EnvClient`` subclass, TRL's OpenEnv integration) use. Plain HTTP ``/reset`` works too, but HTTP
``/step`` has no episode (each HTTP call gets a fresh environment, by OpenEnv's design): it
answers 409.

- Action ``MuCodeAction``: ``{"text": <the model's response>}``.
- Observation ``MuCodeObservation``: the environment's observation (``problem_id``, ``turn``,
  ``prompt``, ``history``) plus ``messages`` (``to_messages``, ready for a chat template), and the
  last turn's public ``feedback``, ``status`` and ``public_passed``. ``reward`` and ``done``
  (terminated or truncated) are the environment's. Nothing about private tests but the reward.
- Reset options: ``seed``, ``problem_id``, ``problem_index``, ``split``, ``episode_id``.

Every step goes through the server's admission gate and sandbox, like every other endpoint.
"""

from __future__ import annotations

import functools
import sys
import uuid
from typing import Any

import gymnasium as gym
from fastapi import FastAPI
from pydantic import Field
from starlette.websockets import WebSocketDisconnect


def _import_openenv_without_its_web_ui() -> None:
    """Import openenv-core without its Gradio web UI, which mucode never serves.

    openenv-core 0.3.0 requires gradio and its package ``__init__`` imports the UI whenever
    gradio is importable: seconds of start-up and a few hundred MB. The UI is optional there
    (imported under ``except ModuleNotFoundError``), so gradio is hidden for that one import and
    put back at once: a later ``import gradio`` in this process works as usual.
    """
    if "openenv.core.env_server" in sys.modules or "gradio" in sys.modules:
        return
    sys.modules["gradio"] = None  # type: ignore[assignment]  # makes `import gradio` raise ModuleNotFoundError
    try:
        import openenv.core.env_server  # noqa: F401
    finally:
        if "gradio" in sys.modules and sys.modules["gradio"] is None:
            del sys.modules["gradio"]


_import_openenv_without_its_web_ui()

from openenv.core.client_types import StepResult  # noqa: E402
from openenv.core.env_client import EnvClient  # noqa: E402
from openenv.core.env_server.http_server import HTTPEnvServer  # noqa: E402
from openenv.core.env_server.interfaces import Environment  # noqa: E402
from openenv.core.env_server.types import Action, EnvironmentMetadata, Observation, State  # noqa: E402

import mucode_env  # noqa: E402
from mucode_env.env import to_messages  # noqa: E402
from mucode_env.errors import EpisodeError  # noqa: E402
from mucode_env.registration import ENV_IDS  # noqa: E402
from mucode_env.serve.http_errors import install_error_handlers  # noqa: E402
from mucode_env.serve.runtime import ServeRuntime  # noqa: E402

PREFIX = "/openenv"
RESET_OPTIONS = ("problem_id", "problem_index")


class MuCodeAction(Action):
    """One turn: the model's whole response (the program is its first ```python block)."""

    text: str = Field(description="the model's response; its first ```python block is the program")


class MuCodeObservation(Observation):
    """What the policy sees after a reset or a step (see the module docstring)."""

    env_id: str = ""
    problem_id: str = ""
    turn: int = 0
    prompt: str = ""
    history: list[dict[str, str]] = Field(default_factory=list)
    messages: list[dict[str, str]] = Field(default_factory=list)
    feedback: str = ""
    status: str = ""
    public_passed: bool | None = None
    truncated: bool = False


class MuCodeState(State):
    env_id: str = ""
    split: str = ""
    problem_id: str | None = None
    turn: int = 0
    done: bool = True


class MuCodeEnvironment(Environment[MuCodeAction, MuCodeObservation, MuCodeState]):
    """One OpenEnv session: a Gymnasium MuCode environment on the server's shared sandbox."""

    SUPPORTS_CONCURRENT_SESSIONS = True  # each session has its own env; the sandbox is thread-safe

    def __init__(self, runtime: ServeRuntime, env_id: str) -> None:
        super().__init__()
        self._runtime = runtime
        self._env_id = env_id
        self._benchmark = ENV_IDS[env_id]["benchmark"]
        self._split = ENV_IDS[env_id]["split"]
        self._env: gym.Env | None = None
        self._state = MuCodeState(env_id=env_id, split=self._split)

    def _make(self, split: str) -> gym.Env:
        if self._env is None or split != self._split:
            if self._env is not None:
                self._env.close()
            config = self._runtime.config
            problems = self._runtime.problems.problems(self._benchmark, split)
            self._env = gym.make(self._env_id, split=split, max_turns=config.max_turns,
                                 termination=config.termination, reward_mode=config.reward_mode,
                                 sandbox=self._runtime.sandbox, problems=problems)
            self._split = split
        return self._env

    def reset(self, seed: int | None = None, episode_id: str | None = None, split: str | None = None,
              **options: Any) -> MuCodeObservation:
        unknown = set(options) - set(RESET_OPTIONS)
        if unknown:
            raise ValueError(f"unknown reset option(s) {sorted(unknown)}; allowed: seed, episode_id, split, "
                             f"{', '.join(RESET_OPTIONS)}")
        env = self._make(split or self._split)
        obs, _ = env.reset(seed=seed, options=options or None)
        self._state = MuCodeState(episode_id=episode_id or uuid.uuid4().hex, step_count=0, env_id=self._env_id,
                                  split=self._split, problem_id=obs["problem_id"], turn=0, done=False)
        return self._observation(obs)

    def step(self, action: MuCodeAction, timeout_s: float | None = None, **kwargs: Any) -> MuCodeObservation:
        if self._env is None or self._state.done:
            raise EpisodeError("no episode in progress: send reset first (over HTTP every call gets a fresh "
                               "environment, so multi-turn episodes need the WebSocket session at /ws)")
        obs, reward, terminated, truncated, info = self._env.step(action.text)
        done = bool(terminated or truncated)
        self._state = self._state.model_copy(update={"step_count": self._state.step_count + 1,
                                                     "turn": obs["turn"], "done": done})
        return self._observation(obs, reward=float(reward), done=done, info=info, truncated=bool(truncated))

    async def step_async(self, action: MuCodeAction, timeout_s: float | None = None, **kwargs: Any) -> MuCodeObservation:
        # Through the admission gate: a full server answers Busy, a shutting-down one ShuttingDown.
        return await self._runtime.call(self.step, action)

    @property
    def state(self) -> MuCodeState:
        return self._state

    def get_metadata(self) -> EnvironmentMetadata:
        return EnvironmentMetadata(name=self._env_id, version=mucode_env.__version__,
                                   description=f"mucode multi-turn code generation on {self._benchmark} "
                                               f"(action: {{'text': response}}; reset options: split, problem_id, "
                                               f"problem_index, seed)")

    def close(self) -> None:
        if self._env is not None:
            self._env.close()  # the shared sandbox stays up
            self._env = None

    def _observation(self, obs: dict[str, Any], reward: float | None = None, done: bool = False,
                     info: dict[str, Any] | None = None, truncated: bool = False) -> MuCodeObservation:
        return MuCodeObservation(
            env_id=self._env_id, problem_id=obs["problem_id"], turn=obs["turn"], prompt=obs["prompt"],
            history=[dict(turn) for turn in obs["history"]], messages=to_messages(obs),
            feedback=info["feedback"] if info else "", status=info["status"] if info else "",
            public_passed=info["public_passed"] if info else None, truncated=truncated, reward=reward, done=done)


def mount(app: FastAPI, runtime: ServeRuntime) -> "SessionCapacity":
    """Mount one OpenEnv app per served environment id at ``/openenv/<env id>``."""
    servers: dict[str, HTTPEnvServer] = {}
    for env_id in runtime.config.envs:
        sub = FastAPI(title=f"mucode {env_id} (OpenEnv)", docs_url=None, redoc_url=None)
        server = HTTPEnvServer(functools.partial(MuCodeEnvironment, runtime, env_id), MuCodeAction,
                               MuCodeObservation, max_concurrent_envs=runtime.config.max_sessions)
        server.register_routes(sub)
        install_error_handlers(sub, invalid_input=(ValueError, IndexError))
        app.mount(f"{PREFIX}/{env_id}", _quiet_session_end(sub))
        servers[f"{PREFIX}/{env_id}/"] = server
    return SessionCapacity(servers)


class SessionCapacity:
    """Whether a WebSocket path leads to an environment whose sessions are all taken, so that the
    handshake can be refused with 429 (OpenEnv itself accepts, sends an error and closes)."""

    def __init__(self, servers: dict[str, HTTPEnvServer]) -> None:
        self._servers = servers

    def full(self, path: str) -> bool:
        for prefix, server in self._servers.items():
            if path.startswith(prefix):
                return server.active_sessions >= server.max_concurrent_envs
        return False


def _quiet_session_end(sub: FastAPI) -> Any:
    """OpenEnv 0.3.0 closes a session's WebSocket again after the client closed it, which
    Starlette >= 1.0 reports as WebSocketDisconnect: an error log for every normal session end."""
    async def app(scope: dict, receive: Any, send: Any) -> None:
        try:
            await sub(scope, receive, send)
        except WebSocketDisconnect:
            if scope["type"] != "websocket":
                raise

    return app


class MuCodeEnvClient(EnvClient[MuCodeAction, MuCodeObservation, MuCodeState]):
    """A typed OpenEnv client for a mucode environment (``GenericEnvClient`` works too, with dicts).

    >>> async with MuCodeEnvClient(base_url="http://127.0.0.1:8000/openenv/MuCode-MBPP-v0") as env:  # doctest: +SKIP
    ...     result = await env.reset(problem_id="MBPP/11")
    ...     result = await env.step(MuCodeAction(text=response))
    """

    def _step_payload(self, action: MuCodeAction) -> dict[str, Any]:
        return {"text": action.text} if isinstance(action, MuCodeAction) else dict(action)

    def _parse_result(self, payload: dict[str, Any]) -> StepResult[MuCodeObservation]:
        observation = MuCodeObservation(**payload.get("observation", {}), reward=payload.get("reward"),
                                        done=payload.get("done", False))
        return StepResult(observation=observation, reward=payload.get("reward"), done=payload.get("done", False))

    def _parse_state(self, payload: dict[str, Any]) -> MuCodeState:
        return MuCodeState(**payload)
