"""baselines.bench: planning, resumable evaluation cells, Table 1 / ablation / selector tables, CIs, CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from baselines.bench import BenchConfig, MissingCheckpointError, plan_cells, run_bench
from mucode_env.metrics import wilson_interval

PIDS = [f"P/{i}" for i in range(40)]
# synthetic skill per agent: the share of problems it solves (deterministic, nested sets)
SKILL = {"instruct": 0.3, "rft": 0.35, "rft_lv": 0.4, "ppo": 0.38, "mucode_ov": 0.42, "mucode_lv": 0.43, "mucode": 0.5}
SELECTOR_BONUS = {"random": -0.1, "lv": -0.05, "pt": -0.02, "pt+lv": 0.0, "greedy": 0.0}


class FakeEvaluator:
    def __init__(self):
        self.calls = []

    def __call__(self, spec, setting, env_id, config):
        self.calls.append((spec.name, setting.max_turns, setting.n, setting.selector, env_id))
        sel = "greedy" if setting.n == 1 else setting.selector
        skill = SKILL[spec.name] + 0.05 * (setting.max_turns > 1) + 0.1 * (setting.n > 1) + SELECTOR_BONUS[sel]
        solved = int(round(skill * len(PIDS)))
        per_problem = {pid: float(i < solved) for i, pid in enumerate(PIDS)}
        by_turn = [skill * (t + 1) / setting.max_turns for t in range(setting.max_turns)]
        used = setting.selector if (spec.verifier or not setting.needs_verifier) else "pt"
        return {"per_problem": per_problem, "accuracy_by_turn": by_turn, "selector_used": used, "stats": {}}


def config(tmp_path, **kw) -> BenchConfig:
    base = dict(run_dir=str(tmp_path / "bench"), agents=("instruct", "rft", "ppo", "mucode"), progress=False,
                checkpoints={"rft": "ck/rft", "ppo": "ck/ppo", "mucode": "ck/mucode", "rft_lv": "ck/rft_lv",
                             "mucode_ov": "ck/ov", "mucode_lv": "ck/lv"},
                verifier="ck/verifier", n_bootstrap=500)
    base.update(kw)
    return BenchConfig(**base)


def test_plan_covers_table1_ablations_and_selectors_without_duplicates(tmp_path):
    cells = plan_cells(config(tmp_path, ablations=True, selectors=True))
    slugs = [(c.slug, c.env_id) for c in cells]
    assert len(slugs) == len(set(slugs))
    # 4 agents x 3 settings + 3 new ablation agents + 3 new selectors of µCODE
    assert len(cells) == 12 + 3 + 3
    assert {c.slug for c in cells if c.agent == "mucode"} == {
        "mucode__T1_N1_greedy", "mucode__T3_N1_greedy", "mucode__T3_N5_ptlv", "mucode__T3_N5_random",
        "mucode__T3_N5_lv", "mucode__T3_N5_pt"}


def test_tables_from_synthetic_results_and_resume(tmp_path):
    fake = FakeEvaluator()
    cfg = config(tmp_path, ablations=True, selectors=True)
    out = run_bench(cfg, evaluate_fn=fake)
    run = tmp_path / "bench"
    for name in ("table1.md", "table1.csv", "ablation.md", "ablation.csv", "selectors.md", "selectors.csv",
                 "report.md", "turns_MuCode-MBPP-v0.png"):
        assert (run / name).is_file(), name
    assert len(fake.calls) == 18 and len(out["cells"]) == 18

    table1 = (run / "table1.md").read_text()
    lines = [line for line in table1.splitlines() if line.startswith("| ")][1:]
    methods = [line.split(" | ")[0].lstrip("| ") for line in lines]
    assert methods == ["single-turn Instruct", "single-turn RFT", "single-turn PPO (RLEF)", "single-turn µCODE",
                       "multi-turn Instruct", "multi-turn+BoN Instruct", "multi-turn RFT", "multi-turn+BoN RFT",
                       "multi-turn PPO (RLEF)", "multi-turn+BoN PPO (RLEF)", "multi-turn µCODE", "multi-turn+BoN µCODE"]
    # µCODE multi-turn BoN: skill 0.5 + 0.05 + 0.1 -> 26/40 solved; Wilson interval and sample size shown
    lo, hi = wilson_interval(26, 40)
    row = next(line for line in lines if line.startswith("| multi-turn+BoN µCODE"))
    assert f"65.0 [{100 * lo:.1f}, {100 * hi:.1f}] (n=40)" in row
    # the paired difference to Instruct in the same setting (+20 points on nested solved sets)
    assert "+20.0 [" in row
    assert "| single-turn Instruct | 1 | 30.0" in table1

    rows = list(csv.DictReader((run / "table1.csv").open()))
    mu = next(r for r in rows if r["method"] == "multi-turn+BoN µCODE")
    assert mu["n_problems"] == "40" and float(mu["accuracy"]) == pytest.approx(0.65)
    assert float(mu["diff"]) == pytest.approx(0.2) and float(mu["diff_lo"]) <= 0.2 <= float(mu["diff_hi"])
    assert mu["reference"] == "Instruct" and mu["selector"] == "pt+lv"

    ablation = (run / "ablation.md").read_text()
    assert [line.split(" | ")[0].lstrip("| ") for line in ablation.splitlines() if line.startswith("| ")][1:] == [
        "RFT", "RFT_LV", "µCODE_OV", "µCODE_LV", "µCODE"]
    selectors = list(csv.DictReader((run / "selectors.csv").open()))
    assert [r["method"] for r in selectors] == ["random", "LV", "PT", "PT+LV"]
    assert float(selectors[0]["diff"]) == pytest.approx(-0.1) and selectors[3]["diff"] == ""

    # resume: a second run evaluates nothing; deleting one cell re-runs only that cell
    run_bench(cfg, evaluate_fn=fake)
    assert len(fake.calls) == 18
    (run / "results" / "MuCode-MBPP-v0" / "ppo__T3_N1_greedy.json").unlink()
    run_bench(cfg, evaluate_fn=fake)
    assert fake.calls[18:] == [("ppo", 3, 1, "pt+lv", "MuCode-MBPP-v0")]
    cell = json.loads((run / "results" / "MuCode-MBPP-v0" / "mucode__T3_N5_ptlv.json").read_text())
    assert cell["n_problems"] == 40 and cell["verifier"] == "ck/verifier" and len(cell["accuracy_by_turn"]) == 3


def test_missing_verifier_falls_back_to_pt_and_is_footnoted(tmp_path):
    cfg = config(tmp_path, agents=("instruct",), verifier=None, env_ids=("MuCode-MBPP-v0", "MuCode-HumanEval-v0"))
    out = run_bench(cfg, evaluate_fn=FakeEvaluator())
    bon = [c for c in out["cells"] if c["setting"]["n"] > 1]
    assert len(bon) == 2 and all(c["selector_used"] == "pt" for c in bon)
    table = (tmp_path / "bench" / "table1.md").read_text()
    assert "MuCode-HumanEval-v0" in table.splitlines()[2] and "†" in table
    assert "PT selector replaced" in (tmp_path / "bench" / "report.md").read_text()


def test_missing_checkpoints_fail_before_any_evaluation(tmp_path):
    fake = FakeEvaluator()
    with pytest.raises(MissingCheckpointError, match="--checkpoint"):
        run_bench(config(tmp_path, checkpoints={}), evaluate_fn=fake)
    assert fake.calls == []


def test_train_mode_uses_the_train_function(tmp_path):
    trained = []

    def train_fn(agent, cfg, out_dir):
        trained.append(agent)
        return str(out_dir)

    run_bench(config(tmp_path, agents=("instruct", "rft"), checkpoints={}, train=True), evaluate_fn=FakeEvaluator(),
              train_fn=train_fn)
    assert trained == ["rft"]


def test_llama_cpp_backend_gets_checkpoints_exported_to_gguf(tmp_path):
    pytest.importorskip("gguf")
    from agents.tiny import make_tiny_causal_lm
    from baselines.bench import BenchConfig, resolve_agent

    gen = make_tiny_causal_lm(tmp_path / "gen", arch="llama")
    cfg = BenchConfig(run_dir=str(tmp_path / "b"), base_model=str(gen), finetuned_backend="llama_cpp",
                      checkpoints={"rft": str(gen)}, progress=False)
    spec = resolve_agent("rft", cfg)
    assert spec.backend == "llama_cpp" and spec.model.endswith(".gguf") and Path(spec.model).is_file()
    assert resolve_agent("rft", cfg).model == spec.model  # exported once, then reused
    plain = resolve_agent("rft", BenchConfig(run_dir=str(tmp_path / "b"), checkpoints={"rft": str(gen)}))
    assert plain.model == str(gen) and plain.backend == "transformers"


class EchoReferencePolicy:
    """Answers every chat with the reference solution of the problem its prompt names."""

    name = "echo"

    def __init__(self, solutions):
        self.solutions = solutions

    def generate(self, chats, params):
        from agents.policy import Generation

        out = []
        for chat in chats:
            sol = next(s for key, s in self.solutions.items() if key in chat[0]["content"])
            out.append([Generation(f"```python\n{sol}\n```", 5, 5) for _ in range(params.n)])
        return out


def test_default_evaluator_runs_the_shared_bon_engine_on_real_problems(tmp_path, data_dir, monkeypatch):
    import agents.backends
    from mucode_env.datasets import load_problems

    problems = load_problems("mbpp", "test", data_dir=str(data_dir))[:2]
    sols = {p.prompt[:60]: p.reference_solution for p in problems}
    made = []

    def fake_make_policy(backend, model, **kw):
        made.append((backend, model))
        return EchoReferencePolicy(sols)

    monkeypatch.setattr(agents.backends, "make_policy", fake_make_policy)
    cfg = BenchConfig(run_dir=str(tmp_path / "b"), agents=("instruct",), limit=2, data_dir=str(data_dir),
                      max_turns=2, bon_n=2, max_new_tokens=16, progress=False, n_bootstrap=200)
    out = run_bench(cfg)
    assert made == [("llama_cpp", "qwen2.5-coder-0.5b")]  # one policy for all cells of the agent
    assert [c["accuracy"] for c in out["cells"]] == [1.0, 1.0, 1.0]
    assert all(set(c["per_problem"]) == {p.id for p in problems} for c in out["cells"])
    assert out["cells"][-1]["selector_used"] == "pt"  # no verifier given
    assert all(c["precision"] is None for c in out["cells"])  # this policy does not say


def test_cells_record_the_precision_the_policy_computes_in(tmp_path, data_dir, monkeypatch):
    import agents.backends
    from mucode_env.datasets import load_problems

    problems = load_problems("mbpp", "test", data_dir=str(data_dir))[:1]
    policy = EchoReferencePolicy({p.prompt[:60]: p.reference_solution for p in problems})
    policy.precision = "float32"  # as VLLMPolicy reports its server's dtype
    monkeypatch.setattr(agents.backends, "make_policy", lambda backend, model, **kw: policy)
    cfg = BenchConfig(run_dir=str(tmp_path / "b"), agents=("instruct",), limit=1, data_dir=str(data_dir),
                      max_turns=1, bon_n=1, max_new_tokens=16, progress=False, n_bootstrap=100)
    cells = run_bench(cfg)["cells"]
    assert cells and all(c["precision"] == "float32" for c in cells)
    assert all(json.loads(p.read_text())["precision"] == "float32" for p in (tmp_path / "b").rglob("results/*/*.json"))


def test_with_ray_cells_are_played_on_actors_from_a_policy_recipe(tmp_path, monkeypatch):
    import baselines.instruct
    from agents.backends import PolicySpec
    from agents.ray_episodes import RayEpisodesConfig

    seen = []

    def fake_evaluate_setting(policy, env_id, setting, **kw):
        seen.append((policy, kw["ray"]))
        from agents.bon import BoNResult

        return BoNResult([], {"MBPP/11": 1.0}, [1.0] * setting.max_turns, config={"selector": setting.selector})

    monkeypatch.setattr(baselines.instruct, "evaluate_setting", fake_evaluate_setting)
    ray = RayEpisodesConfig(n_actors=2)
    cfg = BenchConfig(run_dir=str(tmp_path / "b"), agents=("instruct",), max_turns=2, bon_n=2, progress=False,
                      n_bootstrap=200, ray={"n_actors": 2}, backend_kwargs={"llama_cpp": {"n_ctx": 2048}})
    assert cfg.ray == ray
    run_bench(cfg)
    recipe = PolicySpec("llama_cpp", "qwen2.5-coder-0.5b", {"n_ctx": 2048})
    assert seen == [(recipe, ray)] * 3  # no engine built here: every actor builds its own
    assert json.loads((tmp_path / "b" / "config.json").read_text())["ray"]["n_actors"] == 2


def test_rft_starts_from_mucodes_iteration_one_and_runs_live_in_train_dir(tmp_path, monkeypatch):
    from baselines import rft
    from baselines.bench import run as bench_run

    cfg = BenchConfig(run_dir=str(tmp_path / "results"), train_dir=str(tmp_path / "work"), agents=("rft",),
                      train=True, progress=False)
    assert cfg.train_root == tmp_path / "work"
    mucode = tmp_path / "work" / "mucode" / "iter1"
    (mucode / "rollouts").mkdir(parents=True)
    (mucode / "verifier").mkdir()
    for name in ("rollouts.jsonl", "pairs.jsonl", "rollouts.done", "verifier.done"):
        (mucode / name).write_text("{}")
    seen = []
    monkeypatch.setattr(rft.RFTTrainer, "train", lambda self: seen.append(sorted(
        p.name for p in (Path(self.config.run_dir) / "iter1").iterdir())))
    assert bench_run._train_agent("rft", cfg, cfg.train_root / "rft") == str(tmp_path / "work" / "rft")
    assert seen == [["pairs.jsonl", "rollouts", "rollouts.done", "rollouts.jsonl", "verifier", "verifier.done"]]
    seen.clear()
    unshared = BenchConfig(run_dir=str(tmp_path / "r2"), train_dir=str(tmp_path / "w2"), agents=("rft",),
                           train=True, share_rollouts=True, progress=False)
    monkeypatch.setattr(rft.RFTTrainer, "train", lambda self: seen.append((Path(self.config.run_dir) / "iter1").exists()))
    bench_run._train_agent("rft", unshared, unshared.train_root / "rft")
    assert seen == [False]  # no µCODE run in that train_dir: nothing to share


def test_a_killed_bench_resumes_its_unfinished_cell_with_the_same_result(tmp_path, data_dir, monkeypatch):
    import agents.backends
    from agents.episode_store import load_trajectories
    from agents.scripted import SeededScriptedPolicy
    from mucode_env.datasets import load_problems

    problems = load_problems("mbpp", "test", data_dir=str(data_dir))[:6]

    class DiesAfter(SeededScriptedPolicy):
        """Raises on its ``calls``-th generate call, as a killed run stops; counts its calls."""

        def __init__(self, calls):
            super().__init__(problems)
            self.calls, self.made = calls, 0

        def generate(self, chats, params, seeds=None):
            if self.made == self.calls:
                raise KeyboardInterrupt
            self.made += 1
            return super().generate(chats, params, seeds=seeds)

    def bench(run_dir, calls):
        policy = DiesAfter(calls)
        monkeypatch.setattr(agents.backends, "make_policy", lambda backend, model, **kw: policy)
        cfg = BenchConfig(run_dir=str(run_dir), agents=("instruct",), limit=6, data_dir=str(data_dir), max_turns=3,
                          bon_n=3, max_new_tokens=16, progress=False, n_bootstrap=200, max_live_episodes=2)
        return policy, run_bench(cfg)

    policy, whole = bench(tmp_path / "whole", -1)
    bon_calls = whole["cells"][-1]["stats"]["generation_calls"]
    with pytest.raises(KeyboardInterrupt):  # killed inside the last cell (BoN), after the first two
        bench(tmp_path / "killed", policy.made - bon_calls // 2)
    cfg = BenchConfig(run_dir=str(tmp_path / "killed"), agents=("instruct",))
    assert len(sorted((tmp_path / "killed" / "results").rglob("*.json"))) == 2
    partial = cfg.episodes_root / "MuCode-MBPP-v0" / "instruct__T3_N3_ptlv"
    saved = load_trajectories(partial / "shards")
    assert 0 < len(saved) < 6
    _, resumed = bench(tmp_path / "killed", -1)
    strip = lambda c: {k: v for k, v in c.items() if k not in ("seconds", "stats")}
    assert [strip(c) for c in resumed["cells"]] == [strip(c) for c in whole["cells"]]
    assert resumed["cells"][-1]["stats"]["resumed_episodes"] == len(saved)


def test_the_single_turn_greedy_cell_is_read_from_the_multi_turn_cells_first_turns(tmp_path, data_dir, monkeypatch):
    import shutil

    import agents.backends
    from agents.scripted import SeededScriptedPolicy
    from baselines.instruct import EvalSetting, evaluate_setting
    from mucode_env.datasets import load_problems

    problems = load_problems("mbpp", "test", data_dir=str(data_dir))[:8]
    policy = SeededScriptedPolicy(problems)
    calls = []
    generate = policy.generate
    policy.generate = lambda chats, params, seeds=None: calls.append(len(chats)) or generate(chats, params, seeds)
    monkeypatch.setattr(agents.backends, "make_policy", lambda backend, model, **kw: policy)
    cfg = BenchConfig(run_dir=str(tmp_path / "b"), agents=("instruct",), limit=8, data_dir=str(data_dir), max_turns=3,
                      bon_n=1, max_new_tokens=16, progress=False, n_bootstrap=200)
    single, multi = run_bench(cfg)["cells"]
    assert single["setting"]["name"] == "single-turn" and multi["setting"]["name"] == "multi-turn"
    assert single["stats"]["derived_from"] == "multi-turn"
    assert sum(calls) == multi["stats"]["generations"]  # nothing generated for the single-turn cell
    direct = evaluate_setting(SeededScriptedPolicy(problems), "MuCode-MBPP-v0", EvalSetting("single-turn", 1, 1),
                              problem_ids=[p.id for p in problems], split="test", data_dir=str(data_dir),
                              progress=False)
    assert single["per_problem"] == direct.per_problem  # what generating it would have given
    assert single["accuracy_by_turn"] == [multi["accuracy_by_turn"][0]]
    assert 0 < single["accuracy"] < multi["accuracy"]  # turns 2-3 fixed some
    # without the multi-turn cell's saved episodes (a cell made before they were kept) it is generated
    shutil.rmtree(cfg.episodes_root)
    (tmp_path / "b" / "results" / "MuCode-MBPP-v0" / "instruct__T1_N1_greedy.json").unlink()
    calls.clear()
    again = run_bench(cfg)["cells"][0]
    assert "derived_from" not in again["stats"] and sum(calls) == len(problems)
    assert again["per_problem"] == single["per_problem"]
