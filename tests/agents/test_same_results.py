"""Same results for fixed seeds, across refactors of the episode machinery.

A seeded scripted policy (its answers depend only on the call's seed, the chat and the sample
index, like a real sampler) runs through evaluation, rollouts, multi-turn Best-of-N with every
selector and one µCODE trainer iteration. The expected numbers and digests below were recorded
on the code before the single episode engine replaced the three episode loops (issue 9); any
change in seed derivation, batching order, stopping rule or record content changes them.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from agents.policy import Generation, SamplingParams
from agents.records import Trajectory

WRONG_VALUE = "```python\ndef {name}(*args):\n    return None\n```"
SYNTAX_ERROR = "```python\ndef broken(:\n    pass\n```"
TEST_IDS = ("MBPP/11", "MBPP/12", "MBPP/13", "MBPP/14", "MBPP/15", "MBPP/16")
TRAIN_IDS = ("MBPP/602", "MBPP/603", "MBPP/604")


def _hash(*parts: object) -> int:
    return int.from_bytes(hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=4).digest(), "little")


class SeededScriptedPolicy:
    """Right or wrong programs drawn from a hash of (seed, chat, sample): a deterministic sampler.

    Greedy calls (temperature 0) ignore the seed. The answer is right with probability ~1/2 on
    the first turn and ~3/4 later, so episodes hold failures, feedback and fixes.
    """

    name = "seeded-scripted"

    def __init__(self, problems) -> None:
        self.problems = list(problems)

    def generate(self, chats, params: SamplingParams):
        out = []
        for chat in chats:
            problem = next(p for p in self.problems if p.prompt[:60] in chat[0]["content"])
            gens = []
            for i in range(params.n):
                seed = params.seed if params.temperature > 0 else "greedy"
                h = _hash(seed, json.dumps(chat), i)
                right = h % 4 != 0 if len(chat) > 1 else h % 2 == 0
                if right:
                    text = f"Here you go.\n```python\n{problem.reference_solution}\n```"
                elif h % 3 == 0:
                    text = SYNTAX_ERROR
                else:
                    text = WRONG_VALUE.format(name=problem.entry_point or "f")
                gens.append(Generation(text, 10 + len(chat), 5 + h % 7))
            out.append(gens)
        return out


def digest(trajectories: list[Trajectory]) -> str:
    rows = [[t.problem_id, t.sample_index, [[u.response, u.code, u.feedback, u.public_passed, u.private_passed,
                                             u.status, u.prompt_tokens, u.completion_tokens] for u in t.turns]]
            for t in trajectories]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]


@pytest.fixture(scope="module")
def problems(data_dir):
    from mucode_env.datasets import load_problems

    test = {p.id: p for p in load_problems("mbpp", "test", data_dir=str(data_dir))}
    train = {p.id: p for p in load_problems("mbpp", "train", data_dir=str(data_dir))}
    val = load_problems("mbpp", "validation", data_dir=str(data_dir))[:2]
    return [test[i] for i in TEST_IDS] + [train[i] for i in TRAIN_IDS] + list(val)


def test_evaluation_and_rollouts(problems, tmp_path, data_dir):
    from agents.evaluate import evaluate
    from agents.rollout import RolloutConfig, load_trajectories

    config = RolloutConfig(env_id="MuCode-MBPP-v0", split="test", problem_ids=TEST_IDS, n=2,
                           sampling=SamplingParams(temperature=0.7, max_new_tokens=64), max_turns=3, seed=5,
                           max_live_episodes=5, progress=False, env_kwargs={"data_dir": str(data_dir)})
    report = evaluate(SeededScriptedPolicy(problems), config, tmp_path / "eval")
    stored = load_trajectories(tmp_path / "eval" / "trajectories")
    assert [round(a, 4) for a in report.accuracy_by_turn] == EXPECTED["eval_accuracy_by_turn"]
    assert [round(a, 4) for a in report.public_pass_by_turn] == EXPECTED["eval_public_by_turn"]
    assert report.per_problem == EXPECTED["eval_per_problem"]
    assert (report.stats["generation_calls"], report.stats["generations"], report.stats["executions"]) == \
        EXPECTED["eval_counts"]
    assert digest(stored) == EXPECTED["eval_digest"]


@pytest.mark.parametrize("selector", ["pt+lv", "pt", "lv", "random"])
def test_best_of_n(problems, selector, data_dir):
    from agents.bon import BoNConfig, best_of_n

    def score(prompts, responses):  # a deterministic stand-in for the verifier
        return [(_hash(p[:40], r) % 1000) / 1000 for p, r in zip(prompts, responses)]

    result = best_of_n(SeededScriptedPolicy(problems), "MuCode-MBPP-v0",
                       BoNConfig(n=3, selector=selector, max_turns=3, seed=3, repeats=2, progress=False),
                       verifier=score, problem_ids=TEST_IDS, split="test", data_dir=str(data_dir))
    got = {"accuracy_by_turn": [round(a, 4) for a in result.accuracy_by_turn], "per_problem": result.per_problem,
           "digest": digest(result.trajectories)}
    assert got == EXPECTED["bon"][selector]


def test_one_trainer_iteration(problems, tmp_path, tiny_model_dir, data_dir):
    from agents.mucode.expert import ExpertConfig
    from agents.training.sft import SFTRunConfig
    from agents.mucode import MuCodeConfig, MuCodeTrainer, RolloutSettings, ValidationSettings
    from agents.mucode.verifier import VerifierConfig

    fast = dict(warmup_ratio=0.0, lr_scheduler_type="constant", progress=False)
    config = MuCodeConfig(
        run_dir=str(tmp_path / "run"), env_id="MuCode-MBPP-v0", train_problem_ids=TRAIN_IDS, data_dir=str(data_dir),
        generator=str(tiny_model_dir), rollout_backend="scripted", finetuned_backend="scripted", iterations=1, seed=7,
        rollout=RolloutSettings(rollouts_per_problem=3, max_new_tokens=8, max_turns=3, max_live_episodes=4),
        verifier=VerifierConfig(pairs_per_prompt=4, learning_rate=1e-3, epochs=1, batch_size=8,
                                per_device_batch_size=8, max_length=512, **fast),
        expert=ExpertConfig(),
        sft=SFTRunConfig(learning_rate=1e-3, epochs=1, batch_size=4, per_device_batch_size=4, max_length=512, **fast),
        validation=ValidationSettings(enabled=True, split="validation", max_problems=2, n=2, max_new_tokens=8,
                                      max_turns=2),
        progress=False,
    )
    policy = SeededScriptedPolicy(problems)
    report = MuCodeTrainer(config, lambda model, backend: policy).train()
    it_dir = tmp_path / "run" / "iter1"
    rollouts = [Trajectory.from_row(json.loads(line)) for line in (it_dir / "rollouts.jsonl").read_text().splitlines()]
    pairs = (it_dir / "pairs.jsonl").read_text()
    relabeled = (it_dir / "relabeled.jsonl").read_text()
    it = report["iterations"][0]
    got = {
        "rollouts": digest(rollouts),
        "rollout_accuracy": round(it["rollout_accuracy"], 4),
        "rollout_accuracy_by_turn": [round(a, 4) for a in it["rollout_accuracy_by_turn"]],
        "pairs": hashlib.sha256(pairs.encode()).hexdigest()[:16],
        "relabeled": hashlib.sha256(relabeled.encode()).hexdigest()[:16],
        "expert_accuracy": it["expert_accuracy"],
        "validation_accuracy": it["validation_accuracy"],
    }
    assert got == EXPECTED["trainer"]


EXPECTED: dict = {  # recorded before the move (commit d52857c)
    "eval_accuracy_by_turn": [0.5, 0.6667, 0.8333],
    "eval_public_by_turn": [0.5, 0.6667, 0.8333],
    "eval_per_problem": {"MBPP/11": 2, "MBPP/12": 0, "MBPP/13": 2, "MBPP/14": 2, "MBPP/15": 2, "MBPP/16": 2},
    "eval_counts": (5, 22, 22),
    "eval_digest": "910d85608bbff9a7",
    "bon": {
        "pt+lv": {"accuracy_by_turn": [0.9167, 1.0, 1.0], "digest": "89420e23e0341f0c",
                  "per_problem": {f"MBPP/{i}": 1.0 for i in range(11, 17)}},
        "pt": {"accuracy_by_turn": [0.9167, 1.0, 1.0], "digest": "9568779c4d57c689",
               "per_problem": {f"MBPP/{i}": 1.0 for i in range(11, 17)}},
        "lv": {"accuracy_by_turn": [0.5, 0.75, 0.8333], "digest": "e98438690262b552",
               "per_problem": {"MBPP/11": 1.0, "MBPP/12": 1.0, "MBPP/13": 1.0, "MBPP/14": 1.0, "MBPP/15": 0.5,
                               "MBPP/16": 0.5}},
        "random": {"accuracy_by_turn": [0.4167, 0.8333, 1.0], "digest": "001ced27ff597be6",
                   "per_problem": {f"MBPP/{i}": 1.0 for i in range(11, 17)}},
    },
    "trainer": {"rollouts": "c7faffd9c4d3d3f3", "rollout_accuracy": 1.0, "rollout_accuracy_by_turn": [0.5556, 1.0, 1.0],
                "pairs": "f9c5e40dad18891f", "relabeled": "33d0562426b0e523", "expert_accuracy": 1.0,
                "validation_accuracy": 1.0},
}
