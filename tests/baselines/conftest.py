"""Fixtures of the baseline tests: a tiny causal LM and toy problems for the real environment."""

from __future__ import annotations

import pytest
import torch

from mucode_env import IOStyle, Problem, TestCase

torch.set_num_threads(1)


def call_test(call: str, expected: str) -> TestCase:
    return TestCase(f"assert {call} == {expected}", (call,), f"assert _0 == {expected}")


def toy_problems() -> list[Problem]:
    inc = Problem("Toy/inc", "Return x + 1.", IOStyle.FUNCTION, "f", (call_test("f(1)", "2"),),
                  (call_test("f(5)", "6"),), "def f(x):\n    return x + 1")
    dbl = Problem("Toy/dbl", "Return 2 * x.", IOStyle.FUNCTION, "g", (call_test("g(1)", "2"),),
                  (call_test("g(4)", "8"),), "def g(x):\n    return 2 * x")
    return [inc, dbl]


@pytest.fixture()
def toy() -> list[Problem]:
    return toy_problems()


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    from agents.tiny import make_tiny_causal_lm

    return make_tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "qwen2")


@pytest.fixture(scope="session")
def tiny_model(tiny_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_dir).eval()
