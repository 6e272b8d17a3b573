"""Executing untrusted, model-written programs: a pool of jailed fork servers.

A leaf: it runs :class:`Job` objects (a program and its test cases) and judges them on the host;
it knows nothing of problems, prompts or feedback (those live in :mod:`mucode_env.problem_jobs`
and :mod:`mucode_env.feedback`).

See ``docs/ARCHITECTURE.md`` and the module docstrings of ``jail`` (isolation tiers), ``zygote``
(what happens in the child before the program runs), ``checking`` (host-side verdicts) and
``ray_pool`` (the same contract over a Ray cluster; ``Executor`` is what environments accept).
"""

from mucode_env.sandbox.executor import Executor
from mucode_env.sandbox.limits import SandboxLimits
from mucode_env.sandbox.pool import Job, Sandbox, SandboxConfig
from mucode_env.sandbox.ray_pool import RaySandbox, RaySandboxConfig
from mucode_env.sandbox.results import ExecResult, ProgramRun, Status, TestOutcome

__all__ = [
    "ExecResult", "Executor", "Job", "ProgramRun", "RaySandbox", "RaySandboxConfig", "Sandbox", "SandboxConfig",
    "SandboxLimits", "Status", "TestOutcome",
]
