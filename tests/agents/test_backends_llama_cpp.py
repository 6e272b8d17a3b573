"""The llama.cpp backend on the real SmolLM2-135M GGUF (short generations)."""

from __future__ import annotations

import pytest

from agents.backends import make_policy
from agents.backends.base import BackendError, sample_seed
from agents.policy import Generation, Policy, SamplingParams

CHAT = [{"role": "user", "content": "Write a Python function that adds two numbers."}]


def test_is_a_policy_with_n_samples_and_token_counts(smollm2_llama):
    assert isinstance(smollm2_llama, Policy)
    out = smollm2_llama.generate([CHAT, CHAT[:]], SamplingParams(n=2, temperature=0.8, max_new_tokens=6, seed=1))
    assert [len(row) for row in out] == [2, 2]
    for row in out:
        for gen in row:
            assert isinstance(gen, Generation)
            assert gen.prompt_tokens > 10
            assert 1 <= gen.completion_tokens <= 6
            assert gen.finish_reason in ("stop", "length")
    # distinct seeds per sample: the four samples are not all the same text
    assert len({g.text for row in out for g in row}) > 1


def test_seed_makes_sampling_reproducible(smollm2_llama):
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=6, seed=7)
    first = smollm2_llama.generate([CHAT], params)
    second = smollm2_llama.generate([CHAT], params)
    assert [g.text for g in first[0]] == [g.text for g in second[0]]


def test_per_chat_seeds_make_a_chats_samples_independent_of_the_call(smollm2_llama):
    other = [{"role": "user", "content": "Write a Python function that reverses a list."}]
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=6, seed=7)
    together = smollm2_llama.generate([other, CHAT], params, seeds=[11, 12])
    alone = smollm2_llama.generate([CHAT], SamplingParams(n=2, temperature=1.0, max_new_tokens=6, seed=99), seeds=[12])
    assert [g.text for g in together[1]] == [g.text for g in alone[0]]  # neither its place nor params.seed counts
    assert [g.extra["seed"] for g in alone[0]] == [sample_seed(12, 0, 0), sample_seed(12, 0, 1)]
    # without seeds the chat's place in the call seeds it, as before
    placed = smollm2_llama.generate([other, CHAT], params)
    assert [g.extra["seed"] for g in placed[1]] == [sample_seed(7, 1, 0), sample_seed(7, 1, 1)]
    with pytest.raises(ValueError, match="seeds"):
        smollm2_llama.generate([CHAT], params, seeds=[1, 2])


def test_length_finish_reason_and_stop_strings(smollm2_llama):
    (gen,), = smollm2_llama.generate([CHAT], SamplingParams(max_new_tokens=3))
    assert gen.finish_reason == "length" and gen.completion_tokens == 3
    full = smollm2_llama.generate([CHAT], SamplingParams(max_new_tokens=8))[0][0].text
    stop = full.strip()[:2]
    (cut,), = smollm2_llama.generate([CHAT], SamplingParams(max_new_tokens=8, stop=(stop,)))
    assert stop not in cut.text
    assert cut.finish_reason == "stop"


def test_chat_template_comes_from_the_gguf(smollm2_llama):
    # SmolLM2's template injects its default system prompt: the prompt is longer than the user text
    (gen,), = smollm2_llama.generate([[{"role": "user", "content": "hi"}]], SamplingParams(max_new_tokens=1))
    assert gen.prompt_tokens > 15


def test_factory_and_refusals(smollm2_gguf, tmp_path):
    policy = make_policy("llama_cpp", smollm2_gguf, n_ctx=512, n_threads=1)
    assert policy.name.startswith("llama_cpp:")
    with pytest.raises(BackendError, match="GGUF"):
        make_policy("llama_cpp", str(tmp_path))  # a directory is not a GGUF
    with pytest.raises(ValueError, match="role"):
        policy.generate([[{"content": "no role"}]], SamplingParams(max_new_tokens=1))


def test_prompt_longer_than_context_is_cut_not_crashed(smollm2_gguf):
    policy = make_policy("llama_cpp", smollm2_gguf, n_ctx=128, n_threads=1)
    (gen,), = policy.generate([[{"role": "user", "content": "word " * 300}]], SamplingParams(max_new_tokens=50))
    assert gen.finish_reason == "length"
    assert gen.text == "" and gen.completion_tokens == 0 and gen.prompt_tokens > 128
