"""benchmarks/serve_load.py at a tiny size: every phase runs and nothing is lost or mixed up."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "serve_load.py"


@pytest.mark.slow
@pytest.mark.parametrize("endpoint", ["native", "run_code"])
def test_serve_load_smoke(tmp_path, endpoint):
    spec = importlib.util.spec_from_file_location("serve_load", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("serve_load", module)  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    out = tmp_path / "load.json"
    code = module.main(["--clients", "3", "--duration", "2", "--endpoint", endpoint, "--max-concurrent", "2",
                        "--max-queue", "2", "--burst", "12", "--disconnects", "2", "--disconnect-sleep", "1.5",
                        "--workers", "2", "--json", str(out)])
    report = json.loads(out.read_text())
    assert code == 0
    assert report["in_process"]["ok"] == report["in_process"]["sent"] > 0
    assert report["server"]["ok"] == report["server"]["sent"] > 0
    full = report["full"]
    assert full["lost"] == 0 and full["ok"] + full["statuses"].get("429", 0) == 12
    assert full["statuses"].get("429", 0) > 0 and full["429_without_retry_after"] == 0
    disconnects = report["disconnects"]
    assert disconnects["gave_up"] == 2 and disconnects["running_after"] == 0 and disconnects["next_request_ok"]
