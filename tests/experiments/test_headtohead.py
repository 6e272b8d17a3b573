"""experiments/headtohead.py rebuilds its tables, differences against RFT, turn gains, µCODE's
diagnostics and iteration curve from committed results alone."""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from baselines.instruct import paper_settings
from mucode_env.metrics import wilson_interval

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "headtohead.py"


@pytest.fixture(scope="module")
def h2h():
    spec = importlib.util.spec_from_file_location("headtohead", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["headtohead"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def cell(agent: str, label: str, env: str, setting, per_problem: dict[str, float], by_turn: list[float]) -> dict:
    values = list(per_problem.values())
    return {"agent": agent, "label": label, "env_id": env, "setting": asdict(setting), "selector_used":
            setting.selector if setting.n > 1 else "greedy", "n_problems": len(values),
            "accuracy": sum(values) / len(values), "ci95": list(wilson_interval(sum(values), len(values))),
            "accuracy_by_turn": by_turn, "per_problem": per_problem}


def test_tables_come_from_committed_cells_and_diagnostics(h2h, tmp_path):
    config = h2h.HeadToHeadConfig(results_dir=str(tmp_path / "results"), work_dir=str(tmp_path / "work"))
    single, greedy, bon = paper_settings(3, 5, "pt+lv")
    env = "MuCode-MBPP-v0"
    ids = [str(i) for i in range(10)]
    outcomes = {"instruct": 3, "rft": 5, "mucode": 7}  # problems solved, the first k
    labels = {"instruct": "Instruct", "rft": "Multi-turn RFT", "mucode": "µCODE"}
    for agent, k in outcomes.items():
        per = {i: float(int(i) < k) for i in ids}
        c = cell(agent, labels[agent], env, greedy, per, [(k - 2) / 10, (k - 1) / 10, k / 10])
        path = tmp_path / "results" / "results" / env / f"{agent}__greedy.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(c))
    diag = {"run_dir": "x", "iterations": [
        {"iteration": 1, "rollout_accuracy_by_turn": [0.2, 0.3, 0.35], "relabeled_examples": 40,
         "validation_accuracy": 0.4, "expert_vs_final": {"share_differs": 0.5, "failed_final_fixed": 6},
         "verifier_heldout": {"accuracy": 0.71, "pairs": 120, "problems": 9, "on": "iter2 rollouts"}},
        {"iteration": 2, "rollout_accuracy_by_turn": [0.3, 0.4, 0.45], "relabeled_examples": 80,
         "validation_accuracy": 0.5, "expert_vs_final": {"share_differs": 0.4, "failed_final_fixed": 5}}]}
    (tmp_path / "results" / "diagnostics").mkdir()
    (tmp_path / "results" / "diagnostics" / "mucode.json").write_text(json.dumps(diag))

    h2h.tables(config)

    analysis = (tmp_path / "results" / "analysis.md").read_text()
    assert "| µCODE | multi-turn | MuCode-MBPP-v0 | +20.0 |" in analysis  # 7 vs 5 solved, paired
    assert "| Instruct | multi-turn | MuCode-MBPP-v0 | -20.0 |" in analysis
    assert "| µCODE | multi-turn | MuCode-MBPP-v0 | 10 | 50.0 | +10.0 | +10.0 |" in analysis  # turn gains
    assert "| 1 | 20.0 / 30.0 / 35.0 | 71.0 (120, iter2 rollouts) | 50.0 | 6 | 40 | 40.0 |" in analysis
    assert "– (no later rollouts)" in analysis
    assert (tmp_path / "results" / "mucode_iterations.png").stat().st_size > 1000
    assert "µCODE" in (tmp_path / "results" / "table1.md").read_text()


def test_tables_warn_when_parts_were_generated_in_different_precisions(h2h, tmp_path):
    config = h2h.HeadToHeadConfig(results_dir=str(tmp_path / "results"), work_dir=str(tmp_path / "work"))
    _, greedy, _ = paper_settings(3, 5, "pt+lv")
    env = "MuCode-MBPP-v0"
    per = {str(i): float(i < 4) for i in range(10)}
    for agent, label, precision in (("instruct", "Instruct", "float32"), ("rft", "Multi-turn RFT", "bfloat16"),
                                    ("mucode", "µCODE", "bfloat16")):
        c = dict(cell(agent, label, env, greedy, per, [0.4, 0.4, 0.4]), precision=precision)
        path = tmp_path / "results" / "results" / env / f"{agent}__greedy.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(c))
    h2h.tables(config)
    analysis = (tmp_path / "results" / "analysis.md").read_text()
    assert analysis.startswith("## Precision") and "different precisions" in analysis
    assert "- float32: instruct multi-turn MuCode-MBPP-v0" in analysis
    assert "- bfloat16: mucode multi-turn MuCode-MBPP-v0, rft multi-turn MuCode-MBPP-v0" in analysis
    assert h2h.precision_check([dict(c, precision="float32") for c in h2h.cells(config.results_dir)]) is None
    assert "| MuCode-MBPP-v0 | 500 | 0.150 | prior |" in analysis  # identical outcomes measure no discordance


def test_the_budget_uses_the_committed_cells_rates_and_scales_with_the_sizes(h2h, tmp_path):
    small = h2h.HeadToHeadConfig(results_dir=str(tmp_path / "results"), work_dir=str(tmp_path / "w"), train_problems=40)
    large = h2h.HeadToHeadConfig(results_dir=str(tmp_path / "results"), work_dir=str(tmp_path / "w"))
    assert h2h.measured_rates(small) == h2h.Rates()  # nothing committed yet: the recorded rates
    _, greedy, _ = paper_settings(3, 5, "pt+lv")
    c = cell("instruct", "Instruct", "MuCode-MBPP-v0", greedy, {"a": 1.0, "b": 0.0}, [0.5, 0.5, 0.5])
    c.update(seconds=100.0, stats={"completion_tokens": 5000, "episodes": 20})
    path = tmp_path / "results" / "results" / "MuCode-MBPP-v0" / "instruct__T3_N1_greedy.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(c))
    rates = h2h.measured_rates(small)
    assert (rates.generation_tokens_per_s, rates.tokens_per_episode) == (50.0, 250.0)
    assert "1 committed greedy cells" in rates.source
    assert rates.turns_per_episode == h2h.Rates().turns_per_episode  # the cell does not count its calls
    c["stats"]["generation_calls"] = 45
    path.write_text(json.dumps(c))
    assert h2h.measured_rates(small).turns_per_episode == 2.25

    def hours(config):
        rows = [line.split("|") for line in h2h.budget(config).splitlines() if line.startswith("| ")]
        return {r[1].strip(): r[6].strip() for r in rows[1:]}

    h_small, h_large = hours(small), hours(large)
    assert h_small["base"] == h_large["base"]  # evaluation does not depend on the training sizes
    assert float(h_small["mucode"]) < float(h_large["mucode"])
    # the base part: all 664 test problems, greedy and BoN N=5, at 250 tokens an episode and 50 tokens/s,
    # plus the verifier's scores of the BoN candidates that can change a pick
    r = h2h.measured_rates(small)  # 2.25 turns an episode, from the cell
    scoring = 664 * 2.25 * 5 * r.scored_share / r.verifier_programs_per_s
    assert float(h_small["base"]) == pytest.approx((664 * 250 * 6 / 50 + scoring) / 3600, abs=0.05)
    assert h_small["ppo"].endswith("+ training")


def test_every_invocation_is_logged_with_its_status_machine_and_sizes(h2h, tmp_path, monkeypatch):
    config = h2h.HeadToHeadConfig(results_dir=str(tmp_path / "results"), work_dir=str(tmp_path / "w"))
    calls = []

    def part(name, cfg, *, bon):
        calls.append(name)
        if name == "rft":
            raise KeyboardInterrupt  # stopped by hand mid-part

    monkeypatch.setattr(h2h, "_run_part", part)
    h2h.run_part("base", config, bon=False)
    with pytest.raises(KeyboardInterrupt):
        h2h.run_part("rft", config, bon=False)
    log = [json.loads(line) for line in (tmp_path / "results" / "runs.jsonl").read_text().splitlines()]
    assert calls == ["base", "rft"]
    assert [(r["part"], r["status"]) for r in log] == [("base", "finished"), ("rft", "stopped")]
    assert all(r["config"]["train_problems"] == 120 and r["cpus"] >= 1 and r["cpu"] and r["hours"] >= 0 for r in log)


def test_our_rows_sit_beside_the_papers_numbers_for_its_own_models(h2h):
    _, greedy, bon = paper_settings(3, 5, "pt+lv")
    found = [cell("mucode", "µCODE", "MuCode-MBPP-v0", bon, {"a": 1.0, "b": 0.0, "c": 1.0, "d": 1.0}, [0.5, 0.75]),
             cell("ppo", "PPO (RLEF)", "MuCode-HumanEval-v0", greedy, {"a": 0.0, "b": 1.0}, [0.5, 0.5])]
    table = h2h.paper_beside_ours(found).splitlines()
    assert "paper, Llama-3.2-1B-Instruct, MBPP" in table[0] and "ours, Qwen2.5-Coder-0.5B, MBPP" in table[0]
    row = {line.split("|")[1].strip() + " " + line.split("|")[2].strip(): line for line in table[2:]}
    # ours (MBPP 75.0 on 4 problems, HumanEval not run), then the paper's 1B, 8B and Qwen-1.5B pairs
    assert row["µCODE multi-turn+BoN"] == ("| µCODE | multi-turn+BoN | 75.0 (n=4) | not run yet | 51.1 | 41.5 | 70.6 "
                                          "| 63.8 | 63.1 | 74.0 |")
    assert row["PPO (RLEF) multi-turn"].endswith("| not run yet | 50.0 (n=2) | – | – | – | – | – | – |")  # not in the paper
    assert row["Instruct single-turn"].count("not run yet") == 2 and len(table) == 2 + len(h2h.PAPER_TABLE1) + 1


def test_sigterm_stops_a_part_like_ctrl_c_and_the_stop_is_logged(h2h, tmp_path, monkeypatch):
    import os
    import signal

    config = h2h.HeadToHeadConfig(results_dir=str(tmp_path / "results"), work_dir=str(tmp_path / "w"))
    monkeypatch.setattr(h2h, "_run_part", lambda name, cfg, *, bon: os.kill(os.getpid(), signal.SIGTERM))
    previous = signal.getsignal(signal.SIGTERM)
    try:
        h2h.stop_on_term()
        with pytest.raises(KeyboardInterrupt):
            h2h.run_part("mucode", config, bon=False)
    finally:
        signal.signal(signal.SIGTERM, previous)
    log = [json.loads(line) for line in (tmp_path / "results" / "runs.jsonl").read_text().splitlines()]
    assert [(r["part"], r["status"]) for r in log] == [("mucode", "stopped")]


def test_a_part_whose_work_directory_was_lost_is_refused_unless_restarted(h2h, tmp_path, monkeypatch):
    config = h2h.HeadToHeadConfig(results_dir=str(tmp_path / "results"), work_dir=str(tmp_path / "w"))
    other = h2h.HeadToHeadConfig(results_dir=config.results_dir, work_dir=str(tmp_path / "elsewhere"))
    calls = []

    def part(name, cfg, *, bon):
        calls.append(name)
        (Path(cfg.work_dir) / "train" / name).mkdir(parents=True, exist_ok=True)  # what a training part leaves
        raise KeyboardInterrupt  # stopped by hand mid-part

    monkeypatch.setattr(h2h, "_run_part", part)
    for _ in range(2):
        with pytest.raises(KeyboardInterrupt):
            h2h.run_part("mucode", config, bon=False)  # its directory is there: it resumes
    assert calls == ["mucode", "mucode"] and h2h.lost_progress(config, "mucode") == 0.0
    (tmp_path / "w" / "train" / "mucode").rmdir()  # a new machine: the committed log survives, the directory not
    with (tmp_path / "results" / "runs.jsonl").open("a") as f:
        f.write('{"part": "mucode", "hours": 3.0, "status": "stopped", "config": {"work_dir": "%s"}}\n' % config.work_dir)
        f.write('{"part": "mucode", "hours": 9.0, "status": "stopped", "config": {"work_dir": "%s"}}\n' % other.work_dir)
        f.write('{"part": "rft", "hours": 9.0, "status": "stopped", "config": {"work_dir": "%s"}}\n' % config.work_dir)
        f.write('{"part": "mucode", "hours"')  # a torn last line
    assert 3.0 <= h2h.lost_progress(config, "mucode") < 3.1  # the two logged runs took ~0 h
    with pytest.raises(SystemExit, match=r"3\.0 h of stopped runs of part 'mucode'.*--restart"):
        h2h.run_part("mucode", config, bon=False)
    assert calls == ["mucode", "mucode"]  # refused before anything ran
    assert h2h.lost_progress(other, "base") == 0.0  # nothing logged for it
    with pytest.raises(KeyboardInterrupt):
        h2h.run_part("mucode", config, bon=False, restart=True)
    assert calls == ["mucode", "mucode", "mucode"] and h2h.lost_progress(config, "mucode") == 0.0


def test_a_finished_part_leaves_nothing_to_lose(h2h, tmp_path):
    config = h2h.HeadToHeadConfig(results_dir=str(tmp_path / "results"), work_dir=str(tmp_path / "w"))
    (tmp_path / "results").mkdir()
    lines = [{"part": "rft", "hours": 2.0, "status": "stopped"}, {"part": "rft", "hours": 1.0, "status": "finished"}]
    (tmp_path / "results" / "runs.jsonl").write_text(
        "".join(json.dumps({**r, "config": {"work_dir": config.work_dir}}) + "\n" for r in lines))
    assert h2h.lost_progress(config, "rft") == 0.0
