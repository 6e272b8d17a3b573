"""The learned verifier R_phi(x, y): a scalar-head sequence classifier (µCODE Algorithm 1, step 3).

Input: the problem's first user message (``Trajectory.prompt``) and ONE candidate response, no
history, rendered with the chat template as ``[user: prompt, assistant: response]``. Output: one
score read at the last non-pad token (``AutoModelForSequenceClassification``, ``num_labels=1``).

Labels: the oracle of each turn (``TurnRecord.reward``); every intermediate (non-final) turn is a
negative. Losses:

- ``"bt"`` (default, the paper's best): Bradley-Terry over (positive, negative) pairs of the same
  prompt, ``pairs_per_prompt`` pairs sampled with replacement per prompt with an explicit seed;
  prompts lacking either kind are dropped. Trained with TRL's ``RewardTrainer`` (chosen/rejected
  conversational rows).
- ``"bce"``: binary cross-entropy on single labels (TRL has no trainer for it; a small
  ``transformers.Trainer`` subclass does it).

Both take the reference code's optional L2 penalty ``l2_coef * mean(r^2)`` (1e-3 there; 0 here
by default).

>>> pairs = build_pairs(trajectories, pairs_per_prompt=32, seed=0)  # doctest: +SKIP
>>> path = train_verifier(trajectories, "base-dir", VerifierConfig(), "runs/verifier")  # doctest: +SKIP
>>> Verifier.load(path).score(["Write ..."], ["```python\\n...```"])  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agents.models.convert import hf_checkpoint
from agents.records import Trajectory
from agents.training.launch import Stage
from agents.training.precision import torch_dtype_of
from agents.training.checkpoints import ResumableRun
from agents.training.sft import (
    common_training_args,
    load_tokenizer,
    read_train_stats,
    write_train_stats,
)
from agents.training.distributed import accumulation_steps, is_main_process, rank_output_dir, save_trained_model, world_size

__all__ = [
    "VerifierConfig",
    "Verifier",
    "LabeledResponse",
    "build_pairs",
    "build_labels",
    "train_verifier",
    "verifier_messages",
    "read_train_stats",
]

logger = logging.getLogger(__name__)

VERIFIER_META_FILE = "verifier.json"
_LOSSES = ("bt", "bce")


@dataclass(frozen=True)
class VerifierConfig:
    """How to train the verifier (Table 6: lr 1e-6, batch 64, 2 epochs, max length 2048).

    ``batch_size`` is the effective batch: pairs per optimizer step for ``"bt"``, labelled
    responses for ``"bce"``.
    """

    loss: str = "bt"
    pairs_per_prompt: int = 32
    learning_rate: float = 1e-6
    epochs: float = 2.0
    batch_size: int = 64
    per_device_batch_size: int = 8
    max_length: int = 2048
    l2_coef: float = 0.0  # the reference code uses 1e-3 * mean(r^2)
    seed: int = 0
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    lr_scheduler_type: str = "cosine"
    gradient_checkpointing: bool = False
    torch_dtype: str = "float32"
    bf16: bool | None = None  # bf16 autocast; None: where the device computes bf16 natively
    logging_steps: int = 10
    score_batch_size: int = 16
    progress: bool = True
    # a resumable checkpoint every this many optimizer steps, beside the output (None: never);
    # see agents.training.checkpoints.ResumableRun
    checkpoint_steps: int | None = None

    def __post_init__(self) -> None:
        if self.loss not in _LOSSES:
            raise ValueError(f"loss must be one of {_LOSSES}, got {self.loss!r}")
        if self.pairs_per_prompt < 1:
            raise ValueError(f"pairs_per_prompt must be >= 1, got {self.pairs_per_prompt}")
        if self.learning_rate <= 0 or self.epochs <= 0:
            raise ValueError(f"learning_rate and epochs must be > 0, got {self.learning_rate}, {self.epochs}")
        if self.batch_size < 1 or self.per_device_batch_size < 1 or self.score_batch_size < 1:
            raise ValueError("batch_size, per_device_batch_size and score_batch_size must be >= 1")
        if self.max_length < 8:
            raise ValueError(f"max_length must be >= 8, got {self.max_length}")
        if self.l2_coef < 0:
            raise ValueError(f"l2_coef must be >= 0, got {self.l2_coef}")
        if self.checkpoint_steps is not None and self.checkpoint_steps < 1:
            raise ValueError(f"checkpoint_steps must be >= 1 or None, got {self.checkpoint_steps}")

    @property
    def gradient_accumulation_steps(self) -> int:
        """Steps that make ``batch_size`` the pairs/labels per optimizer step over all processes."""
        return accumulation_steps(self.batch_size, self.per_device_batch_size)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "VerifierConfig":
        return cls(**d)


@dataclass(frozen=True)
class LabeledResponse:
    """One candidate response for a problem with its label (oracle; 0 for non-final turns)."""

    problem_id: str
    prompt: str
    response: str
    label: float
    is_final: bool


def verifier_messages(prompt: str, response: str) -> list[dict[str, str]]:
    """The chat the verifier scores: the problem's first user message and one response."""
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]


# ----------------------------------------------------------------------------- data


def build_labels(trajectories: Iterable[Trajectory]) -> list[LabeledResponse]:
    """Every turn of every trajectory as a labelled response.

    The label is the turn's oracle (``TurnRecord.reward``) for the final turn and 0 for every
    intermediate turn (the paper: "every intermediate turn is a negative"; under public-test
    termination an intermediate turn failed its public tests, so both rules agree).
    Order: trajectories in the given order, turns in order.
    """
    out: list[LabeledResponse] = []
    for traj in trajectories:
        last = len(traj.turns) - 1
        for t, turn in enumerate(traj.turns):
            is_final = t == last
            label = float(turn.reward) if is_final else 0.0
            out.append(LabeledResponse(traj.problem_id, traj.prompt, turn.response, label, is_final))
    return out


def _group_by_problem(labels: Iterable[LabeledResponse]) -> "OrderedDict[str, list[LabeledResponse]]":
    groups: OrderedDict[str, list[LabeledResponse]] = OrderedDict()
    for lr in labels:
        groups.setdefault(lr.problem_id, []).append(lr)
    return groups


def build_pairs(
    trajectories: Iterable[Trajectory], pairs_per_prompt: int = 32, seed: int = 0
) -> list[dict[str, Any]]:
    """Bradley-Terry pairs: per prompt, ``pairs_per_prompt`` (positive, negative) pairs.

    Positives and negatives are drawn uniformly with replacement from the prompt's labelled
    responses (:func:`build_labels`). Each prompt has its own RNG seeded from ``(seed,
    problem_id)``, so a prompt's pairs do not depend on which other prompts are present.
    Prompts lacking a positive or a negative are dropped.

    Returns:
        TRL conversational preference rows: ``{"prompt": [user msg], "chosen": [assistant msg],
        "rejected": [assistant msg], "problem_id": str}``, grouped by prompt in first-seen order.
    """
    if pairs_per_prompt < 1:
        raise ValueError(f"pairs_per_prompt must be >= 1, got {pairs_per_prompt}")
    rows: list[dict[str, Any]] = []
    for pid, group in _group_by_problem(build_labels(trajectories)).items():
        pos = [g for g in group if g.label >= 1.0]
        neg = [g for g in group if g.label < 1.0]
        if not pos or not neg:
            continue
        rng = random.Random(f"{seed}:{pid}")
        prompt = group[0].prompt
        for _ in range(pairs_per_prompt):
            p, n = pos[rng.randrange(len(pos))], neg[rng.randrange(len(neg))]
            rows.append(
                {
                    "prompt": [{"role": "user", "content": prompt}],
                    "chosen": [{"role": "assistant", "content": p.response}],
                    "rejected": [{"role": "assistant", "content": n.response}],
                    "problem_id": pid,
                }
            )
    return rows


def count_prompts(trajectories: Sequence[Trajectory]) -> dict[str, int]:
    """How many prompts have positives only, negatives only, or both (pairable)."""
    both = only_pos = only_neg = 0
    for group in _group_by_problem(build_labels(trajectories)).values():
        has_pos = any(g.label >= 1.0 for g in group)
        has_neg = any(g.label < 1.0 for g in group)
        both += has_pos and has_neg
        only_pos += has_pos and not has_neg
        only_neg += has_neg and not has_pos
    return {"both": both, "only_positive": only_pos, "only_negative": only_neg}


# ----------------------------------------------------------------------------- model


def _load_seqcls(path: str, dtype, seed: int):
    import torch
    from transformers import AutoModelForSequenceClassification

    # The new head is random: initialise it from a local seed without touching the caller's RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=dtype)


def _set_pad(model, tok) -> None:
    model.config.pad_token_id = tok.pad_token_id
    text_cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    text_cfg.pad_token_id = tok.pad_token_id


class Verifier:
    """A trained verifier: batched scoring of (prompt, response) pairs.

    >>> v = Verifier.load("runs/it1/verifier")  # doctest: +SKIP
    >>> v.score(["Write a function ..."], ["```python\\ndef f(): ...\\n```"])  # doctest: +SKIP
    [0.73]
    """

    def __init__(self, model, tokenizer, *, max_length: int = 2048, batch_size: int = 16, path: str = "",
                 share_prefix: bool = True):
        self.model = model.eval()
        self.share_prefix = share_prefix  # False: every input runs whole (benchmarks/verifier_scoring.py)
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size
        self.path = path
        _set_pad(self.model, self.tokenizer)
        self.last_score_stats: dict[str, float] = {}

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str | None = None, batch_size: int | None = None) -> "Verifier":
        """Load a verifier saved by :func:`train_verifier`."""
        import torch

        path = str(path)
        meta_file = Path(path) / VERIFIER_META_FILE
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
        cfg = meta.get("config", {})
        tok = load_tokenizer(path)
        model = _load_seqcls(path, torch_dtype_of(cfg.get("torch_dtype", "float32")), 0)
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        model.to(device)
        return cls(
            model,
            tok,
            max_length=int(cfg.get("max_length", 2048)),
            batch_size=batch_size or int(cfg.get("score_batch_size", 16)),
            path=path,
        )

    def __reduce__(self):
        """A verifier travels (to Ray episode actors) as its path and is loaded again there, on
        that machine's device; one built in memory, without a path, does not travel."""
        if not self.path:
            raise TypeError("a Verifier without a path (not loaded with Verifier.load) cannot be pickled")
        return _load_verifier, (self.path, self.batch_size)

    def encode(self, prompt: str, response: str) -> list[int]:
        """Token ids of one input, exactly as TRL's RewardTrainer tokenises a chosen/rejected row.

        Inputs longer than ``max_length`` keep their END (the score is read at the last token).
        """
        ids = self.tokenizer.apply_chat_template(
            verifier_messages(prompt, response), tokenize=True, return_dict=True
        )["input_ids"]
        if len(ids) > self.max_length:
            ids = ids[-self.max_length :]
        return list(ids)

    def score(self, prompts: Sequence[str], responses: Sequence[str], *, progress: str | None = None) -> list[float]:
        """Scores R_phi(x, y), one per (prompt, response), batched and length-sorted.

        Inputs that share a prompt share their leading tokens (the chat template and the problem):
        those keys and values are computed once per prompt and each batch runs only the responses
        on top of them (the same scores up to float rounding; about a third of the tokens at
        Best-of-N's N=5 on MBPP, and a verifier pass costs about as much as generating the
        candidate on a CPU).

        ``progress``: a tqdm bar with this description, counting programs (a relabel stage scores
        every candidate of an iteration: about twenty minutes on 2 CPU cores at the head-to-head's
        size).

        Raises:
            ValueError: when the two lists differ in length.
        """
        import torch
        from tqdm.auto import tqdm

        if len(prompts) != len(responses):
            raise ValueError(f"prompts and responses differ in length: {len(prompts)} vs {len(responses)}")
        if not prompts:
            return []
        encoded = [self.encode(p, r) for p, r in zip(prompts, responses)]
        groups: OrderedDict[str, list[int]] = OrderedDict()
        for i, p in enumerate(prompts):
            groups.setdefault(p, []).append(i)
        scores = [0.0] * len(encoded)
        t0 = time.perf_counter()
        bar = tqdm(total=len(encoded), desc=progress, unit="program", disable=progress is None)
        alone: list[int] = []  # inputs with no prefix worth sharing: batched across prompts
        with torch.inference_mode(), bar:
            for members in groups.values():
                shared = 0
                if self.share_prefix and len(members) > 1:
                    shared = self._shared_prefix([encoded[i] for i in members])
                if shared < _MIN_SHARED_PREFIX:
                    alone.extend(members)
                    continue
                self._score_on_prefix(encoded, members, shared, scores)
                bar.update(len(members))
            order = sorted(alone, key=lambda i: len(encoded[i]))
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                logits = self._forward([encoded[i] for i in idx])
                for row, i in enumerate(idx):
                    scores[i] = float(logits[row, 0].float())
                bar.update(len(idx))
        dt = time.perf_counter() - t0
        self.last_score_stats = {"programs": len(encoded), "seconds": dt, "programs_per_s": len(encoded) / dt if dt else 0.0}
        return scores

    def _shared_prefix(self, inputs: list[list[int]]) -> int:
        """Tokens every input starts with, short of each one's scored token (the last non-pad one,
        which must stay in the part that is run per input)."""
        pad = self.tokenizer.pad_token_id
        n = min(len(ids) for ids in inputs)
        for ids in inputs:
            last = max((k for k, t in enumerate(ids) if t != pad), default=0)
            n = min(n, last)
        first = inputs[0]
        for k in range(n):
            if any(ids[k] != first[k] for ids in inputs[1:]):
                return k
        return n

    def _forward(self, inputs: list[list[int]], cache=None, shared: int = 0):
        """Scores' logits of right-padded ``inputs`` (on top of ``cache``, a prefix of ``shared``
        tokens, when given)."""
        import torch

        pad = self.tokenizer.pad_token_id
        device = next(self.model.parameters()).device
        width = max(len(ids) for ids in inputs)
        ids = torch.full((len(inputs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(inputs), shared + width), dtype=torch.long)
        mask[:, :shared] = 1
        for row, x in enumerate(inputs):
            ids[row, : len(x)] = torch.tensor(x)
            mask[row, shared : shared + len(x)] = 1
        if cache is None:
            return self.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        return self.model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=True,
                          **{_cache_keyword(self.model): cache}).logits

    def _score_on_prefix(self, encoded: list[list[int]], members: list[int], shared: int, scores: list[float]) -> None:
        """Score ``members`` (inputs of one prompt) on the keys and values of their ``shared``
        leading tokens, computed once."""
        import copy

        import torch
        from transformers import DynamicCache

        device = next(self.model.parameters()).device
        prefix = torch.tensor([encoded[members[0]][:shared]], device=device)
        cache = DynamicCache(config=self.model.config)
        self.model.base_model(input_ids=prefix, use_cache=True, **{_cache_keyword(self.model.base_model): cache})
        order = sorted(members, key=lambda i: len(encoded[i]))
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            batch_cache = copy.deepcopy(cache)  # each forward appends its tokens to the cache
            batch_cache.batch_repeat_interleave(len(idx))
            logits = self._forward([encoded[i][shared:] for i in idx], batch_cache, shared)
            for row, i in enumerate(idx):
                scores[i] = float(logits[row, 0].float())


# fewer shared tokens than this are not worth a separate prefix pass
_MIN_SHARED_PREFIX = 16


def _cache_keyword(model) -> str:
    """The name ``model.forward`` takes its KV cache under: ``cache`` from transformers 5.24
    (``past_key_values`` is deprecated there), ``past_key_values`` before."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _load_verifier(path: str, batch_size: int) -> Verifier:
    return Verifier.load(path, batch_size=batch_size)


# ----------------------------------------------------------------------------- training


def _bt_trainer_cls():
    from trl import RewardTrainer

    class _BTRewardTrainer(RewardTrainer):
        """TRL's Bradley-Terry RewardTrainer plus the reference code's L2 penalty on the scores."""

        def __init__(self, *args, l2_coef: float = 0.0, **kwargs):
            self._l2_coef = l2_coef
            super().__init__(*args, **kwargs)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
            if self._l2_coef:
                loss = loss + self._l2_coef * outputs.logits.float().pow(2).mean()
            return (loss, outputs) if return_outputs else loss

    return _BTRewardTrainer


def _bce_trainer_cls():
    import torch
    from transformers import Trainer

    class _BCETrainer(Trainer):
        """Binary cross-entropy on single (prompt, response, label) examples, plus optional L2."""

        def __init__(self, *args, l2_coef: float = 0.0, **kwargs):
            self._l2_coef = l2_coef
            super().__init__(*args, **kwargs)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels = inputs.pop("labels").float()
            outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False)
            logits = outputs.logits.squeeze(-1).float()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
            if self._l2_coef:
                loss = loss + self._l2_coef * logits.pow(2).mean()
            return (loss, outputs) if return_outputs else loss

    return _BCETrainer


class _PadCollator:
    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r["input_ids"])] = torch.tensor(r["input_ids"])
            mask[i, : len(r["input_ids"])] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([float(r["label"]) for r in rows])}


def train_verifier(
    trajectories: Sequence[Trajectory],
    base_model: str | os.PathLike,
    config: VerifierConfig,
    output_dir: str | os.PathLike,
) -> Path:
    """Train R_phi on ``trajectories`` from ``base_model`` and save it (atomically) to ``output_dir``.

    With no usable data (BT: no prompt has both a positive and a negative; BCE: no response at
    all), the freshly initialised scorer (seeded head) is saved with ``trained: false`` in
    ``verifier.json``, and a warning is logged: the expert then ranks by oracle first anyway.

    Returns:
        ``Path(output_dir)``; ``train_stats.json`` there holds counts, tokens and tokens/s.
    """
    from datasets import Dataset

    trajectories = list(trajectories)
    base = hf_checkpoint(base_model)
    tok = load_tokenizer(base)
    dtype = torch_dtype_of(config.torch_dtype)
    model = _load_seqcls(base, dtype, config.seed)
    _set_pad(model, tok)
    prompt_counts = count_prompts(trajectories)

    stats: dict[str, Any] = {
        "kind": "verifier",
        "loss": config.loss,
        "base_model": base,
        "n_trajectories": len(trajectories),
        "world_size": world_size(),
        "prompts": prompt_counts,
        "config": asdict(config),
    }
    run = ResumableRun(output_dir, config, base, [t.to_row() for t in trajectories])
    with rank_output_dir(output_dir) as tmp:
        trained = False
        trainer_dir = run.trainer_dir(tmp)
        if config.loss == "bt":
            rows = build_pairs(trajectories, config.pairs_per_prompt, config.seed)
            stats["n_pairs"] = len(rows)
            if rows:
                from trl import RewardConfig

                args = RewardConfig(max_length=config.max_length,
                                    **common_training_args(config, trainer_dir))
                trainer = _bt_trainer_cls()(
                    model=model,
                    args=args,
                    train_dataset=Dataset.from_list(rows).remove_columns(["problem_id"]),
                    processing_class=tok,
                    l2_coef=config.l2_coef,
                )
                ds = trainer.train_dataset
                n_tokens = sum(len(a) + len(b) for a, b in zip(ds["chosen_ids"], ds["rejected_ids"]))
                stats["n_pairs_kept"] = len(ds)
                trained = len(ds) > 0
        else:
            labels = build_labels(trajectories)
            stats["n_labels"] = len(labels)
            stats["n_positive"] = sum(1 for lr in labels if lr.label >= 1.0)
            enc = []
            for lr in labels:
                ids = tok.apply_chat_template(verifier_messages(lr.prompt, lr.response), tokenize=True, return_dict=True)["input_ids"]
                if len(ids) <= config.max_length:
                    enc.append({"input_ids": list(ids), "label": lr.label})
            stats["n_labels_kept"] = len(enc)
            n_tokens = sum(len(e["input_ids"]) for e in enc)
            if enc:
                from transformers import TrainingArguments

                args = TrainingArguments(remove_unused_columns=False,
                                         **common_training_args(config, trainer_dir))
                trainer = _bce_trainer_cls()(
                    model=model,
                    args=args,
                    train_dataset=Dataset.from_list(enc),
                    data_collator=_PadCollator(tok.pad_token_id),
                    l2_coef=config.l2_coef,
                )
                trained = True
        if trained:
            t0 = time.perf_counter()
            result = trainer.train(resume_from_checkpoint=run.checkpoint)
            train_s = time.perf_counter() - t0
            stats["resumed_from_step"] = run.resumed_step
            # this process trained only the steps after the checkpoint it resumed from (as the SFT
            # stage counts them): a rate over the whole run's tokens overstated a resumed stage 2.8x
            trained_tokens = n_tokens * config.epochs * (1 - run.resumed_step / max(1, int(result.global_step)))
            stats.update(
                train_s=train_s,
                train_tokens=trained_tokens,
                train_tokens_per_s=trained_tokens / train_s if train_s > 0 else None,
                train_loss=float(result.training_loss),
                global_steps=int(result.global_step),
            )
            save_trained_model(trainer, tmp, lora=False)
            del trainer
        else:
            logger.warning(
                "train_verifier: no usable %s data (%s); saving the untrained scorer", config.loss, prompt_counts
            )
        stats["trained"] = trained
        if not is_main_process():
            return Path(output_dir)
        if not trained:
            model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        import shutil

        shutil.rmtree(tmp / "trainer", ignore_errors=True)
        (tmp / VERIFIER_META_FILE).write_text(
            json.dumps({"trained": trained, "config": asdict(config), "base_model": base}, indent=2)
        )
        write_train_stats(tmp, stats)
    run.finish()
    return Path(output_dir)


def train_job(base_model: str, rows: list[dict[str, Any]], config: dict[str, Any], output_dir: str) -> Path:
    """:data:`VERIFIER_STAGE`'s target: :func:`train_verifier` from trajectory rows and a config dict."""
    return train_verifier([Trajectory.from_row(r) for r in rows], base_model, VerifierConfig.from_dict(config),
                          output_dir)


# Verifier training as a stage that runs here or as a multi-process job (agents.training.launch).
VERIFIER_STAGE = Stage("verifier", "agents.mucode.verifier:train_job")
