"""A custom policy is any object with ``generate(chats, params) -> list[list[Generation]]``.

Run: python examples/custom_policy.py   (evaluates it on 3 HumanEval problems, 2 turns)
"""

from agents.policy import Generation


class EchoPolicy:  # answers every chat with n copies of a fixed program
    def generate(self, chats, params):
        return [[Generation("```python\ndef solve():\n    return 0\n```") for _ in range(params.n)] for _ in chats]


if __name__ == "__main__":
    from agents import RolloutConfig, evaluate

    report = evaluate(EchoPolicy(), RolloutConfig(env_id="MuCode-HumanEval-v0", limit=3, max_turns=2, progress=False))
    print("accuracy by turn:", report.accuracy_by_turn)  # a fixed wrong program: 0.0 at every turn
