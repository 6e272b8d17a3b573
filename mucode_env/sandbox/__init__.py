"""Executing untrusted, model-written programs: a pool of jailed fork servers.

See ``docs/ARCHITECTURE.md`` and the module docstrings of ``jail`` (isolation tiers), ``zygote``
(what happens in the child before the program runs) and ``checking`` (host-side verdicts).
"""

from mucode_env.sandbox.feedback import PASSED_TEXT, TIMEOUT_TEXT, render_feedback
from mucode_env.sandbox.limits import SandboxLimits
from mucode_env.sandbox.pool import Job, Sandbox, SandboxConfig
from mucode_env.sandbox.results import ExecResult, ProgramRun, Status, TestOutcome

__all__ = [
    "ExecResult", "Job", "PASSED_TEXT", "ProgramRun", "Sandbox", "SandboxConfig", "SandboxLimits", "Status",
    "TIMEOUT_TEXT", "TestOutcome", "render_feedback",
]
