"""A stand-in for ``python -m vllm.entrypoints.openai.api_server`` (standard library only).

The vLLM backend tests install it as ``vllm/entrypoints/openai/api_server.py`` in a throwaway
virtual environment. It takes the flags the backend passes, forks one sleeping "engine" child
(as vLLM does) and serves ``/health``, ``/v1/models`` and ``/v1/chat/completions`` behind the
bearer token. Sample j of a request seeded s answers ``"seed=<s+j> <prompt digest>"`` with
``max_tokens`` token ids, as vLLM seeds it. ``FAKE_VLLM_MODE`` picks a misbehaviour:

- ``ok``: the above (and HTTP 400 for ``max_tokens`` over 4096, as a refusal);
- ``exit``: print an error and exit with status 3 before serving;
- ``hang``: never answer ``/health``;
- ``crash``: the first chat request gets HTTP 500, then the server exits with status 1;
- ``stubborn``: ignore SIGTERM (only SIGKILL stops it).

``GET /debug`` returns the argv, the environment, the engine child's pid and the chat requests seen.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODE = os.environ.get("FAKE_VLLM_MODE", "ok")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model")
    p.add_argument("--served-model-name")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    args, _ = p.parse_known_args()
    if MODE == "exit":
        print("RuntimeError: fake engine failed to allocate the KV cache", file=sys.stderr, flush=True)
        sys.exit(3)
    if MODE == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    engine = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a) -> None:
            pass

        def _send(self, code: int, payload: dict) -> None:
            body = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _authorized(self) -> bool:
            if self.headers.get("Authorization") == f"Bearer {os.environ['VLLM_API_KEY']}":
                return True
            self._send(401, {"error": {"message": "Unauthorized"}})
            return False

        def do_GET(self) -> None:
            if self.path == "/health":
                if MODE == "hang":
                    return self._send(503, {"error": "starting"})
                return self._send(200, {})
            if self.path == "/debug":
                return self._send(200, {"argv": sys.argv, "env": dict(os.environ), "engine_pid": engine.pid, "seen": seen})
            if self.path == "/v1/models" and self._authorized():
                return self._send(200, {"data": [{"id": args.served_model_name}]})

        def do_POST(self) -> None:
            if self.path != "/v1/chat/completions" or not self._authorized():
                return None
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(body)
            if MODE == "crash":
                print("RuntimeError: CPU Generator does not use offset", file=sys.stderr, flush=True)
                self._send(500, {"error": {"message": "EngineCore encountered an issue."}})
                threading.Timer(0.2, lambda: os._exit(1)).start()
                return None
            if body["max_tokens"] > 4096:
                return self._send(400, {"error": {"message": "max_tokens is too large for max_model_len 4096"}})
            digest = hashlib.sha256(json.dumps(body["messages"]).encode()).hexdigest()[:8]
            n, seed, k = body.get("n", 1), body["seed"], body["max_tokens"]
            choices = [
                {"index": j, "message": {"role": "assistant", "content": f"seed={seed + j} {digest}"},
                 "finish_reason": "length", "token_ids": list(range(k))}
                for j in range(n)
            ]
            return self._send(200, {"choices": choices, "usage": {"prompt_tokens": 7, "completion_tokens": n * k}})

    ThreadingHTTPServer((args.host, args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
