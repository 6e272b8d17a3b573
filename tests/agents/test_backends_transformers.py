"""The transformers backend on a tiny random Qwen2 model built offline."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from agents.backends import make_policy  # noqa: E402
from agents.backends.transformers import TransformersPolicy  # noqa: E402
from agents.models.convert import gguf_to_hf  # noqa: E402
from agents.policy import Policy, SamplingParams  # noqa: E402

SHORT = [{"role": "user", "content": "def add"}]
LONG = [{"role": "user", "content": "Write a function to find the shared elements from the given two lists. "
                                    "Please follow the following instructions"}]


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    pol = TransformersPolicy(tiny_model_dir, batch_size=4, device="cpu")
    # A freshly initialised tiny model is near-uniform and greedy-decodes one token forever;
    # larger random weights make its outputs input-dependent, which the padding test needs.
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for prm in pol.model.parameters():
            prm.copy_(torch.randn(prm.shape, generator=gen) * 0.5)
    return pol


def test_shapes_token_counts_and_protocol(policy):
    assert isinstance(policy, Policy)
    out = policy.generate([SHORT, LONG, SHORT], SamplingParams(n=3, temperature=1.0, max_new_tokens=8, seed=0))
    assert [len(row) for row in out] == [3, 3, 3]
    short_prompt = out[0][0].prompt_tokens
    assert out[1][0].prompt_tokens > short_prompt > 0
    for row in out:
        for gen in row:
            assert 0 <= gen.completion_tokens <= 8
            assert gen.finish_reason in ("stop", "length")


def test_left_padding_does_not_change_greedy_output(policy):
    params = SamplingParams(max_new_tokens=10)
    alone = policy.generate([SHORT], params)[0][0]
    batched = policy.generate([LONG, SHORT], params)[1][0]
    assert alone.text == batched.text
    assert alone.completion_tokens == batched.completion_tokens


def test_seeded_sampling_is_reproducible_and_leaves_global_rng_alone(policy):
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=8, seed=3)
    state = torch.get_rng_state()
    first = policy.generate([SHORT, LONG], params)
    assert torch.equal(state, torch.get_rng_state())
    second = policy.generate([SHORT, LONG], params)
    assert [[g.text for g in row] for row in first] == [[g.text for g in row] for row in second]
    other = policy.generate([SHORT, LONG], SamplingParams(n=2, temperature=1.0, max_new_tokens=8, seed=4))
    assert [[g.text for g in row] for row in first] != [[g.text for g in row] for row in other]


def test_stop_strings_are_excluded_and_length_reported(policy):
    full = policy.generate([SHORT], SamplingParams(max_new_tokens=10))[0][0]
    assert full.finish_reason == "length" and full.completion_tokens == 10
    stop = full.text[3:5]
    cut = policy.generate([SHORT], SamplingParams(max_new_tokens=10, stop=(stop,)))[0][0]
    assert stop not in cut.text and full.text.startswith(cut.text)
    assert cut.finish_reason == "stop"


def test_factory_builds_it(tiny_model_dir):
    pol = make_policy("transformers", str(tiny_model_dir), batch_size=2)
    assert pol.name.startswith("transformers:")
    with pytest.raises(ValueError, match="batch_size"):
        TransformersPolicy(tiny_model_dir, batch_size=0)


@pytest.mark.slow
def test_gguf_is_dequantized_once_and_cached(smollm2_gguf, tmp_path):
    pytest.importorskip("gguf", reason="transformers reads GGUF files through the gguf package")
    first = gguf_to_hf(smollm2_gguf, tmp_path)
    assert (first / "config.json").is_file()
    assert gguf_to_hf(smollm2_gguf, tmp_path) == first  # cached: no second conversion
    assert json.loads((first / "source.json").read_text())["gguf"] == str(smollm2_gguf.resolve())
    pol = TransformersPolicy(str(smollm2_gguf), cache_dir=tmp_path)
    (gen,), = pol.generate([[{"role": "user", "content": "Say hi"}]], SamplingParams(max_new_tokens=4))
    assert gen.completion_tokens >= 1
