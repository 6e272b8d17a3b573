"""agents.models.convert: one dequantiser, one cache, and where a model or a training run points."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.models.convert import find_source_gguf, hf_checkpoint, resolve_run


def test_resolve_run_reads_training_run_directories(tmp_path):
    run = tmp_path / "mucode"
    run.mkdir()
    (run / "best.json").write_text(json.dumps({"generator": "G", "verifier": "V"}))
    assert resolve_run(run, "default") == ("G", "V")
    ppo = tmp_path / "ppo"
    (ppo / "checkpoint").mkdir(parents=True)
    (ppo / "checkpoint" / "config.json").write_text("{}")
    assert resolve_run(ppo, "default") == (str(ppo / "checkpoint"), "default")
    assert resolve_run(tmp_path / "gen", None) == (str(tmp_path / "gen"), None)


def test_hf_checkpoint_passes_directories_and_hub_ids_through(tmp_path):
    assert hf_checkpoint(tmp_path) == str(tmp_path)
    assert hf_checkpoint("Qwen/Qwen2.5-Coder-0.5B-Instruct") == "Qwen/Qwen2.5-Coder-0.5B-Instruct"
    assert find_source_gguf(tmp_path) is None and find_source_gguf("Qwen/Qwen2.5-Coder-0.5B-Instruct") is None


@pytest.mark.slow
def test_a_registry_gguf_is_dequantised_once_and_points_back_at_its_gguf(tmp_path):
    from agents.models import resolve_model

    first = hf_checkpoint("smollm2-135m", tmp_path)
    assert hf_checkpoint("smollm2-135m", tmp_path) == first  # cached
    source = json.loads((Path(first) / "source.json").read_text())["gguf"]
    assert source == str(find_source_gguf(first)) == str(resolve_model("smollm2-135m", tmp_path).path)
