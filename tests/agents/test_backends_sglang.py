"""The SGLang adapter is an optional extra: without sglang it fails with the pip extra named."""

from __future__ import annotations

import importlib.util

import pytest

from agents.backends import BACKENDS, make_policy
from agents.backends.base import BackendUnavailableError


@pytest.mark.skipif(importlib.util.find_spec("sglang") is not None, reason="not applicable: sglang is installed, so the missing-engine error cannot be shown")
def test_missing_sglang_names_the_extra():
    with pytest.raises(ImportError, match=r"pip install 'mucode\[sglang\]'") as info:
        make_policy("sglang", "Qwen/Qwen2.5-Coder-0.5B-Instruct")
    assert isinstance(info.value, BackendUnavailableError)


def test_unknown_backend_gets_a_hint():
    with pytest.raises(ValueError, match="Did you mean: `llama_cpp`"):
        make_policy("llama-cpp", "x")
    assert set(BACKENDS) == {"llama_cpp", "transformers", "openai", "sglang", "vllm"}


def test_openai_needs_a_base_url():
    with pytest.raises(ValueError, match="base_url"):
        make_policy("openai", "m")
