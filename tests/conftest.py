"""Shared fixtures: the offline data directory and one sandbox per test process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data"

# Tests read the offline datasets through the data-directory setting, like users do.
if "MUCODE_DATA_DIR" not in os.environ and DEFAULT_DATA_DIR.is_dir():
    os.environ["MUCODE_DATA_DIR"] = str(DEFAULT_DATA_DIR)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ.get("MUCODE_DATA_DIR", DEFAULT_DATA_DIR))
    if not (path / "mbpp.jsonl").is_file():
        pytest.skip(f"offline data not found at {path}; set MUCODE_DATA_DIR")
    return path


@pytest.fixture(scope="session")
def sandbox():
    from mucode_env.sandbox import Sandbox

    with Sandbox() as sb:
        yield sb
