"""verl and SkyRL: an environment split as training rows, and a reward that runs mucode's sandbox.

Rows (one per problem, single-turn: the prompt is the environment's first user message)::

    verl:  {"data_source": "MuCode-MBPP-v0", "prompt": [{"role": "user", "content": ...}],
            "ability": "code", "reward_model": {"style": "rule", "ground_truth": "mbpp/test/MBPP/11"},
            "extra_info": {"split", "index", "problem_id", "benchmark", "env_id"}}
    SkyRL: the same with "env_class" and "reward_spec": {"method": "rule", "ground_truth": ...}
           instead of "ability" and "reward_model".

The ground truth is a reference to the problem, never its tests: ``compute_score`` looks the
problem up (locally, or on the ``mucode serve`` it is pointed at) and judges the solution like
the environment does (1.0 iff public and private tests pass).

verl: ``custom_reward_function.path=<this file> custom_reward_function.name=compute_score``
(or ``compute_score_batch`` with verl's batch reward manager); ``reward_kwargs`` / the
environment variables ``MUCODE_SERVE_URL`` and ``MUCODE_SERVE_TOKEN`` send the scoring to a
running ``mucode serve`` instead of a sandbox in the trainer's process.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mucode_env.atomic import write_bytes_atomic
from mucode_env.env import shared_sandbox, to_messages
from mucode_env.errors import SandboxError
from mucode_env.prompts import first_user_message
from mucode_env.registration import ENV_IDS, check_env_id
from mucode_env.scoring import ProblemRef, ProblemStore, score_solutions

FLAVORS = ("verl", "skyrl")
URL_ENV = "MUCODE_SERVE_URL"
TOKEN_ENV = "MUCODE_SERVE_TOKEN"
REMOTE_DEADLINE_S = 600.0  # how long a remote scoring call keeps retrying a busy server
REMOTE_BATCH = 128  # items per /v1/execute request (the server's default max_batch is 256)

_store: ProblemStore | None = None
_store_lock = threading.Lock()


def rows(env_id: str, split: str | None = None, *, flavor: str = "verl", data_dir: str | None = None,
         limit: int | None = None, env_class: str = "mucode") -> list[dict[str, Any]]:
    """The rows of one environment split (see the module docstring)."""
    from mucode_env.datasets import load_problems

    check_env_id(env_id)
    if flavor not in FLAVORS:
        raise ValueError(f"flavor must be one of {FLAVORS}, got {flavor!r}")
    benchmark = ENV_IDS[env_id]["benchmark"]
    split = split or ENV_IDS[env_id]["split"]
    problems = load_problems(benchmark, split, data_dir=data_dir)
    if limit is not None:
        problems = problems[:limit]
    out = []
    for index, problem in enumerate(problems):
        reference = str(ProblemRef(benchmark, split, problem.id))
        row: dict[str, Any] = {
            "data_source": env_id,
            "prompt": to_messages({"prompt": first_user_message(problem), "history": ()}),
        }
        if flavor == "verl":
            row["ability"] = "code"
            row["reward_model"] = {"style": "rule", "ground_truth": reference}
        else:
            row["env_class"] = env_class
            row["reward_spec"] = {"method": "rule", "ground_truth": reference}
        row["extra_info"] = {"split": split, "index": index, "problem_id": problem.id, "benchmark": benchmark,
                             "env_id": env_id}
        out.append(row)
    return out


def export_parquet(env_id: str, path: str | os.PathLike[str], split: str | None = None, *, flavor: str = "verl",
                   data_dir: str | None = None, limit: int | None = None, env_class: str = "mucode") -> Path:
    """Write ``rows(...)`` to a Parquet file, atomically. Returns the path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(rows(env_id, split, flavor=flavor, data_dir=data_dir, limit=limit,
                                      env_class=env_class))
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return write_bytes_atomic(path, sink.getvalue().to_pybytes())


def _problems() -> ProblemStore:
    global _store
    with _store_lock:
        if _store is None:
            _store = ProblemStore()
        return _store


def compute_score(data_source: str, solution_str: str, ground_truth: str, extra_info: dict | None = None, *,
                  url: str | None = None, token: str | None = None, **kwargs: Any) -> float:
    """verl's reward signature: 1.0 iff the solution's program passes the problem's public and
    private tests, else 0.0.

    Args:
        data_source: the row's data source (not needed: the ground truth names the problem).
        solution_str: the model's response (its first ```python block is the program).
        ground_truth: the problem reference ``benchmark/split/problem_id`` of the row.
        url: a running ``mucode serve`` (default ``$MUCODE_SERVE_URL``); None: this process's sandbox.
        token: its token (default ``$MUCODE_SERVE_TOKEN``).

    Raises:
        SandboxError: the sandbox failed (never scored as the model's failure).
    """
    return compute_score_batch([data_source], [solution_str], [ground_truth], [extra_info], url=url, token=token)[0]


def compute_score_batch(data_sources: Sequence[str], solution_strs: Sequence[str], ground_truths: Sequence[str],
                        extra_infos: Sequence[dict | None] | None = None, *, url: str | None = None,
                        token: str | None = None, **kwargs: Any) -> list[float]:
    """``compute_score`` for many rows at once (verl's batch reward manager signature): one sandbox
    batch locally, or a few ``/v1/execute`` requests."""
    if not len(solution_strs) == len(ground_truths) == len(data_sources):
        raise ValueError(f"got {len(data_sources)} data sources, {len(solution_strs)} solutions and "
                         f"{len(ground_truths)} ground truths; they must match")
    refs = [ProblemRef.parse(g) for g in ground_truths]
    url = url or os.environ.get(URL_ENV) or None
    if url:
        return _remote_scores(url, token or os.environ.get(TOKEN_ENV) or None, refs, solution_strs)
    store = _problems()
    items = [(store.get(ref), solution) for ref, solution in zip(refs, solution_strs)]
    return [score.score for score in score_solutions(shared_sandbox(), items)]


def _remote_scores(url: str, token: str | None, refs: Sequence[ProblemRef], solutions: Sequence[str]) -> list[float]:
    scores: list[float] = []
    for start in range(0, len(refs), REMOTE_BATCH):
        items = [{"kind": "score", "id": str(start + i), "problem": str(ref), "solution": solution}
                 for i, (ref, solution) in enumerate(zip(refs[start: start + REMOTE_BATCH],
                                                         solutions[start: start + REMOTE_BATCH]))]
        results = _post(url.rstrip("/") + "/v1/execute", {"items": items}, token)["results"]
        if [r.get("id") for r in results] != [item["id"] for item in items]:
            raise SandboxError(f"mucode serve at {url} answered for other items than it was asked")
        for result in results:
            if result.get("score") is None:
                raise SandboxError(f"mucode serve could not score item {result.get('id')}: {result.get('message')}")
            scores.append(float(result["score"]))
    return scores


def _post(url: str, body: dict[str, Any], token: str | None) -> dict[str, Any]:
    """POST JSON; retry 429/503 (busy, restarting) honouring Retry-After until REMOTE_DEADLINE_S."""
    data = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    elif "@" in url.split("//", 1)[-1].split("/", 1)[0]:  # http://user:token@host: Basic auth
        userinfo, host = url.split("//", 1)[1].split("@", 1)
        headers["Authorization"] = "Basic " + base64.b64encode(userinfo.encode()).decode()
        url = url.split("//", 1)[0] + "//" + host
    deadline = time.monotonic() + REMOTE_DEADLINE_S
    delay = 0.5
    while True:
        request = urllib.request.Request(url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=REMOTE_DEADLINE_S) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")[:500]
            if exc.code in (429, 503) and time.monotonic() + delay < deadline:
                retry_after = exc.headers.get("Retry-After")
                time.sleep(min(float(retry_after), 10.0) if retry_after and retry_after.isdigit() else delay)
                delay = min(delay * 2, 10.0)
                continue
            raise SandboxError(f"mucode serve at {url} answered {exc.code}: {detail}") from None
        except urllib.error.URLError as exc:
            raise SandboxError(f"cannot reach mucode serve at {url}: {exc.reason}") from None
