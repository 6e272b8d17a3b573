"""Load on a local ``mucode serve`` against in-process execution.

Phases (the server is a separate process started here, bound to 127.0.0.1 with a token):

1. ``in-process``: ``--clients`` threads call ``Sandbox.execute`` on one program each, back to
   back, for ``--duration`` seconds (a sandbox of the same size as the server's, cache off).
2. ``server``: ``--clients`` concurrent asyncio clients (httpx) send the same programs to the
   server (``--endpoint native``: ``POST /v1/execute``; ``run_code``: SandboxFusion's API) for
   ``--duration`` seconds. Every request carries a unique id that the program prints: an answer
   with another id is a mix-up, an id answered twice a duplicate, a request without any answer
   (error, no response) a lost result.
3. ``full``: ``--burst`` requests at once, more than the server's slots plus queue: each must get
   200 or an explicit 429 (with Retry-After), none lost.
4. ``disconnects``: ``--disconnects`` clients give up (close the connection) while their program
   runs; the server must keep their slots until the programs end, then be back at zero running,
   and answer the next request correctly.

Throughput is answers per second; latency is per request (p50/p99), client side.

    python3 benchmarks/serve_load.py --clients 32 --duration 30 --json runs/serve_load.json

Run it alone on the machine: numbers measured while other jobs run are noise.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from mucode_env.atomic import write_json_atomic  # noqa: E402
from mucode_env.sandbox import Sandbox, SandboxConfig  # noqa: E402
from mucode_env.serve.programs import program_job, program_run  # noqa: E402

# Reads its request id and numbers from stdin, prints the id and the sum: unique per request,
# so that nothing is served from a cache and every answer says whose it is.
PROGRAM = "import sys\nrid, *xs = sys.stdin.read().split()\nprint(rid, sum(int(x) for x in xs))\n"
NUMBERS = 200
TIMEOUT_S = 10.0


def new_request() -> tuple[str, str, str]:
    """(request id, stdin, expected stdout)."""
    rid = uuid.uuid4().hex
    xs = [secrets.randbelow(10**6) for _ in range(NUMBERS)]
    return rid, rid + "\n" + " ".join(map(str, xs)) + "\n", f"{rid} {sum(xs)}\n"


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


@dataclass
class Tally:
    """What the clients of one phase saw."""

    sent: int = 0
    ok: int = 0
    wrong_output: int = 0  # an answer that is not this request's (another id, or a bad sum)
    duplicates: int = 0  # an id answered twice
    statuses: Counter = field(default_factory=Counter)  # HTTP status -> count
    errors: Counter = field(default_factory=Counter)  # exception type -> count (no answer at all)
    latencies_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def lost(self) -> int:
        return sum(self.errors.values())

    def summary(self) -> dict:
        answered = sum(self.statuses.values()) if self.statuses else self.ok + self.wrong_output
        return {
            "sent": self.sent, "ok": self.ok, "wrong_output": self.wrong_output, "duplicates": self.duplicates,
            "lost": self.lost, "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": dict(self.errors), "answers_per_s": round(answered / self.seconds, 2) if self.seconds else None,
            "ok_per_s": round(self.ok / self.seconds, 2) if self.seconds else None,
            "p50_ms": _round(percentile(self.latencies_ms, 50)), "p99_ms": _round(percentile(self.latencies_ms, 99)),
            "seconds": round(self.seconds, 2),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


# ---- in-process ----------------------------------------------------------------------------------
def in_process(clients: int, duration_s: float, workers: int | None) -> Tally:
    tally = Tally()
    lock = threading.Lock()
    seen: set[str] = set()
    with Sandbox(SandboxConfig(cache_size=0, n_workers=workers)) as sandbox:
        sandbox.execute([program_job("print(1)", "", TIMEOUT_S)])  # warm
        stop = time.monotonic() + duration_s

        def client() -> None:
            while time.monotonic() < stop:
                rid, stdin, expected = new_request()
                started = time.perf_counter()
                result = sandbox.execute([program_job(PROGRAM, stdin, TIMEOUT_S)])[0]
                elapsed = (time.perf_counter() - started) * 1e3
                run = program_run(result)
                with lock:
                    tally.sent += 1
                    tally.latencies_ms.append(elapsed)
                    if run is not None and run.stdout == expected and rid not in seen:
                        tally.ok += 1
                    else:
                        tally.wrong_output += 1
                    tally.duplicates += rid in seen
                    seen.add(rid)

        started = time.monotonic()
        threads = [threading.Thread(target=client) for _ in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        tally.seconds = time.monotonic() - started
    return tally


# ---- the server process ----------------------------------------------------------------------------
class ServerProcess:
    def __init__(self, args: argparse.Namespace) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = secrets.token_urlsafe(32)
        env = {**os.environ, "MUCODE_SERVE_TOKEN": self.token,
               "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        command = [sys.executable, "-m", "mucode_cli", "serve", "--port", str(self.port), "--envs", "",
                   "--max-concurrent", str(args.max_concurrent), "--max-queue", str(args.max_queue),
                   "--queue-timeout", str(args.queue_timeout), "--log-level", "warning"]
        if args.workers:
            command += ["--workers", str(args.workers)]
        self.process = subprocess.Popen(command, env=env)
        self.headers = {"Authorization": f"Bearer {self.token}"}

    def wait_ready(self, timeout_s: float = 180.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mucode serve exited with {self.process.returncode}")
            try:
                if httpx.get(self.url + "/health").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("mucode serve did not start")

    def health(self) -> dict:
        import httpx

        return httpx.get(self.url + "/health").json()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()


def request_body(endpoint: str, rid: str, stdin: str, sleep_s: float = 0.0) -> tuple[str, dict]:
    code = PROGRAM if not sleep_s else f"import time\ntime.sleep({sleep_s})\n" + PROGRAM
    if endpoint == "run_code":
        return "/run_code", {"code": code, "stdin": stdin, "language": "python", "run_timeout": TIMEOUT_S}
    return "/v1/execute", {"items": [{"kind": "program", "id": rid, "code": code, "stdin": stdin,
                                      "timeout_s": TIMEOUT_S}]}


def stdout_of(endpoint: str, body: dict) -> tuple[str | None, str | None]:
    """(answered id, stdout) from a 200 answer."""
    if endpoint == "run_code":
        run = body.get("run_result") or {}
        return None, run.get("stdout")
    result = body["results"][0]
    return result["id"], result.get("stdout")


async def one(client, server: ServerProcess, endpoint: str, tally: Tally, seen: set[str], lock: asyncio.Lock) -> None:
    import httpx

    rid, stdin, expected = new_request()
    path, body = request_body(endpoint, rid, stdin)
    tally.sent += 1
    started = time.perf_counter()
    try:
        response = await client.post(server.url + path, json=body, headers=server.headers)
    except httpx.HTTPError as exc:
        tally.errors[type(exc).__name__] += 1
        return
    tally.latencies_ms.append((time.perf_counter() - started) * 1e3)
    tally.statuses[response.status_code] += 1
    if response.status_code != 200:
        return
    answered_id, stdout = stdout_of(endpoint, response.json())
    async with lock:
        if rid in seen:
            tally.duplicates += 1
        seen.add(rid)
    if stdout == expected and answered_id in (None, rid):
        tally.ok += 1
    else:
        tally.wrong_output += 1


async def sustained(server: ServerProcess, endpoint: str, clients: int, duration_s: float) -> Tally:
    import httpx

    tally, seen, lock = Tally(), set(), asyncio.Lock()
    stop = time.monotonic() + duration_s
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=TIMEOUT_S * 6) as client:
        async def loop() -> None:
            while time.monotonic() < stop:
                await one(client, server, endpoint, tally, seen, lock)

        started = time.monotonic()
        await asyncio.gather(*(loop() for _ in range(clients)))
        tally.seconds = time.monotonic() - started
    return tally


async def burst(server: ServerProcess, endpoint: str, n: int) -> tuple[Tally, int]:
    """n requests at once; returns the tally and how many 429s lacked Retry-After."""
    import httpx

    tally, seen, lock = Tally(), set(), asyncio.Lock()
    missing_retry_after = 0
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(limits=limits, timeout=TIMEOUT_S * 6) as client:
        original_post = client.post

        async def post(*args, **kwargs):
            nonlocal missing_retry_after
            response = await original_post(*args, **kwargs)
            if response.status_code == 429 and "retry-after" not in response.headers:
                missing_retry_after += 1
            return response

        client.post = post  # type: ignore[method-assign]
        started = time.monotonic()
        await asyncio.gather(*(one(client, server, endpoint, tally, seen, lock) for _ in range(n)))
        tally.seconds = time.monotonic() - started
    return tally, missing_retry_after


async def disconnects(server: ServerProcess, endpoint: str, n: int, sleep_s: float) -> dict:
    """n clients that give up after a fraction of their program's run time."""
    import httpx

    admitted_before = server.health()["counts"]["admitted"]
    gave_up = 0
    async with httpx.AsyncClient(timeout=sleep_s / 4) as client:
        async def quitter() -> None:
            nonlocal gave_up
            rid, stdin, _ = new_request()
            path, body = request_body(endpoint, rid, stdin, sleep_s=sleep_s)
            try:
                await client.post(server.url + path, json=body, headers=server.headers)
            except httpx.TimeoutException:
                gave_up += 1

        await asyncio.gather(*(quitter() for _ in range(n)))
    held = server.health()["running"]  # their programs still run: the slots must still be taken
    started = time.monotonic()
    while server.health()["running"] and time.monotonic() - started < sleep_s * 4 + 30:
        await asyncio.sleep(0.05)
    recovered_s = time.monotonic() - started
    after = Tally()
    async with httpx.AsyncClient(timeout=TIMEOUT_S * 6) as client:
        await one(client, server, endpoint, after, set(), asyncio.Lock())
    health = server.health()
    return {"clients": n, "gave_up": gave_up, "slots_held_after_disconnect": held,
            "running_after": health["running"], "seconds_until_idle": round(recovered_s, 2),
            "next_request_ok": after.ok == 1, "admitted": health["counts"]["admitted"] - admitted_before}


# ---- report ----------------------------------------------------------------------------------------
def markdown(report: dict) -> str:
    lines = ["| phase | sent | ok | 429 | lost | wrong/dup | answers/s | p50 ms | p99 ms |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in ("in_process", "server", "full"):
        row = report.get(name)
        if not row:
            continue
        lines.append(f"| {name} | {row['sent']} | {row['ok']} | {row['statuses'].get('429', 0)} | {row['lost']} | "
                     f"{row['wrong_output']}/{row['duplicates']} | {row['answers_per_s']} | {row['p50_ms']} | "
                     f"{row['p99_ms']} |")
    d = report.get("disconnects")
    if d:
        lines.append(f"\ndisconnects: {d['gave_up']}/{d['clients']} clients gave up; slots held afterwards: "
                     f"{d['slots_held_after_disconnect']}; idle again after {d['seconds_until_idle']} s; "
                     f"next request ok: {d['next_request_ok']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per sustained phase")
    parser.add_argument("--endpoint", choices=("native", "run_code"), default="native")
    parser.add_argument("--workers", type=int, default=None, help="sandbox workers (default: one per core)")
    parser.add_argument("--max-concurrent", type=int, default=8)
    parser.add_argument("--max-queue", type=int, default=64)
    parser.add_argument("--queue-timeout", type=float, default=30.0)
    parser.add_argument("--burst", type=int, default=None, help="requests at once (default: 2 x (slots + queue))")
    parser.add_argument("--disconnects", type=int, default=8)
    parser.add_argument("--disconnect-sleep", type=float, default=2.0, help="run time of a quitter's program, s")
    parser.add_argument("--skip-in-process", action="store_true")
    parser.add_argument("--json", default=None, help="write the report here")
    args = parser.parse_args(argv)

    report: dict = {"settings": {k: v for k, v in vars(args).items() if k != "json"}}
    if not args.skip_in_process:
        report["in_process"] = in_process(args.clients, args.duration, args.workers).summary()
    server = ServerProcess(args)
    try:
        server.wait_ready()
        asyncio.run(sustained(server, args.endpoint, min(args.clients, 4), 2.0))  # warm up
        report["server"] = asyncio.run(sustained(server, args.endpoint, args.clients, args.duration)).summary()
        n = args.burst or 2 * (args.max_concurrent + args.max_queue)
        full, missing = asyncio.run(burst(server, args.endpoint, n))
        report["full"] = {**full.summary(), "429_without_retry_after": missing}
        if args.disconnects:
            report["disconnects"] = asyncio.run(disconnects(server, args.endpoint, args.disconnects,
                                                            args.disconnect_sleep))
        report["server_health"] = server.health()
    finally:
        report["server_exit"] = server.stop()
    print(markdown(report))
    if args.json:
        write_json_atomic(args.json, report)
        print(f"wrote {args.json}")
    bad = [phase for phase in ("server", "full") if report[phase]["lost"] or report[phase]["duplicates"]
           or report[phase]["wrong_output"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
