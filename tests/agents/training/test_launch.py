"""agents.training.launch / agents.training.distributed: training stages as multi-process jobs (torchrun on CPU, gloo).

The same code path runs under ``accelerate launch`` with DeepSpeed ZeRO-3 on GPUs; here two CPU
processes check the contract that does not depend on the hardware: one process writes the output
(atomically, merged LoRA), the effective batch is kept, and a failing job names its log.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml

from agents.training.distributed import accumulation_steps
from agents.training.launch import SHIPPED_CONFIGS, LaunchConfig, LaunchError, Stage, run_stage
from agents.training.sft import SFT_STAGE, SFTRunConfig, read_train_stats

torch.set_num_threads(1)

TARGET = "```python\ndef add(a, b):\n    return a + b\n```"
EXAMPLES = [{"prompt": [{"role": "user", "content": f"Write add #{i}"}],
             "completion": [{"role": "assistant", "content": TARGET}]} for i in range(4)]
FAST = dict(learning_rate=5e-3, epochs=2, batch_size=4, per_device_batch_size=1, max_length=128, progress=False,
            warmup_ratio=0.0, lr_scheduler_type="constant")
needs_torchrun = pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not on PATH")


def test_accumulation_keeps_the_global_batch(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert accumulation_steps(32, 4) == 2 and accumulation_steps(4, 4) == 1 and accumulation_steps(32, 4, 7) == 7
    monkeypatch.delenv("WORLD_SIZE")
    assert accumulation_steps(32, 4) == 8


def test_launch_config_validation_and_accelerate_command():
    cfg = LaunchConfig.accelerate("deepspeed_zero3", num_processes=8)
    assert cfg.command == ("accelerate", "launch", "--config_file", SHIPPED_CONFIGS["deepspeed_zero3"],
                           "--num_processes", "8") and cfg.distributed
    assert Path(cfg.command[3]).is_file()
    with pytest.raises(FileNotFoundError, match="shipped configs"):
        LaunchConfig.accelerate("zero9.yaml")
    assert not LaunchConfig().distributed and LaunchConfig().in_process
    assert not LaunchConfig(isolated=True).distributed and not LaunchConfig(isolated=True).in_process
    assert LaunchConfig.from_dict({"isolated": True}).isolated
    assert LaunchConfig.from_dict({"command": ["torchrun"]}).command == ("torchrun",)
    with pytest.raises(TypeError, match="not a string"):
        LaunchConfig("accelerate launch")
    with pytest.raises(ValueError, match="unknown LaunchConfig"):
        LaunchConfig.from_dict({"cmd": []})
    with pytest.raises(TypeError, match="Stage"):
        run_stage("sft", "m", [], None, "out")
    with pytest.raises(ValueError, match="module:function"):
        Stage("sft", "agents.training.sft")


def test_shipped_accelerate_configs_are_valid():
    """The shipped configs load with accelerate's own config class."""
    from accelerate.commands.config.config_args import ClusterConfig

    files = sorted(Path(p) for p in SHIPPED_CONFIGS.values())
    assert {f.name for f in files} >= {"multi_gpu.yaml", "deepspeed_zero3.yaml"}
    for f in files:
        cfg = ClusterConfig.from_yaml_file(str(f))
        assert cfg.num_processes >= 2 and cfg.mixed_precision == "bf16"
    z3 = yaml.safe_load(Path(SHIPPED_CONFIGS["deepspeed_zero3"]).read_text())
    assert z3["distributed_type"] == "DEEPSPEED" and z3["deepspeed_config"]["zero_stage"] == 3
    # only gathered 16-bit weights can be saved as a plain checkpoint by the main process
    assert z3["deepspeed_config"]["zero3_save_16bit_model"] is True


@needs_torchrun
@pytest.mark.parametrize("lora", [False, True])
def test_two_process_sft_job_writes_one_merged_checkpoint(tiny_model_dir, tmp_path, lora):
    launch = LaunchConfig(("torchrun", "--nproc_per_node", "2", "--master_port", str(29500 + lora)),
                          env={"OMP_NUM_THREADS": "1"})
    out = run_stage(SFT_STAGE, str(tiny_model_dir), EXAMPLES, SFTRunConfig(lora=lora, lora_r=4, **FAST), tmp_path / "gen", launch)
    stats = read_train_stats(out)
    # 4 examples, global batch 4 over 2 processes x 1 per device: 1 optimizer step per epoch
    assert stats["world_size"] == 2 and stats["global_steps"] == 2 and stats["n_examples"] == 4
    assert (out / "config.json").is_file() and not (out / "adapter_config.json").exists()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".gen")]
    assert leftovers == []  # no rank's scratch or half-written directory is left behind
    from transformers import AutoModelForCausalLM

    before = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    after = AutoModelForCausalLM.from_pretrained(out).state_dict()
    assert set(before) == set(after)
    assert any(not torch.equal(before[k], after[k]) for k in before)  # trained, and merged when LoRA
    job = json.loads((tmp_path / "gen.job" / "job.json").read_text())
    assert job["stage"] == "sft" and job["config"]["lora"] is lora


def test_an_isolated_stage_trains_in_a_child_process(tiny_model_dir, tmp_path):
    # one child Python process, no launcher: the stage's memory leaves with it (issue 10: the
    # validation server found the fine-tuning's memory still held by the trainer's process)
    out = run_stage(SFT_STAGE, str(tiny_model_dir), EXAMPLES, SFTRunConfig(**FAST), tmp_path / "gen",
                    LaunchConfig(isolated=True))
    job = tmp_path / "gen.job"
    assert (job / "job.json").is_file() and (job / "launch.log").is_file()
    stats = read_train_stats(out)
    assert stats["world_size"] == 1 and stats["n_examples"] == 4 and (out / "config.json").is_file()
    # in process (the default): no job directory
    run_stage(SFT_STAGE, str(tiny_model_dir), EXAMPLES, SFTRunConfig(**FAST), tmp_path / "gen2", LaunchConfig())
    assert (tmp_path / "gen2" / "config.json").is_file() and not (tmp_path / "gen2.job").exists()


@pytest.mark.parametrize("how", ["SIGINT", "SIGKILL"])  # Ctrl-C: the trainer kills the job; SIGKILL: the watchdog does
def test_an_interrupted_trainer_leaves_no_training_job_behind(tiny_model_dir, tmp_path, how):
    import os
    import signal
    import subprocess
    import time

    # the "launcher" starts a worker and waits; the trainer is interrupted while it runs
    job = ("import subprocess, time; w = subprocess.Popen(['sleep', '300']); "
           "print('WORKER', w.pid, flush=True); time.sleep(300)")
    # SIGINT restored first: a test run with SIGINT ignored (a shell's background job) passes that on
    driver = (f"import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
              f"from agents.training.launch import LaunchConfig, run_stage; "
              f"from agents.training.sft import SFT_STAGE, SFTRunConfig; "
              f"run_stage(SFT_STAGE, {str(tiny_model_dir)!r}, [], SFTRunConfig(), {str(tmp_path / 'gen')!r}, "
              f"LaunchConfig((sys.executable, '-c', {job!r})))")
    proc = subprocess.Popen([sys.executable, "-c", driver], stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[3])
    line = ""
    while not line.startswith("WORKER"):
        line = proc.stderr.readline()
        assert line or proc.poll() is None, "the driver exited before its job started"
    worker = int(line.split()[1])
    proc.send_signal(getattr(signal, how))
    assert proc.wait(timeout=30) != 0
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(worker, signal.SIGKILL)
        pytest.fail(f"the job's worker outlived the trainer ({how})")


def test_a_failing_job_names_its_log(tiny_model_dir, tmp_path):
    launch = LaunchConfig((sys.executable, "-c", "import sys; print('boom from the job'); sys.exit(3)"))
    with pytest.raises(LaunchError, match=r"(?s)exited with status 3.*boom from the job"):
        run_stage(SFT_STAGE, str(tiny_model_dir), EXAMPLES, SFTRunConfig(**FAST), tmp_path / "gen", launch)
    assert not (tmp_path / "gen").exists()
    # a job that exits 0 without writing the output is an error too
    launch = LaunchConfig((sys.executable, "-c", "pass"))
    with pytest.raises(LaunchError, match="wrote no"):
        run_stage(SFT_STAGE, str(tiny_model_dir), EXAMPLES, SFTRunConfig(**FAST), tmp_path / "gen", launch)


@needs_torchrun
def test_two_process_verifier_job_learns_and_saves_once(tiny_model_dir, tmp_path):
    from agents.records import Trajectory, TurnRecord
    from agents.mucode.verifier import VERIFIER_STAGE, Verifier, VerifierConfig

    good, bad = TARGET, TARGET.replace("a + b", "a - b")
    data = [Trajectory(f"P{k}", "MuCode-MBPP-v0", f"Write a function add ({k})",
                       [TurnRecord(r, r, "" if ok else "AssertionError", ok, ok, "passed" if ok else "wrong_answer")],
                       sample_index=i)
            for k in range(4) for i, (r, ok) in enumerate([(good, True), (bad, False)] * 2)]
    cfg = VerifierConfig(loss="bt", pairs_per_prompt=8, l2_coef=1e-3, learning_rate=3e-3, epochs=3, batch_size=8,
                         per_device_batch_size=4, max_length=256, progress=False, warmup_ratio=0.0,
                         lr_scheduler_type="constant")
    launch = LaunchConfig(("torchrun", "--nproc_per_node", "2", "--master_port", "29507"), env={"OMP_NUM_THREADS": "1"})
    path = run_stage(VERIFIER_STAGE, str(tiny_model_dir), data, cfg, tmp_path / "v", launch)
    stats = read_train_stats(path)
    assert stats["trained"] and stats["world_size"] == 2
    # 32 pairs, global batch 8 = 2 processes x 4: 4 optimizer steps per epoch
    assert stats["global_steps"] == 12
    hi, lo = Verifier.load(path).score(["Write a function add (9)"] * 2, [good, bad])
    assert hi > lo
