"""Tiny randomly initialised causal LMs of real architectures, built offline in seconds.

Unit tests of every training stage (verifier, SFT, µCODE, baselines) need a model and a tokenizer
with a chat template but cannot download anything. :func:`make_tiny_causal_lm` trains a small
byte-level BPE tokenizer on a built-in corpus of Python code and English, wraps it as a
``PreTrainedTokenizerFast`` with a ChatML template, and saves a freshly initialised Qwen2 or Llama
model of a few hundred thousand parameters next to it. The directory loads with
``AutoTokenizer``/``AutoModelForCausalLM``/``AutoModelForSequenceClassification`` like any
checkpoint.

>>> from agents.tiny import make_tiny_causal_lm
>>> path = make_tiny_causal_lm("/tmp/tiny-qwen2")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from mucode_env.atomic import atomic_dir

__all__ = ["CHATML_TEMPLATE", "TINY_ARCHS", "make_tiny_causal_lm", "build_tiny_tokenizer"]

TINY_ARCHS = ("qwen2", "llama")

# ChatML (the template of Qwen2/SmolLM2-Instruct). The prompt rendered with add_generation_prompt=True
# is a prefix of prompt + assistant answer, which completion-only SFT relies on.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

_CORPUS = [
    "Write a Python function implementation for the following prompt:",
    "Your code should satisfy these tests:",
    "Please follow the following instructions:",
    "- Reason about the problem and any base cases before writing the code.",
    "- You must return the implementation code in the following format:",
    "```python\n<CODE GOES HERE>\n```",
    "- You must only return a single code block since we only parse the first code block.",
    "- Do not include any tests in your code - we will run the suite and return any error feedback.",
    "- Include relevant import statements.",
    "Feedback:\nCode passed all tests",
    "Traceback (most recent call last):\n  File \"<string>\", line 3, in <module>\nAssertionError",
    "NameError: name 'x' is not defined",
    "TypeError: unsupported operand type(s) for +: 'int' and 'str'",
    "Code execution timed out",
    "def add(a, b):\n    return a + b\n",
    "def is_even(n):\n    return n % 2 == 0\n",
    "def reverse_string(s):\n    return s[::-1]\n",
    "def max_of_list(xs):\n    best = xs[0]\n    for x in xs:\n        if x > best:\n            best = x\n    return best\n",
    "import math\n\ndef area(r):\n    return math.pi * r ** 2\n",
    "def count_vowels(text):\n    return sum(1 for c in text if c in 'aeiou')\n",
    "class Pair:\n    def __init__(self, a, b):\n        self.a = a\n        self.b = b\n",
    "assert add(1, 2) == 3\nassert is_even(4) is True\nassert reverse_string('abc') == 'cba'\n",
    "for i in range(10):\n    if i % 3 == 0:\n        continue\n    print(i)\n",
    "while left < right:\n    mid = (left + right) // 2\n",
    "try:\n    value = int(text)\nexcept ValueError:\n    value = None\n",
    "return sorted(set(items), key=lambda x: (len(x), x))",
    "The quick brown fox jumps over the lazy dog.",
    "Write a function to find the shared elements from the given two lists.",
    "Write a python function to identify non-prime numbers.",
    "Write a function to find the largest integers from a given list of numbers using heap queue.",
    "The function should return a list, a tuple, a dictionary, a string or a number.",
    "0123456789 ()[]{}<>=+-*/%,.:;'\"!?_#@$&|^~\\\n\t",
]


def _corpus() -> list[str]:
    return list(_CORPUS) * 4


def build_tiny_tokenizer(vocab_size: int = 600):
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained on the built-in corpus, with ChatML.

    Args:
        vocab_size: target vocabulary size (the 256 byte symbols and the special tokens included).

    Returns:
        A ``transformers.PreTrainedTokenizerFast`` with ``pad = eos = <|im_end|>`` and a chat template.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=["<|im_start|>"],
        model_max_length=4096,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def make_tiny_causal_lm(
    out_dir: str | os.PathLike,
    arch: str = "qwen2",
    seed: int = 0,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    vocab_size: int = 600,
    max_position_embeddings: int = 4096,
    head_dim: int = 16,
) -> Path:
    """Build and save a tiny randomly initialised causal LM with a tokenizer and a chat template.

    The directory is written atomically (temporary sibling, then rename); an existing complete
    directory (with ``config.json`` and ``tokenizer.json``) is returned as is.

    Args:
        out_dir: where to save (``save_pretrained`` layout).
        arch: ``"qwen2"`` or ``"llama"``.
        seed: seed for the weights (a local ``torch.Generator`` state; the global RNG is restored).
        hidden_size: model width (attention heads = hidden_size // head_dim).
        num_layers: number of decoder layers.
        vocab_size: BPE vocabulary size to train.
        max_position_embeddings: context length of the config.
        head_dim: width of one attention head (vLLM's CPU attention needs 32 or more).

    Returns:
        The path of the saved model directory.

    Raises:
        ValueError: on an unknown ``arch`` or a width not divisible by ``head_dim``.

    >>> p = make_tiny_causal_lm("/tmp/tiny-llama", arch="llama")  # doctest: +SKIP
    """
    if arch not in TINY_ARCHS:
        raise ValueError(f"arch must be one of {TINY_ARCHS}, got {arch!r}")
    if head_dim < 1 or hidden_size % head_dim or hidden_size < head_dim:
        raise ValueError(
            f"hidden_size must be a positive multiple of head_dim={head_dim}, got {hidden_size}; "
            "change hidden_size or head_dim"
        )
    out = Path(out_dir)
    if (out / "config.json").is_file() and (out / "tokenizer.json").is_file():
        return out

    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    tokenizer = build_tiny_tokenizer(vocab_size)
    n_vocab = len(tokenizer)
    heads = hidden_size // head_dim
    common = dict(
        vocab_size=n_vocab,
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if arch == "qwen2":
        config, cls = Qwen2Config(**common), Qwen2ForCausalLM
    else:
        config, cls = LlamaConfig(**common), LlamaForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )

    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "tiny.json").write_text(json.dumps({"arch": arch, "seed": seed, "hidden_size": hidden_size, "head_dim": head_dim}))
    return out
