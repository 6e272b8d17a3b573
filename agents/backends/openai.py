"""OpenAI-compatible HTTP backend (vLLM, SGLang, llama.cpp servers, hosted APIs).

Requests run concurrently (asyncio + httpx, at most ``max_concurrency`` in flight); each of the n
samples of a chat is its own request with its own seed, so servers with prefix caching share the
prompt. With ``n_per_request=True`` a chat's n samples go as one request with ``n`` (servers that
fan samples out themselves, like vLLM, which seeds sample j with the request's seed + j).
Connection failures, timeouts, 429 and 5xx answers are retried with exponential backoff; other
4xx answers (a refusal: bad model name, prompt too long) fail at once with the server's message.

>>> from agents.backends.openai import OpenAIPolicy
>>> policy = OpenAIPolicy("http://127.0.0.1:8000/v1", model="Qwen/Qwen2.5-Coder-0.5B-Instruct")  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from agents.backends.base import BackendError, BackendUnavailableError, sample_seed, validate_chats
from agents.policy import Chat, Generation, SamplingParams

__all__ = ["OpenAIPolicy", "RequestRefusedError", "ServerUnreachableError"]

_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class ServerUnreachableError(BackendError):
    """No answer from the server (connection refused, DNS, timeouts) after all retries."""


class RequestRefusedError(BackendError):
    """The server answered with an error that retrying cannot fix (4xx)."""


def _normalize_base_url(url: str) -> str:
    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"base_url must start with http:// or https://, got {url!r}")
    return url if url.endswith("/v1") else url + "/v1"


class OpenAIPolicy:
    """A :class:`~agents.policy.Policy` over an OpenAI-compatible ``/v1/chat/completions`` server.

    Args:
        base_url: server root, with or without the trailing ``/v1``.
        model: model name sent in requests; default: the first id the server lists.
        api_key: bearer token (default: ``$OPENAI_API_KEY`` read here, else none).
        max_concurrency: requests in flight at once.
        timeout_s: read timeout of one request (a long completion must fit in it).
        connect_timeout_s: connect timeout.
        max_retries: retries of a failed request (connection errors, timeouts, 408/429/5xx).
        backoff_s: first backoff; doubles each retry, with jitter; ``Retry-After`` is honoured.
        n_per_request: send the n samples of a chat as one request with ``n`` and the seed
            ``sample_seed(seed, i, 0)``; sample j is recorded with seed + j (vLLM's rule).
        extra_body: more JSON fields for every chat request (server extensions, e.g. vLLM's
            ``return_token_ids``, which gives exact per-sample token counts with ``n > 1``).
    """

    # generate may run on many threads at once (each call its own client and event loop): the
    # episode engine then plays episodes continuously (agents.episodes.play_episodes)
    concurrent_generate = True

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        *,
        api_key: str | None = None,
        max_concurrency: int = 16,
        timeout_s: float = 600.0,
        connect_timeout_s: float = 10.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        n_per_request: bool = False,
        extra_body: Mapping[str, Any] | None = None,
    ) -> None:
        try:
            import httpx
        except ImportError as exc:
            raise BackendUnavailableError("the openai backend needs httpx: pip install 'mucode[agents]'") from exc
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self._httpx = httpx
        self.base_url = _normalize_base_url(base_url)
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.max_concurrency = max_concurrency
        self.timeout = httpx.Timeout(timeout_s, connect=connect_timeout_s)
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.n_per_request = n_per_request
        self.extra_body = dict(extra_body or {})
        self.model = model
        self.name = f"openai:{model or self.base_url}"

    # -- public API -------------------------------------------------------------------------
    def list_models(self) -> list[str]:
        """The model ids the server serves (``GET /v1/models``); also a reachability check.

        Raises:
            ServerUnreachableError, RequestRefusedError: see the module docstring.
        """
        return _run(self._alist_models())

    def generate(self, chats: Sequence[Chat], params: SamplingParams, seeds: Sequence[int] | None = None,
                 progress: Callable[[int, int], None] | None = None) -> list[list[Generation]]:
        """Sample ``params.n`` responses per chat concurrently (see :class:`agents.policy.Policy`).

        ``seeds`` (one per chat, from the episode engine) make chat ``i``'s samples depend only on
        the chat and ``seeds[i]``, whatever else is in the call; otherwise they derive from
        ``params.seed`` and the chat's position. ``progress(generations, tokens)`` is called as
        requests complete.
        """
        return _run(self.agenerate(chats, params, seeds, progress))

    async def agenerate(self, chats: Sequence[Chat], params: SamplingParams, seeds: Sequence[int] | None = None,
                        progress: Callable[[int, int], None] | None = None) -> list[list[Generation]]:
        """The async form of :meth:`generate`, for callers inside an event loop."""
        chats = validate_chats(chats)
        if seeds is not None and len(seeds) != len(chats):
            raise ValueError(f"got {len(seeds)} seeds for {len(chats)} chats")

        def seed(i: int, j: int) -> int:
            return sample_seed(seeds[i], 0, j) if seeds is not None else sample_seed(params.seed, i, j)

        async with self._client() as client:
            if self.model is None:
                self.model = (await self._models(client))[0]
                self.name = f"openai:{self.model}"
            sem = asyncio.Semaphore(self.max_concurrency)
            if self.n_per_request:
                requests = [(chat, params.n, seed(i, 0)) for i, chat in enumerate(chats)]
            else:
                requests = [(chat, 1, seed(i, j)) for i, chat in enumerate(chats) for j in range(params.n)]
            tasks = [asyncio.ensure_future(self._complete(client, sem, chat, params, n, s)) for chat, n, s in requests]
            if progress is not None:
                done = {"generations": 0, "tokens": 0}

                def report(task: asyncio.Future) -> None:
                    if not task.cancelled() and task.exception() is None:
                        gens = task.result()
                        done["generations"] += len(gens)
                        done["tokens"] += sum(g.completion_tokens for g in gens)
                        progress(done["generations"], done["tokens"])

                for task in tasks:
                    task.add_done_callback(report)
            try:
                flat = [gen for t in tasks for gen in await t]
            finally:
                for t in tasks:
                    t.cancel()
            return [flat[i * params.n : (i + 1) * params.n] for i in range(len(chats))]

    # -- internals --------------------------------------------------------------------------
    def _client(self):
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        limits = self._httpx.Limits(max_connections=self.max_concurrency)
        return self._httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=self.timeout, limits=limits)

    async def _alist_models(self) -> list[str]:
        async with self._client() as client:
            return await self._models(client)

    async def _models(self, client) -> list[str]:
        data = await self._call(client, "GET", "/models", None)
        ids = [m.get("id") for m in data.get("data", []) if m.get("id")]
        if not ids:
            raise RequestRefusedError(f"the server at {self.base_url} lists no models; pass model= explicitly")
        return ids

    async def _complete(
        self, client, sem: asyncio.Semaphore, chat: Chat, params: SamplingParams, n: int, seed: int
    ) -> list[Generation]:
        body: dict[str, Any] = {
            **self.extra_body,
            "model": self.model,
            "messages": chat,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_new_tokens,
            "seed": seed,
            "n": n,
        }
        if params.stop:
            body["stop"] = list(params.stop)
        for attempt in range(_CONTEXT_RETRIES + 1):
            try:
                async with sem:
                    data = await self._call(client, "POST", "/chat/completions", body)
                break
            except RequestRefusedError as exc:
                # prompt + max_tokens over the context (late turns of long episodes): generate what fits
                limit = _context_overflow(str(exc))
                if limit is None or attempt == _CONTEXT_RETRIES:
                    raise
                max_context, prompt_tokens = limit
                room = max_context - prompt_tokens
                if room < 1:  # the prompt alone fills the context: nothing can be generated
                    return [Generation("", prompt_tokens, 0, "length", {"seed": seed + j, "error": "prompt exceeds "
                                       "the context"}) for j in range(n)]
                body["max_tokens"] = min(room, body["max_tokens"] - 1)
        try:
            choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
            texts = [c["message"].get("content") or "" for c in choices]
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise BackendError(f"malformed answer from {self.base_url}/chat/completions: {str(data)[:300]}") from exc
        if len(choices) != n:
            raise BackendError(f"{self.base_url}/chat/completions returned {len(choices)} choices for n={n}")
        usage = data.get("usage") or {}
        total = int(usage.get("completion_tokens") or 0)
        gens = []
        for j, (choice, text) in enumerate(zip(choices, texts)):
            ids = choice.get("token_ids")
            # Exact per-sample counts when the server returns token ids; else an even share of the total.
            tokens = len(ids) if isinstance(ids, list) else total // n + (j < total % n)
            gens.append(Generation(
                text=text,
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                completion_tokens=tokens,
                finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
                extra={"seed": seed + j},
            ))
        return gens

    async def _call(self, client, method: str, path: str, body: dict | None) -> dict:
        httpx = self._httpx
        url = f"{self.base_url}{path}"
        last: str = ""
        for attempt in range(self.max_retries + 1):
            delay = self.backoff_s * (2**attempt) * (1 + 0.25 * random.random())
            try:
                resp = await client.request(method, path, json=body)
            except httpx.TimeoutException as exc:
                last = f"timed out ({type(exc).__name__}, read timeout {self.timeout_s:g} s)"
            except httpx.TransportError as exc:
                last = f"unreachable ({type(exc).__name__}: {exc})"
            else:
                if resp.status_code < 400:
                    try:
                        return resp.json()
                    except ValueError as exc:
                        raise BackendError(f"{method} {url} answered non-JSON: {resp.text[:300]!r}") from exc
                message = _error_message(resp)
                if resp.status_code not in _RETRY_STATUS:
                    raise RequestRefusedError(f"{method} {url} was refused with HTTP {resp.status_code}: {message}")
                last = f"HTTP {resp.status_code}: {message}"
                retry_after = resp.headers.get("retry-after", "")
                if retry_after.replace(".", "", 1).isdigit():
                    delay = max(delay, float(retry_after))
            if attempt < self.max_retries:
                await asyncio.sleep(delay)
        raise ServerUnreachableError(
            f"{method} {url} failed after {self.max_retries + 1} attempts: {last}. "
            "Check that the server is running and --base-url is right."
        )


_CONTEXT_RETRIES = 2
_CONTEXT_LIMIT = re.compile(r"maximum context length is (\d+)")
_PROMPT_TOKENS = re.compile(r"(\d+) input tokens|\((\d+) in the messages")


def _context_overflow(message: str) -> tuple[int, int] | None:
    """(context length, prompt tokens) from a server's "maximum context length" refusal (vLLM,
    OpenAI), or None for any other refusal."""
    limit, prompt = _CONTEXT_LIMIT.search(message), _PROMPT_TOKENS.search(message)
    if limit is None or prompt is None:
        return None
    return int(limit.group(1)), int(prompt.group(1) or prompt.group(2))


def _error_message(resp) -> str:
    try:
        data = resp.json()
    except ValueError:
        return resp.text[:300] or resp.reason_phrase
    err = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(err, dict):
        return str(err.get("message") or err.get("detail") or err)[:300]
    return str(err)[:300]


def _run(coro):
    """Run ``coro`` to completion, also when called from inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except Exception as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="mucode-openai")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]
