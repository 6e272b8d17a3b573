"""mucode for TRL's ``GRPOTrainer``: a multi-turn ``rollout_func``, reward functions, a dataset.

TRL plays one prompt -> one completion; the paper's MDP is multi-turn: the model answers, the
environment runs the program on the public tests, the feedback comes back as the next user turn,
up to T turns or until the public tests pass. :class:`MuCodeRolloutFunc` plays that MDP inside
TRL's ``rollout_func`` hook and hands TRL one completion per episode: every response the policy
sampled, with the chat-template tokens that carry the feedback between them, and a mask that keeps
the feedback out of the loss.

The contract, read from TRL 1.16's ``trl/trainer/grpo_trainer.py``:

- ``rollout_func(prompts, trainer) -> dict``. ``prompts`` is this process's slice of the dataset's
  ``prompt`` column, each prompt already repeated ``num_generations`` times by TRL's sampler; the
  function returns one completion per prompt, in order.
- Required keys, lists of per-completion lists: ``prompt_ids``, ``completion_ids`` and
  ``logprobs`` (the sampling log-probability of every completion token).
- ``env_mask`` (optional, same shape as ``completion_ids``): 1 on tokens the policy produced, 0 on
  tokens the environment wrote. TRL multiplies it into the loss mask (it is its ``tool_mask``).
- Any other key is a per-completion column given to the reward functions as a keyword argument.
- Reward functions: ``f(prompts, completions, completion_ids, **kwargs) -> list[float | None]``;
  ``kwargs`` also hold the dataset's other columns (here ``problem_id``).

Token sequence of an episode (``prompt_ids + completion_ids``): the prompt rendered with the chat
template, then ``response_1``, the template tokens that close it and carry ``"Feedback:\\n..."`` as a
user turn and open the next assistant turn, ``response_2``, ... The policy's tokens are kept as
sampled (never re-tokenised from text), so every turn is generated from exactly the tokens TRL later
scores; the feedback tokens come from rendering the conversation with the tokenizer's chat template
and taking what it adds after the last assistant turn. That needs a template that renders earlier
messages the same whatever follows (ChatML/Qwen, Llama 3, SmolLM2 do); any other raises
:class:`ChatTemplateError`.

>>> from trl import GRPOConfig, GRPOTrainer                                       # doctest: +SKIP
>>> from agents.integrations.trl import MuCodeRolloutFunc, build_dataset, oracle_reward
>>> trainer = GRPOTrainer(model, reward_funcs=oracle_reward, args=GRPOConfig(...),
...                       train_dataset=build_dataset("MuCode-MBPP-v0", split="train"),
...                       rollout_func=MuCodeRolloutFunc())                       # doctest: +SKIP
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mucode_env.errors import MuCodeError, UnknownProblemError

__all__ = [
    "ChatTemplateError",
    "CODE_KEY",
    "MultiTurnRolloutConfig",
    "MuCodeRolloutFunc",
    "ORACLE_KEY",
    "PASS_RATE_KEY",
    "PROBLEM_KEY",
    "TURNS_KEY",
    "UnsupportedTrainerError",
    "build_dataset",
    "feedback_bridge",
    "oracle_reward",
    "public_pass_rate_reward",
]

# Extra per-completion columns the rollout returns (TRL forwards them to the reward functions).
PROBLEM_KEY = "mucode_problem_id"
ORACLE_KEY = "mucode_oracle"  # R(x, y) of the episode's last program: 1.0 iff public and private tests pass
PASS_RATE_KEY = "mucode_public_pass_rate"  # fraction of the public tests the last program passes
TURNS_KEY = "mucode_turns"
CODE_KEY = "mucode_code"  # the last program, as the environment extracted it


class ChatTemplateError(MuCodeError, ValueError):
    """The tokenizer's chat template cannot carry feedback turns as appended tokens."""


class UnsupportedTrainerError(MuCodeError, ValueError):
    """The ``GRPOTrainer`` is configured in a way this rollout does not support."""


@dataclass(frozen=True)
class MultiTurnRolloutConfig:
    """The episodes :class:`MuCodeRolloutFunc` plays.

    Attributes:
        env_id: a registered MuCode id (its benchmark; ignored for ``problems``, see the class).
        split: the split the dataset was built from (MBPP: ``"train"``, tasks 601-974).
        max_turns: T, the turn limit (the paper: 3).
        termination: ``"public"`` (the paper: stop when the public tests pass) or ``"oracle"``.
        max_new_tokens: new tokens per turn (None: the trainer's ``max_completion_length``).
        data_dir: offline data directory (else ``$MUCODE_DATA_DIR``).
        feedback_chars: cap on each feedback text.
    """

    env_id: str = "MuCode-MBPP-v0"
    split: str = "train"
    max_turns: int = 3
    termination: str = "public"
    max_new_tokens: int | None = None
    data_dir: str | None = None
    feedback_chars: int = 3000

    def __post_init__(self) -> None:
        from mucode_env.env import TERMINATIONS
        from mucode_env.registration import check_env_id

        check_env_id(self.env_id)
        if not isinstance(self.max_turns, int) or self.max_turns < 1:
            raise ValueError(f"max_turns must be a positive int, got {self.max_turns!r}; the paper uses 3")
        if self.termination not in TERMINATIONS:
            raise ValueError(f"termination must be one of {TERMINATIONS}, got {self.termination!r}")
        if self.max_new_tokens is not None and (not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1):
            raise ValueError(f"max_new_tokens must be a positive int or None (the trainer's max_completion_length), "
                             f"got {self.max_new_tokens!r}")


def _load_problems(env_id: str, split: str, data_dir: str | None, problems: Sequence[Any] | None) -> list[Any]:
    if problems is not None:
        return list(problems)
    from mucode_env.registration import env_problems

    return env_problems(env_id, split=split, data_dir=data_dir)


def _make_env(env_id: str, split: str, problems: list[Any], **kwargs: Any):
    import gymnasium as gym

    import mucode_env  # noqa: F401  (registers the ids)

    return gym.make(env_id, split=split, problems=problems, **kwargs)


def build_dataset(env_id: str = "MuCode-MBPP-v0", split: str = "train", *, problem_ids: Sequence[str] | None = None,
                  limit: int | None = None, data_dir: str | None = None, problems: Sequence[Any] | None = None):
    """One row per problem of an environment split, in TRL's conversational prompt format.

    Args:
        env_id / split / data_dir: the environment and split (MBPP's training split is ``"train"``).
        problem_ids: keep these problems, in this order; limit: then keep the first ``limit``.
        problems: use these in-memory problems instead of loading the split.

    Returns:
        A ``datasets.Dataset`` with ``prompt`` (the episode's first observation as chat messages,
        ``mucode_env.to_messages``: the paper's first user message with the public tests) and
        ``problem_id``.

    >>> ds = build_dataset("MuCode-MBPP-v0", split="train", limit=4)  # doctest: +SKIP
    >>> ds[0]["problem_id"], ds[0]["prompt"][0]["role"]               # doctest: +SKIP
    ('MBPP/601', 'user')
    """
    from datasets import Dataset

    from mucode_env.env import to_messages

    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    pool = _load_problems(env_id, split, data_dir, problems)
    env = _make_env(env_id, split, pool, problem_ids=tuple(problem_ids) if problem_ids is not None else None,
                    max_turns=1)
    selected = list(env.unwrapped.problems)[:limit]
    rows = {"prompt": [], "problem_id": []}
    for problem in selected:
        obs, _ = env.reset(options={"problem_id": problem.id})
        rows["prompt"].append(to_messages(obs))
        rows["problem_id"].append(problem.id)
    env.close()
    return Dataset.from_dict(rows)


def feedback_bridge(tokenizer: Any, messages: Sequence[Mapping[str, str]], stop_ids: Sequence[int],
                    **chat_template_kwargs: Any) -> tuple[int, list[int]]:
    """The template tokens between an assistant turn and the next generation, for appending.

    ``messages`` ends with ``[..., assistant response, user feedback]``. The conversation without
    the feedback is rendered, then with it and a generation prompt; the second must extend the
    first. The boundary is the stop token that closes the last assistant turn (what generation
    stopped on), so what follows it (a newline, the user turn, the assistant header) is the bridge.

    Returns:
        ``(end_id, bridge_ids)``: the stop token that closes an assistant turn (appended by the
        caller when a response was cut by the token limit) and the tokens after it.

    Raises:
        ChatTemplateError: the template renders earlier turns differently once a turn is added,
            or does not close an assistant turn with one of ``stop_ids``.
    """
    if len(messages) < 3 or messages[-1]["role"] != "user" or messages[-2]["role"] != "assistant":
        raise ValueError("feedback_bridge needs a conversation ending with an assistant turn and a user turn")
    prefix = _render(tokenizer, messages[:-1], add_generation_prompt=False, **chat_template_kwargs)
    full = _render(tokenizer, messages, add_generation_prompt=True, **chat_template_kwargs)
    if full[: len(prefix)] != prefix:
        raise ChatTemplateError(
            "the chat template renders the conversation differently once a feedback turn is added, so the "
            "feedback cannot be appended to the sampled tokens; use a prefix-preserving template "
            "(set tokenizer.chat_template, e.g. ChatML)")
    stops = set(stop_ids)
    for k in range(len(prefix) - 1, -1, -1):
        if prefix[k] in stops:
            if tokenizer.decode(prefix[k + 1:]).strip():
                break  # text follows this stop token: it is not the end of the last assistant turn
            return int(prefix[k]), list(full[k + 1:])
    raise ChatTemplateError(
        f"the chat template does not end an assistant turn with a stop token of the generation config "
        f"({sorted(stops)}); add the template's end-of-turn token to GRPOConfig.generation_kwargs['eos_token_id']")


def _render(tokenizer: Any, messages: Sequence[Mapping[str, str]], *, add_generation_prompt: bool,
            **chat_template_kwargs: Any) -> list[int]:
    out = tokenizer.apply_chat_template(list(messages), tokenize=True, add_generation_prompt=add_generation_prompt,
                                        return_dict=True, **chat_template_kwargs)
    return [int(i) for i in out["input_ids"]]


def _text_tokenizer(processing_class: Any) -> Any:
    return getattr(processing_class, "tokenizer", processing_class)


@dataclass
class _Episode:
    """One episode's token record while it is played."""

    prompt_ids: list[int]
    completion_ids: list[int] = field(default_factory=list)
    env_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    turns: int = 0

    def extend(self, ids: Sequence[int], logprobs: Sequence[float] | None, *, is_policy: bool) -> None:
        self.completion_ids.extend(int(i) for i in ids)
        self.env_mask.extend([int(is_policy)] * len(ids))
        self.logprobs.extend([float(x) for x in logprobs] if logprobs is not None else [0.0] * len(ids))


class _SampledLogprobs:
    """A logits processor that records log pi(sampled token) under ``logits / temperature``.

    It sees the logits before transformers' temperature/top-k/top-p warpers and keeps one
    distribution at a time: at step k the token sampled at step k-1 is the last input id. That is
    the distribution TRL's loss scores completions under (logits / temperature, no truncation).
    """

    def __init__(self, temperature: float):
        self.temperature = float(temperature) if temperature else 1.0
        self._dist = None
        self._values: list[Any] = []

    def __call__(self, input_ids, scores):
        import torch

        if self._dist is not None:
            self._values.append(self._dist.gather(-1, input_ids[:, -1:]).squeeze(-1))
        self._dist = torch.log_softmax(scores.float() / self.temperature, dim=-1)
        return scores

    def result(self, new_tokens):
        """``[batch, new]`` log-probabilities of ``new_tokens`` (the generated part of the sequences)."""
        import torch

        n = len(self._values)
        if self._dist is not None and n < new_tokens.shape[1]:
            self._values.append(self._dist.gather(-1, new_tokens[:, n: n + 1]).squeeze(-1))
        if not self._values:
            return torch.zeros(new_tokens.shape, dtype=torch.float32)
        return torch.stack(self._values, dim=1)


class _TrainerSampler:
    """A policy for the episode engine over a TRL trainer's model that keeps every episode's tokens.

    Turn t+1 is generated from ``prompt_ids + completion_ids`` so far, never from a re-rendered and
    re-tokenised chat, so TRL later scores exactly the tokens the policy saw and produced. Between
    turns, the feedback arrives as the chat's last user message and is appended as the chat
    template's tokens (:func:`feedback_bridge`) under mask 0.
    """

    def __init__(self, rollout: "MuCodeRolloutFunc", trainer: Any) -> None:
        self.rollout, self.trainer = rollout, trainer
        self.tokenizer = _text_tokenizer(trainer.processing_class)
        self.template_kwargs = dict(getattr(trainer, "chat_template_kwargs", None) or {})
        self.stop_ids = [int(i) for i in trainer.eos_token_ids]
        self.states: dict[int, _Episode] = {}
        self.rounds = 0

    def generate(self, chats: Sequence[Any], params: Any, episodes: Sequence[int]) -> list[list[Any]]:
        from agents.policy import Generation

        if params.n != 1:
            raise ValueError("the TRL rollout samples one response per episode and turn (n=1)")
        for chat, index in zip(chats, episodes):
            state = self.states.get(index)
            if state is None:  # the first turn: the prompt as the chat template renders it
                self.states[index] = _Episode(_render(self.tokenizer, chat, add_generation_prompt=True,
                                                      **self.template_kwargs))
                continue
            end_id, bridge = feedback_bridge(self.tokenizer, chat, self.stop_ids, **self.template_kwargs)
            sampled = state.completion_ids
            closing = [] if sampled and sampled[-1] in self.stop_ids else [end_id]  # a response cut by the limit
            state.extend(closing + bridge, None, is_policy=False)
        states = [self.states[index] for index in episodes]
        tokens, logprobs = self.rollout._generate(self.trainer, [st.prompt_ids + st.completion_ids for st in states])
        self.rounds += 1
        out = []
        for state, toks, lps in zip(states, tokens, logprobs):
            state.extend(toks, lps, is_policy=True)
            state.turns += 1
            body = toks[:-1] if toks and toks[-1] in self.stop_ids else toks
            out.append([Generation(self.tokenizer.decode(body, skip_special_tokens=True),
                                   len(state.prompt_ids), len(body))])
        return out


class MuCodeRolloutFunc:
    """TRL ``rollout_func`` that plays the paper's multi-turn MDP for every prompt it is given.

    For each prompt (one problem, found by its first user message among the split's problems) it
    resets a MuCode environment on that problem and plays up to T turns: all live episodes are
    generated in one batch with the trainer's own model (sampling settings from ``GRPOConfig``),
    their programs run in one sandbox batch (``mucode_env.step_batch``), and an episode that goes
    on gets the feedback as the next user turn. The returned completion of an episode is every
    sampled response with the feedback tokens in between; ``env_mask`` is 0 exactly on the
    feedback/template tokens. Extra columns for the reward functions: :data:`ORACLE_KEY` (the
    environment's reward: the oracle of the last program), :data:`PASS_RATE_KEY`,
    :data:`TURNS_KEY`, :data:`PROBLEM_KEY` and :data:`CODE_KEY`.

    Generation runs in each process on its own slice (data-parallel); ``use_vllm=True`` is not
    supported yet (:class:`UnsupportedTrainerError`).

    Args:
        config: the episodes (default: MBPP train, T=3, the paper's termination).
        problems: in-memory problems instead of ``config.env_id``'s split.
        sandbox: a ``mucode_env.sandbox.Sandbox`` shared by the episodes (default: the process-wide one).
    """

    def __init__(self, config: MultiTurnRolloutConfig | None = None, *, problems: Sequence[Any] | None = None,
                 sandbox: Any = None):
        self.config = config or MultiTurnRolloutConfig()
        self._problems_arg = list(problems) if problems is not None else None
        self._sandbox = sandbox
        self._problems: list[Any] | None = None
        self._by_prompt: dict[str, list[str]] = {}

    # ---- problems ------------------------------------------------------------------------------
    def _setup(self) -> None:
        if self._problems is not None:
            return
        cfg = self.config
        self._problems = _load_problems(cfg.env_id, cfg.split, cfg.data_dir, self._problems_arg)
        env = _make_env(cfg.env_id, cfg.split, self._problems, max_turns=1, sandbox=self._sandbox)
        for problem in env.unwrapped.problems:
            obs, _ = env.reset(options={"problem_id": problem.id})
            self._by_prompt.setdefault(obs["prompt"], []).append(problem.id)
        env.close()

    def problem_id(self, prompt: Any) -> str:
        """The problem whose first user message is the prompt's last user message."""
        self._setup()
        if isinstance(prompt, str) or not prompt:
            raise TypeError("MuCodeRolloutFunc needs conversational prompts (lists of chat messages); "
                            "build the dataset with agents.integrations.trl.build_dataset")
        text = next((m["content"] for m in reversed(prompt) if m.get("role") == "user"), None)
        ids = self._by_prompt.get(text, [])
        if not ids:
            raise UnknownProblemError(
                f"no problem of {self.config.env_id}/{self.config.split} has this prompt "
                f"({str(text)[:80]!r}...); build the dataset with build_dataset() from the same env_id and split")
        if len(ids) > 1:
            raise UnknownProblemError(
                f"problems {ids} share the same prompt, so a rollout cannot tell them apart; "
                f"leave all but one out of the dataset (build_dataset(problem_ids=...))")
        return ids[0]

    # ---- the rollout ---------------------------------------------------------------------------
    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, list[Any]]:
        """Play one episode per prompt with ``trainer``'s model; returns TRL's rollout dict.

        Episodes run on the shared engine (:func:`agents.episodes.play_episodes`): one batched
        generate call and one sandbox batch per turn, the sampler keeping each episode's tokens.
        """
        import gymnasium as gym

        from agents.episodes import EpisodeSpec, StepOutcome, play_episodes
        from agents.policy import SamplingParams

        if getattr(trainer.args, "use_vllm", False):
            raise UnsupportedTrainerError("MuCodeRolloutFunc generates with the trainer's own model; "
                                          "set GRPOConfig(use_vllm=False)")
        cfg = self.config
        problem_ids = [self.problem_id(p) for p in prompts]
        sampler = _TrainerSampler(self, trainer)
        outcomes: dict[int, StepOutcome] = {}
        env_kwargs = dict(split=cfg.split, problems=self._problems, max_turns=cfg.max_turns,
                          termination=cfg.termination, reward_mode="final", feedback_chars=cfg.feedback_chars,
                          disable_env_checker=True)
        if self._sandbox is not None:
            env_kwargs["sandbox"] = self._sandbox
        play_episodes(sampler, lambda: gym.make(cfg.env_id, **env_kwargs),
                      [EpisodeSpec(pid, k) for k, pid in enumerate(problem_ids)],
                      sampling=lambda call: SamplingParams(), on_turn=lambda step: outcomes.__setitem__(step.episode, step),
                      env_id=cfg.env_id)
        # every process runs T generation rounds, even with nothing left to play, so that
        # collective weight gathers (DeepSpeed ZeRO-3) stay matched across processes
        for _ in range(sampler.rounds, cfg.max_turns):
            self._generate(trainer, [])
        episodes = [sampler.states[k] for k in range(len(prompts))]
        last = [outcomes[k] for k in range(len(prompts))]
        pass_rates = []
        for step in last:
            n_public = step.info["public_result"].n_total
            pass_rates.append(step.info["public_result"].n_passed / n_public if n_public
                              else float(step.info["public_passed"]))
        return {
            "prompt_ids": [ep.prompt_ids for ep in episodes],
            "completion_ids": [ep.completion_ids for ep in episodes],
            "logprobs": [ep.logprobs for ep in episodes],
            "env_mask": [ep.env_mask for ep in episodes],
            PROBLEM_KEY: problem_ids,
            ORACLE_KEY: [step.reward for step in last],  # reward_mode="final": the oracle of the last program
            PASS_RATE_KEY: pass_rates,
            TURNS_KEY: [ep.turns for ep in episodes],
            CODE_KEY: [step.info["code"] for step in last],
        }

    def _generate(self, trainer: Any, contexts: list[list[int]]) -> tuple[list[list[int]], list[list[float]]]:
        """Sample one response per context with the trainer's model: its tokens (cut after the
        first stop token, which is kept: it was sampled too) and their log-probabilities."""
        import torch
        from transformers import LogitsProcessorList
        from trl.models import unwrap_model_for_generation

        tokenizer = _text_tokenizer(trainer.processing_class)
        gen_config = copy.deepcopy(trainer.generation_config)
        if self.config.max_new_tokens is not None:
            gen_config.max_new_tokens = self.config.max_new_tokens
        stop_ids = {int(i) for i in trainer.eos_token_ids}
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(stop_ids)
        device = trainer.accelerator.device
        with (unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator,
                                          gather_deepspeed3_params=trainer.args.ds3_gather_for_generation,
                                          generation_kwargs=trainer.generation_kwargs,
                                          gradient_checkpointing_kwargs=trainer.args.gradient_checkpointing_kwargs)
              as model, torch.no_grad()):
            if not contexts:
                return [], []
            width = max(len(c) for c in contexts)
            ids = torch.full((len(contexts), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(contexts), width), dtype=torch.long)
            for row, context in enumerate(contexts):  # left padding
                ids[row, width - len(context):] = torch.tensor(context, dtype=torch.long)
                attention[row, width - len(context):] = 1
            recorder = _SampledLogprobs(gen_config.temperature)
            sequences = model.generate(input_ids=ids.to(device), attention_mask=attention.to(device),
                                       generation_config=gen_config, logits_processor=LogitsProcessorList([recorder]))
        new = sequences[:, width:]
        logprobs = recorder.result(new).cpu().tolist()
        tokens_out, logprobs_out = [], []
        for row, lps in zip(new.cpu().tolist(), logprobs):
            cut = next((k + 1 for k, tok in enumerate(row) if tok in stop_ids), len(row))
            tokens_out.append(row[:cut])
            logprobs_out.append(lps[:cut])
        return tokens_out, logprobs_out


# ----------------------------------------------------------------------------- reward functions


def _column(kwargs: Mapping[str, Any], key: str, n: int, reward: str) -> list[Any]:
    values = kwargs.get(key)
    if values is None:
        raise KeyError(f"{reward} reads the {key!r} column that MuCodeRolloutFunc returns; pass "
                       f"rollout_func=MuCodeRolloutFunc(...) to GRPOTrainer")
    if len(values) != n:
        raise ValueError(f"{reward}: {len(values)} values in {key!r} for {n} completions")
    dataset_ids, played_ids = kwargs.get("problem_id"), kwargs.get(PROBLEM_KEY)
    if dataset_ids is not None and played_ids is not None and list(dataset_ids) != list(played_ids):
        raise ValueError(f"{reward}: the rollout played problems {list(played_ids)} but the dataset rows are "
                         f"{list(dataset_ids)}; the dataset and the rollout must come from the same env split")
    return list(values)


def oracle_reward(prompts: list[Any], completions: list[Any], completion_ids: list[list[int]] | None = None,
                  **kwargs: Any) -> list[float]:
    """The environment's reward: 1.0 iff the episode's last program passes public and private tests.

    A TRL reward function; the value comes from the environment through :class:`MuCodeRolloutFunc`.
    """
    return [float(v) for v in _column(kwargs, ORACLE_KEY, len(completions), "oracle_reward")]


def public_pass_rate_reward(prompts: list[Any], completions: list[Any],
                            completion_ids: list[list[int]] | None = None, **kwargs: Any) -> list[float]:
    """The fraction of the public tests the episode's last program passes (a denser signal).

    A TRL reward function; the value comes from the environment through :class:`MuCodeRolloutFunc`.
    """
    return [float(v) for v in _column(kwargs, PASS_RATE_KEY, len(completions), "public_pass_rate_reward")]

