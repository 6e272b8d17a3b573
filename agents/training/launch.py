"""Run a training stage in this process or as a multi-process job (accelerate, DeepSpeed, torchrun).

The µCODE loop stays one process: rollouts go to an inference server (SGLang) or a local backend,
and the expert and relabeling are cheap. Only the two training stages need every GPU, so they
are launched as their own job: the stage's inputs are written to a job directory, the launcher
command runs ``python -m agents.training.launch JOB_DIR`` on every process, and the loop waits for the
output directory, which only the main process writes (:mod:`agents.training.distributed`).

>>> launch = LaunchConfig.accelerate("deepspeed_zero3", num_processes=8)
>>> launch.command[:2]
('accelerate', 'launch')
>>> run_stage(SFT_STAGE, "meta-llama/Llama-3.2-1B-Instruct", rows, SFTRunConfig(), "runs/x/generator", launch)  # doctest: +SKIP

A stage names its training function by import path (:class:`Stage`), so this module knows no
algorithm: µCODE's verifier stage is defined next to the verifier.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agents.backends.watchdog import guarded
from mucode_env.atomic import write_json_atomic, write_jsonl_atomic

__all__ = ["LaunchConfig", "LaunchError", "SHIPPED_CONFIGS", "Stage", "run_stage"]

JOB_FILE, DATA_FILE, LOG_FILE = "job.json", "data.jsonl", "launch.log"
_LOG_TAIL = 4000  # characters of the job's log quoted in the error
# accelerate configs that ship with the package, by name
SHIPPED_CONFIGS = {p.stem: str(p) for p in sorted((Path(__file__).parent / "accelerate_configs").glob("*.yaml"))}


class LaunchError(RuntimeError):
    """A launched training job exited with an error (the message quotes its log)."""


@dataclass(frozen=True)
class Stage:
    """A training stage that can run here or as a launched job.

    Attributes:
        name: for messages and logs (``"sft"``, ``"verifier"``).
        target: ``"module:function"`` of ``function(base_model, rows, config, output_dir) -> Path``,
            where ``rows`` are the JSON rows of the data (``to_row()`` of records) and ``config``
            the ``asdict`` of the stage's configuration; every process of a launched job calls it.
    """

    name: str
    target: str

    def __post_init__(self) -> None:
        module, _, function = self.target.partition(":")
        if not module or not function:
            raise ValueError(f"Stage.target must be 'module:function', got {self.target!r}")

    def function(self) -> Any:
        module, _, function = self.target.partition(":")
        return getattr(importlib.import_module(module), function)


@dataclass(frozen=True)
class LaunchConfig:
    """How training stages run.

    Attributes:
        command: the launcher prefix, e.g. ``("accelerate", "launch", "--config_file", "zero3.yaml")``
            or ``("torchrun", "--nproc_per_node", "8")``; ``-m agents.training.launch JOB_DIR`` is appended.
            Empty (the default): train in this process.
        env: extra environment variables for the job.
        isolated: without a launcher, still train in a child Python process
            (``python -m agents.training.launch JOB_DIR``) rather than in this one. The stage's
            model, optimizer state and allocator arenas then go back to the system when it ends,
            so a generation server started next (vLLM's KV cache is sized from free memory) finds
            them free; it costs the child's start (~10 s of imports). The cpu and paper presets
            set it.
    """

    command: tuple[str, ...] = ()
    env: dict[str, str] | None = None
    isolated: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.command, str):
            raise TypeError("command must be a sequence of arguments, e.g. ['accelerate', 'launch'], not a string")
        object.__setattr__(self, "command", tuple(str(c) for c in self.command))

    @property
    def distributed(self) -> bool:
        return bool(self.command)

    @property
    def in_process(self) -> bool:
        """Whether stages run in the calling process (no launcher, not isolated)."""
        return not self.command and not self.isolated

    @classmethod
    def accelerate(cls, config_file: str | os.PathLike, num_processes: int | None = None) -> LaunchConfig:
        """``accelerate launch --config_file FILE [--num_processes N]``.

        ``config_file`` is a path or the name of a shipped config (:data:`SHIPPED_CONFIGS`):
        ``"multi_gpu"`` (DDP, bf16) or ``"deepspeed_zero3"`` (ZeRO-3, 16-bit weights on save).
        """
        if os.fspath(config_file) in SHIPPED_CONFIGS:
            config_file = SHIPPED_CONFIGS[os.fspath(config_file)]
        elif not Path(config_file).is_file():
            raise FileNotFoundError(f"accelerate config {os.fspath(config_file)!r} does not exist; give a file or "
                                    f"one of the shipped configs {sorted(SHIPPED_CONFIGS)}")
        cmd = ["accelerate", "launch", "--config_file", os.fspath(config_file)]
        if num_processes is not None:
            cmd += ["--num_processes", str(num_processes)]
        return cls(tuple(cmd))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LaunchConfig:
        unknown = set(d) - {"command", "env", "isolated"}
        if unknown:
            raise ValueError(f"unknown LaunchConfig keys {sorted(unknown)}; allowed: ['command', 'env', 'isolated']")
        return cls(**d)


def run_stage(stage: Stage, base_model: str, data: Sequence[Any], config: Any, output_dir: str | os.PathLike,
              launch: LaunchConfig | None = None) -> Path:
    """Train ``stage`` on ``data`` (records with ``to_row()``, or JSON rows) into ``output_dir``.

    In this process when ``launch`` is None or :attr:`LaunchConfig.in_process`; otherwise as a
    job (the launcher's, or one child process when only ``isolated``) whose inputs and log live
    in ``<output_dir>.job/``. Either way the stage's target function receives
    the same JSON rows and configuration dict.

    Raises:
        TypeError: ``stage`` is not a :class:`Stage`. LaunchError: the job failed or wrote no output.
    """
    if not isinstance(stage, Stage):
        raise TypeError(f"stage must be a Stage (e.g. agents.training.sft.SFT_STAGE), got {stage!r}")
    rows = [d.to_row() if hasattr(d, "to_row") else d for d in data]
    config_dict = json.loads(json.dumps(asdict(config), default=str))
    if launch is None or launch.in_process:
        return Path(stage.function()(base_model, rows, config_dict, str(output_dir)))
    out = Path(output_dir)
    job = out.with_name(f"{out.name}.job")
    write_jsonl_atomic(job / DATA_FILE, rows, default=str)
    write_json_atomic(job / JOB_FILE, {"stage": stage.name, "target": stage.target, "base_model": base_model,
                                       "output_dir": str(out.resolve()), "config": config_dict}, default=str)
    env = {**os.environ, **(launch.env or {})}
    root = str(Path(__file__).resolve().parents[2])  # this checkout, importable by every process
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    cmd = [*(launch.command or (sys.executable,)), "-m", "agents.training.launch", str(job.resolve())]
    # under the servers' watchdog: if this process is killed outright (SIGKILL, an unhandled
    # SIGTERM) and cannot kill the job's group itself, the watchdog does, instead of leaving a
    # trainer of several GiB running with no one to read its result
    cmd = guarded(cmd)
    started = time.time()
    with (job / LOG_FILE).open("wb") as log:
        # the job's output goes to its log and through to our stderr (its progress bars)
        # (own process group: an interrupted trainer kills the launcher and all its workers)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        try:
            for chunk in iter(lambda: proc.stdout.read1(65536), b""):  # type: ignore[union-attr]
                log.write(chunk)
                log.flush()
                _echo(chunk)
            rc = proc.wait()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    stats = out / "train_stats.json"
    if rc != 0 or not stats.is_file() or stats.stat().st_mtime < started - 1:
        tail = (job / LOG_FILE).read_text(errors="replace")[-_LOG_TAIL:]
        why = f"exited with status {rc}" if rc != 0 else f"exited cleanly but wrote no {out}"
        raise LaunchError(f"training job {' '.join(cmd)!r} {why}; log {job / LOG_FILE}:\n{tail}")
    return out


def _echo(chunk: bytes) -> None:
    stream = getattr(sys.stderr, "buffer", None)
    if stream is not None:
        stream.write(chunk)
    else:
        sys.stderr.write(chunk.decode(errors="replace"))
    sys.stderr.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of every process of a launched job: ``python -m agents.training.launch JOB_DIR``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m agents.training.launch JOB_DIR", file=sys.stderr)
        return 2
    job = Path(args[0])
    spec = json.loads((job / JOB_FILE).read_text())
    with (job / DATA_FILE).open() as f:
        rows = [json.loads(line) for line in f if line.strip()]
    Stage(spec["stage"], spec["target"]).function()(spec["base_model"], rows, spec["config"], spec["output_dir"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
