"""Executing untrusted, model-written programs: a pool of jailed fork servers.

See ``docs/ARCHITECTURE.md`` and the module docstrings of ``jail`` (isolation tiers), ``zygote``
(what happens in the child before the program runs), ``checking`` (host-side verdicts) and
``ray_pool`` (the same contract over a Ray cluster; ``Executor`` is what environments accept).
"""

from mucode_env.sandbox.executor import Executor
from mucode_env.sandbox.feedback import PASSED_TEXT, TIMEOUT_TEXT, render_feedback
from mucode_env.sandbox.limits import SandboxLimits
from mucode_env.sandbox.pool import Job, Sandbox, SandboxConfig
from mucode_env.sandbox.ray_pool import RaySandbox, RaySandboxConfig
from mucode_env.sandbox.results import ExecResult, Status, TestOutcome

__all__ = [
    "ExecResult", "Executor", "Job", "PASSED_TEXT", "RaySandbox", "RaySandboxConfig", "Sandbox", "SandboxConfig",
    "SandboxLimits", "Status", "TIMEOUT_TEXT", "TestOutcome", "render_feedback",
]
