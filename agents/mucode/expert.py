"""The local search expert of µCODE (Algorithm 1, step 4).

    y*(x) = argmax_{y in D(x)} beta_O * R(x, y) + beta_L * R_phi(x, y)

over ALL responses for x in the aggregated data D (every turn of every trajectory), with R the
oracle (``TurnRecord.reward``) and R_phi the learned verifier. Defaults (1.0, 0.1) are the
paper's; the ablations are ``ExpertConfig.oracle_only()`` (µCODE_OV, beta = (1, 0)) and
``ExpertConfig.verifier_only()`` (µCODE_LV, beta = (0, 1)).

``variant="reference"`` reproduces the reference code: score ``100 * label + R_phi``, candidates
from the final turns of THIS iteration's trajectories only (pass them as ``candidates_from``);
:mod:`agents.mucode.relabel` then relabels only the best-scored failed trajectories.

Ties are broken deterministically: higher score, then higher oracle, then higher verifier
score, then the earliest candidate in data order (trajectory order, then turn order).

>>> experts = select_experts(trajectories, ExpertConfig(), verifier.score)  # doctest: +SKIP
>>> experts["MBPP/601"].response  # doctest: +SKIP
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from agents.records import Trajectory

__all__ = [
    "ExpertConfig",
    "Candidate",
    "ExpertChoice",
    "ExpertResult",
    "collect_candidates",
    "select_experts",
    "ScoreFn",
]

ScoreFn = Callable[[Sequence[str], Sequence[str]], list[float]]
_VARIANTS = ("paper", "reference")
REFERENCE_LABEL_WEIGHT = 100.0


@dataclass(frozen=True)
class ExpertConfig:
    """Weights of the expert's objective and which variant to run.

    Attributes:
        beta_oracle: weight of the oracle reward R(x, y) (paper: 1.0).
        beta_verifier: weight of the verifier score R_phi(x, y) (paper: 0.1).
        variant: ``"paper"`` (all responses of the aggregated data) or ``"reference"``
            (the reference code: 100*label + reward over this iteration's final turns).
        reference_top_k_failed: reference variant: how many best-scored failed trajectories per
            prompt are relabeled (3 in the reference code).
    """

    beta_oracle: float = 1.0
    beta_verifier: float = 0.1
    variant: str = "paper"
    reference_top_k_failed: int = 3

    def __post_init__(self) -> None:
        if self.variant not in _VARIANTS:
            raise ValueError(f"variant must be one of {_VARIANTS}, got {self.variant!r}")
        if self.beta_oracle < 0 or self.beta_verifier < 0:
            raise ValueError(f"betas must be >= 0, got ({self.beta_oracle}, {self.beta_verifier})")
        if self.beta_oracle == 0 and self.beta_verifier == 0 and self.variant == "paper":
            raise ValueError("beta_oracle and beta_verifier are both 0: the expert would pick arbitrarily")
        if self.reference_top_k_failed < 0:
            raise ValueError(f"reference_top_k_failed must be >= 0, got {self.reference_top_k_failed}")

    @classmethod
    def oracle_only(cls) -> "ExpertConfig":
        """µCODE_OV: beta = (1, 0)."""
        return cls(beta_oracle=1.0, beta_verifier=0.0)

    @classmethod
    def verifier_only(cls) -> "ExpertConfig":
        """µCODE_LV: beta = (0, 1)."""
        return cls(beta_oracle=0.0, beta_verifier=1.0)

    @property
    def uses_verifier(self) -> bool:
        return self.variant == "reference" or self.beta_verifier != 0.0

    def objective(self, oracle: float, verifier: float) -> float:
        if self.variant == "reference":
            return REFERENCE_LABEL_WEIGHT * oracle + verifier
        return self.beta_oracle * oracle + self.beta_verifier * verifier


@dataclass(frozen=True)
class Candidate:
    """One response for a problem in the data, with where it came from."""

    problem_id: str
    prompt: str
    response: str
    code: str
    oracle: float
    traj_index: int  # index into the trajectory list it was collected from
    turn_index: int
    is_final: bool


@dataclass(frozen=True)
class ExpertChoice:
    """y*(x): the chosen response and how it scored."""

    problem_id: str
    prompt: str
    response: str
    code: str
    oracle: float
    verifier: float
    score: float
    traj_index: int
    turn_index: int
    n_candidates: int


@dataclass
class ExpertResult:
    """The expert per problem, plus every candidate's verifier score (for relabel/reports)."""

    choices: "OrderedDict[str, ExpertChoice]"
    candidate_scores: dict[tuple[int, int], float] = field(default_factory=dict)  # (traj, turn) -> R_phi
    config: ExpertConfig = field(default_factory=ExpertConfig)

    def __getitem__(self, problem_id: str) -> ExpertChoice:
        return self.choices[problem_id]

    def __contains__(self, problem_id: object) -> bool:
        return problem_id in self.choices

    def __len__(self) -> int:
        return len(self.choices)

    def accuracy(self) -> float:
        """Fraction of problems whose expert response is oracle-correct."""
        return sum(c.oracle for c in self.choices.values()) / len(self.choices) if self.choices else 0.0


def collect_candidates(
    trajectories: Sequence[Trajectory], *, final_turns_only: bool = False
) -> "OrderedDict[str, list[Candidate]]":
    """Candidates per problem, in data order (trajectory order, then turn order)."""
    out: OrderedDict[str, list[Candidate]] = OrderedDict()
    for i, traj in enumerate(trajectories):
        last = len(traj.turns) - 1
        for t, turn in enumerate(traj.turns):
            if final_turns_only and t != last:
                continue
            out.setdefault(traj.problem_id, []).append(
                Candidate(traj.problem_id, traj.prompt, turn.response, turn.code, float(turn.reward), i, t, t == last)
            )
    return out


def _score_unique(cands: Iterable[Candidate], score_fn: ScoreFn | None) -> dict[tuple[str, str], float]:
    """Verifier scores of the distinct (prompt, response) pairs, one batched call."""
    keys: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for c in cands:
        k = (c.prompt, c.response)
        if k not in seen:
            seen.add(k)
            keys.append(k)
    if score_fn is None or not keys:
        return {k: 0.0 for k in keys}
    scores = score_fn([k[0] for k in keys], [k[1] for k in keys])
    if len(scores) != len(keys):
        raise ValueError(f"score_fn returned {len(scores)} scores for {len(keys)} inputs")
    return {k: float(s) for k, s in zip(keys, scores)}


def select_experts(
    trajectories: Sequence[Trajectory],
    config: ExpertConfig,
    score_fn: ScoreFn | None = None,
    *,
    candidates_from: Sequence[Trajectory] | None = None,
) -> ExpertResult:
    """y*(x) for every problem of ``trajectories``.

    Args:
        trajectories: the aggregated data D (paper variant: all its responses are candidates).
        config: betas and variant.
        score_fn: the verifier, ``score(prompts, responses) -> list[float]`` (e.g.
            ``Verifier.score``); required unless ``beta_verifier == 0`` in the paper variant.
        candidates_from: reference variant: this iteration's trajectories (their final turns are
            the candidates); defaults to ``trajectories``. Ignored by the paper variant.
            ``traj_index`` in the result indexes this list in that case.

    Returns:
        An :class:`ExpertResult`; problems are in first-seen order.

    Raises:
        ValueError: when a verifier is needed and ``score_fn`` is None.
    """
    if config.uses_verifier and score_fn is None:
        raise ValueError(
            f"ExpertConfig(beta_verifier={config.beta_verifier}, variant={config.variant!r}) needs a verifier: "
            "pass score_fn=Verifier.score, or use ExpertConfig.oracle_only()"
        )
    if config.variant == "reference":
        source = list(candidates_from) if candidates_from is not None else list(trajectories)
        groups = collect_candidates(source, final_turns_only=True)
    else:
        groups = collect_candidates(list(trajectories))
    all_cands = [c for cs in groups.values() for c in cs]
    scores = _score_unique(all_cands, score_fn if config.uses_verifier else None)

    choices: OrderedDict[str, ExpertChoice] = OrderedDict()
    cand_scores: dict[tuple[int, int], float] = {}
    for pid, cands in groups.items():
        best: tuple | None = None
        for order, c in enumerate(cands):
            v = scores[(c.prompt, c.response)]
            cand_scores[(c.traj_index, c.turn_index)] = v
            obj = config.objective(c.oracle, v)
            key = (-obj, -c.oracle, -v, order)
            if best is None or key < best[0]:
                best = (key, c, v, obj)
        assert best is not None  # every group has >= 1 candidate by construction
        _, c, v, obj = best
        choices[pid] = ExpertChoice(pid, c.prompt, c.response, c.code, c.oracle, v, obj, c.traj_index, c.turn_index, len(cands))
    return ExpertResult(choices=choices, candidate_scores=cand_scores, config=config)
