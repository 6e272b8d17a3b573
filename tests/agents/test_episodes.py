"""agents.episodes: the one episode engine (batching, refills, hooks, selection, optional keywords)."""

from __future__ import annotations

import pytest

from agents.episodes import EpisodeSpec, EpisodeStats, accepts_seeds, derive_seed, episode_seed, play_episodes
from agents.policy import Generation, SamplingParams
from mucode_env import MuCodeEnv

RIGHT = {"Toy/inc": "def f(x):\n    return x + 1", "Toy/dbl": "def g(x):\n    return 2 * x"}


class FixOnSecondTurn:
    """Wrong on the first turn, right afterwards; records every call and its optional keywords."""

    name = "fix-on-second-turn"

    def __init__(self):
        self.calls = []

    def generate(self, chats, params, progress=None, episodes=None):
        self.calls.append({"n_chats": len(chats), "seed": params.seed, "n": params.n, "episodes": episodes})
        out = []
        for k, chat in enumerate(chats):
            pid = "Toy/inc" if "x + 1" in chat[0]["content"] else "Toy/dbl"
            right = len(chat) > 1
            code = RIGHT[pid] if right else "def nothing():\n    pass"
            out.append([Generation(f"```python\n{code}\n```", 7, 3) for _ in range(params.n)])
            if progress is not None:
                progress((k + 1) * params.n, 3 * (k + 1) * params.n)
        return out


@pytest.fixture()
def factory(sandbox, toy_problems):
    return lambda: MuCodeEnv(problems=toy_problems, sandbox=sandbox, max_turns=3)


def test_derive_seed_is_stable_and_distinguishes_its_parts():
    assert derive_seed(0, "turn", 1) == derive_seed(0, "turn", 1)
    assert len({derive_seed(0, "turn", t) for t in range(100)}) == 100
    assert 0 <= derive_seed("x") < 2 ** 31


def test_lock_step_play_with_hooks_keeps_spec_order(factory):
    policy = FixOnSecondTurn()
    specs = [EpisodeSpec("Toy/dbl", 0), EpisodeSpec("Toy/inc", 0), EpisodeSpec("Toy/inc", 1)]
    turns, finished, rounds = [], [], []
    stats = EpisodeStats()
    trajs = play_episodes(policy, factory, specs, sampling=lambda call: SamplingParams(seed=derive_seed(9, call)),
                          on_turn=turns.append, on_done=lambda t: finished.append(t.problem_id),
                          on_round=lambda s: rounds.append(s.episodes), stats=stats, env_id="toy", seed=9)
    assert [(t.problem_id, t.sample_index) for t in trajs] == [("Toy/dbl", 0), ("Toy/inc", 0), ("Toy/inc", 1)]
    assert all([u.reward for u in t.turns] == [0.0, 1.0] for t in trajs)
    assert [c["n_chats"] for c in policy.calls] == [3, 3] and [c["seed"] for c in policy.calls] == [
        derive_seed(9, 0), derive_seed(9, 1)]
    assert [c["episodes"] for c in policy.calls] == [[0, 1, 2], [0, 1, 2]]  # the keyword the policy asked for
    assert [s.episode for s in turns] == [0, 1, 2, 0, 1, 2] and turns[-1].terminated and turns[-1].reward == 1.0
    assert len(finished) == 3 and rounds == [0, 3]
    assert (stats.episodes, stats.generation_calls, stats.generations, stats.executions) == (3, 2, 6, 6)
    assert all(t.env_id == "toy" and t.seed == 9 and t.policy_name == "fix-on-second-turn" for t in trajs)


def test_max_live_refills_finished_episodes_from_the_queue(factory):
    policy = FixOnSecondTurn()
    specs = [EpisodeSpec("Toy/inc", j) for j in range(5)]
    trajs = play_episodes(policy, factory, specs, sampling=lambda call: SamplingParams(), max_live=2)
    assert [t.sample_index for t in trajs] == [0, 1, 2, 3, 4]
    assert max(c["n_chats"] for c in policy.calls) == 2
    # two live episodes, two turns each: a new pair starts whenever one pair finishes
    assert [c["episodes"] for c in policy.calls] == [[0, 1], [0, 1], [2, 3], [2, 3], [4], [4]]


def test_candidates_are_selected_on_public_tests_and_scores(factory):
    seen = []

    def select(c):
        seen.append((c.episode, c.turn, list(c.public_passed), c.scores))
        return len(c.generations) - 1

    trajs = play_episodes(FixOnSecondTurn(), factory, [EpisodeSpec("Toy/inc")], n=3, select=select,
                          score_fn=lambda prompts, texts: [float(len(t)) for t in texts],
                          sampling=lambda call: SamplingParams(temperature=0.7))
    assert seen[0][:3] == (0, 0, [False, False, False]) and seen[1][:3] == (0, 1, [True, True, True])
    assert len(seen[0][3]) == 3 and trajs[0].success
    with pytest.raises(ValueError, match="select"):
        play_episodes(FixOnSecondTurn(), factory, [EpisodeSpec("Toy/inc")], n=2, sampling=lambda c: SamplingParams())


def test_a_policy_returning_the_wrong_number_of_generations_is_an_error(factory):
    class Short:
        def generate(self, chats, params):
            return [[]]

    with pytest.raises(ValueError, match="returned"):
        play_episodes(Short(), factory, [EpisodeSpec("Toy/inc")], sampling=lambda c: SamplingParams())


def test_progress_within_a_turn_reaches_the_bar(factory, capsys):
    policy = FixOnSecondTurn()
    play_episodes(policy, factory, [EpisodeSpec("Toy/inc"), EpisodeSpec("Toy/dbl")],
                  sampling=lambda c: SamplingParams(), progress=True)
    err = capsys.readouterr().err
    assert "2/2 generations" in err and "6 tokens" in err


class RecordsSeeds(FixOnSecondTurn):
    """Takes the engine's per-episode ``seeds`` keyword and records it."""

    def generate(self, chats, params, episodes=None, seeds=None):
        self.calls.append({"episodes": episodes, "seeds": seeds})
        return super().generate(chats, params)


def test_a_policy_that_takes_seeds_gets_one_per_episode_and_turn(factory):
    policy = RecordsSeeds()
    specs = [EpisodeSpec("Toy/inc", 0), EpisodeSpec("Toy/dbl", 3)]
    play_episodes(policy, factory, specs, sampling=lambda c: SamplingParams(), seed=5, episode_ids=[7, 9])
    mine = [c for c in policy.calls if "seeds" in c]
    seeds = [c["seeds"] for c in mine]
    assert seeds == [[episode_seed(5, "Toy/inc", 0, 0), episode_seed(5, "Toy/dbl", 3, 0)],
                     [episode_seed(5, "Toy/inc", 0, 1), episode_seed(5, "Toy/dbl", 3, 1)]]
    assert episode_seed(5, "Toy/inc", 0, 0) == derive_seed(5, "Toy/inc", 0, 0) != episode_seed(6, "Toy/inc", 0, 0)
    assert [c["episodes"] for c in mine] == [[7, 9], [7, 9]]
    assert not accepts_seeds(FixOnSecondTurn()) and accepts_seeds(policy)
    with pytest.raises(ValueError, match="episode_ids"):
        play_episodes(policy, factory, specs, sampling=lambda c: SamplingParams(), episode_ids=[1])


def test_episode_ids_reach_selectors_and_turn_hooks(factory):
    seen, turns = [], []
    play_episodes(FixOnSecondTurn(), factory, [EpisodeSpec("Toy/inc"), EpisodeSpec("Toy/dbl")], n=2,
                  select=lambda c: seen.append(c.episode) or 0, on_turn=lambda o: turns.append(o.episode),
                  sampling=lambda c: SamplingParams(temperature=0.7), episode_ids=[40, 41])
    assert seen == [40, 41, 40, 41] and turns == [40, 41, 40, 41]


def test_seeded_episodes_give_the_same_trajectories_however_they_are_batched(toy_problems, sandbox):
    from agents.scripted import SeededScriptedPolicy
    from mucode_env import MuCodeEnv

    def factory():
        return MuCodeEnv(problems=toy_problems, sandbox=sandbox, max_turns=3)

    policy = SeededScriptedPolicy(toy_problems)
    specs = [EpisodeSpec(p.id, j) for p in toy_problems for j in range(4)]
    kwargs = dict(sampling=lambda call: SamplingParams(temperature=0.7, seed=derive_seed(1, call)), seed=1)
    whole = play_episodes(policy, factory, specs, **kwargs)
    one_by_one = play_episodes(policy, factory, specs, max_live=1, **kwargs)
    parts = [t for i in range(0, len(specs), 5)
             for t in play_episodes(policy, factory, specs[i:i + 5], episode_ids=range(i, min(i + 5, len(specs))),
                                    max_live=2, **kwargs)]
    assert whole == one_by_one == parts
    assert {len(t.turns) for t in whole} != {1} and any(t.success for t in whole)  # failures and fixes happen
    # a policy that takes no seeds is batch-dependent: the call's seed and the chat's place count
    other = play_episodes(policy, factory, specs, seed=2, sampling=kwargs["sampling"])
    assert [[u.response for u in t.turns] for t in other] != [[u.response for u in t.turns] for t in whole]


# ---- continuous play (no round barrier) -----------------------------------------------------------
class _Concurrent:
    """SeededScriptedPolicy that may be called from many threads (as an OpenAI-compatible server)."""

    concurrent_generate = True

    def __init__(self, problems):
        from agents.scripted import SeededScriptedPolicy

        self.inner = SeededScriptedPolicy(problems)
        self.name = self.inner.name

    def generate(self, chats, params, seeds=None):
        return self.inner.generate(chats, params, seeds=seeds)


def test_continuous_play_gives_the_same_trajectories_and_hooks_as_rounds(toy_problems, sandbox):
    def factory():
        return MuCodeEnv(problems=toy_problems, sandbox=sandbox, max_turns=3)

    specs = [EpisodeSpec(p.id, j) for p in toy_problems for j in range(6)]
    kwargs = dict(sampling=lambda call: SamplingParams(temperature=0.7, seed=derive_seed(1, call)), seed=1, max_live=4)
    rounds = play_episodes(_Concurrent(toy_problems), factory, specs, continuous=False, **kwargs)
    seen = {"turns": [], "done": [], "rounds": 0}
    stats = EpisodeStats()
    continuous = play_episodes(_Concurrent(toy_problems), factory, specs, stats=stats,  # chosen: the policy says so
                               on_turn=lambda o: seen["turns"].append((o.episode, o.spec.problem_id)),
                               on_done=lambda t: seen["done"].append((t.problem_id, t.sample_index)),
                               on_round=lambda s: seen.__setitem__("rounds", seen["rounds"] + 1), **kwargs)
    assert continuous == rounds
    assert {len(t.turns) for t in rounds} != {1}  # failures, feedback and fixes happened
    assert sorted(seen["done"]) == sorted((s.problem_id, s.sample_index) for s in specs)
    assert len(seen["turns"]) == seen["rounds"] == sum(len(t.turns) for t in rounds) == stats.generations
    assert stats.episodes == len(specs) and stats.completion_tokens == sum(
        u.completion_tokens for t in rounds for u in t.turns)
    assert stats.tokens_per_s > 0 and stats.wall_s > 0


def test_continuous_play_has_no_round_barrier(toy_problems, sandbox):
    """Episode 0's first generation waits until episode 1 has played all its turns: in rounds this
    could never finish (every round waits for its longest generation); continuously it does."""
    import threading

    from mucode_env import MuCodeEnv as Env

    released = threading.Event()

    class Slow(_Concurrent):
        def generate(self, chats, params, seeds=None):
            if "x + 1" in chats[0][0]["content"] and len(chats[0]) == 1:  # episode 0's first turn
                assert released.wait(timeout=60), "blocked behind a round barrier"
            return super().generate(chats, params, seeds=seeds)

    finished = []

    def done(traj):
        finished.append(traj.problem_id)
        if traj.problem_id != "Toy/inc":
            released.set()

    inc, other = toy_problems[0], toy_problems[1]
    assert inc.id == "Toy/inc"
    specs = [EpisodeSpec(inc.id, 0), EpisodeSpec(other.id, 0)]
    trajs = play_episodes(Slow(toy_problems), lambda: Env(problems=toy_problems, sandbox=sandbox, max_turns=3), specs,
                          sampling=lambda call: SamplingParams(), max_live=2, on_done=done)
    assert finished == [other.id, inc.id] and [t.problem_id for t in trajs] == [inc.id, other.id]


def test_continuous_play_raises_the_first_error(toy_problems, sandbox):
    class Broken(_Concurrent):
        def generate(self, chats, params, seeds=None):
            return []  # wrong number of generations

    def factory():
        return MuCodeEnv(problems=toy_problems, sandbox=sandbox, max_turns=3)

    specs = [EpisodeSpec(p.id, j) for p in toy_problems for j in range(3)]
    with pytest.raises(ValueError, match="returned"):
        play_episodes(Broken(toy_problems), factory, specs, sampling=lambda call: SamplingParams(), max_live=3)
    # lock-step play (no max_live) stays in rounds
    lock_step = play_episodes(_Concurrent(toy_problems), factory, specs, sampling=lambda call: SamplingParams())
    assert len(lock_step) == len(specs)


def test_continuous_best_of_n_picks_as_rounds_do(toy_problems, sandbox):
    import random

    def factory():
        return MuCodeEnv(problems=toy_problems, sandbox=sandbox, max_turns=3)

    def select(c):  # seeded by the episode and turn, as agents.bon's selectors
        passing = [i for i, ok in enumerate(c.public_passed) if ok]
        best = max(range(len(c.scores)), key=lambda i: (i in passing, c.scores[i]))
        return best if random.Random(derive_seed(c.episode, c.turn)).random() < 0.7 else 0

    def score(prompts, responses):
        return [float(derive_seed(p[:20], r) % 100) for p, r in zip(prompts, responses)]

    specs = [EpisodeSpec(p.id, j) for p in toy_problems for j in range(5)]
    kwargs = dict(sampling=lambda call: SamplingParams(temperature=0.7), seed=4, n=3, select=select, score_fn=score,
                  max_live=3)
    rounds_stats, continuous_stats = EpisodeStats(), EpisodeStats()
    rounds = play_episodes(_Concurrent(toy_problems), factory, specs, continuous=False, stats=rounds_stats, **kwargs)
    continuous = play_episodes(_Concurrent(toy_problems), factory, specs, stats=continuous_stats, **kwargs)
    assert continuous == rounds and {len(t.turns) for t in rounds} != {1}
    for name in ("generations", "executions", "verifier_programs", "completion_tokens", "episodes"):
        assert getattr(continuous_stats, name) == getattr(rounds_stats, name), name
