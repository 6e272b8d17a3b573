"""Drive MuCode-MBPP-v0 by hand: a wrong first answer, feedback, then a fix.

Run: MUCODE_DATA_DIR=../shared/data python examples/quickstart_env.py
"""

import gymnasium as gym

import mucode_env

env = gym.make("MuCode-MBPP-v0", split="test", max_turns=3)
obs, info = env.reset(seed=0, options={"problem_id": "MBPP/11"})
print(obs["prompt"], "\n")

wrong = "```python\ndef remove_Occ(s, ch):\n    return s.replace(ch, '', 1)\n```"
obs, reward, terminated, truncated, info = env.step(wrong)
print(f"turn 1: reward={reward} terminated={terminated} feedback:\n{info['feedback']}\n")

right = ("```python\ndef remove_Occ(s, ch):\n    i, j = s.find(ch), s.rfind(ch)\n"
         "    if i < 0:\n        return s\n    s = s[:i] + s[i + 1:]\n    j -= 1\n"
         "    return s[:j] + s[j + 1:] if j >= i else s\n```")
obs, reward, terminated, truncated, info = env.step(right)
print(f"turn 2: reward={reward} terminated={terminated} feedback: {info['feedback']}")
print("chat so far:", [m["role"] for m in mucode_env.to_messages(obs)])
env.close()
