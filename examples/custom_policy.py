"""A custom policy is any object with ``generate(chats, params) -> list[list[Generation]]``."""

from agents.policy import Generation


class EchoPolicy:  # answers every chat with n copies of a fixed program
    def generate(self, chats, params):
        return [[Generation("```python\ndef solve():\n    return 0\n```") for _ in range(params.n)] for _ in chats]
