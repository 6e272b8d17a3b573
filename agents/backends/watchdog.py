"""Run a command (a generation server, a training job) so that it cannot outlive the process that started it (Linux).

The launcher starts this script as the leader of a new process group (``start_new_session``);
the script starts the command as its child in that group and then watches two things:

- the launcher dies (killed, crashed, Ctrl-C'ed without cleanup: its pid is no longer our
  parent): the whole group is SIGKILLed, the server and every process it forked included;
- the command exits (a crash, or a stop the launcher asked for): the group's remaining processes
  are SIGKILLed and the script exits with the command's status, written to the log first.

It imports only the standard library, so any Python runs it (the server's own virtual
environment included), and it never touches a process outside its group.

    python watchdog.py --parent-pid 1234 -- python -m vllm.entrypoints.openai.api_server ...
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["group_members", "guarded", "main"]

POLL_S = 0.2


def guarded(command: list[str], python: str | os.PathLike = sys.executable) -> list[str]:
    """``command`` run under this script (with ``python``) on behalf of the calling process:
    start the result with ``start_new_session=True``, so that the script leads the group."""
    return [str(python), str(Path(__file__).resolve()), "--parent-pid", str(os.getpid()), "--", *command]


def group_members(pgid: int) -> list[int]:
    """Pids of the live processes whose process group is ``pgid`` (read from ``/proc``)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited while we looked
            continue
        # Fields after "(comm)": state ppid pgrp ...; comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(entry.name))
    return out


def _kill_others(pgid: int) -> None:
    me = os.getpid()
    for pid in group_members(pgid):
        if pid != me:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _say(message: str) -> None:
    """A line on stderr, when there is still someone to read it: a stderr piped to the launcher
    breaks when the launcher dies, and the kill that follows must happen all the same."""
    try:
        sys.stderr.write(f"\n[mucode watchdog] {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--parent-pid", type=int, required=True, help="the launcher's pid")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- the command and its arguments")
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("no command given after --")
    if os.getpgrp() != os.getpid():
        os.setsid()  # started without start_new_session: lead our own group anyway
    pgid = os.getpgrp()
    if os.getppid() != args.parent_pid:  # the launcher died before we got here
        return 1
    child = subprocess.Popen(command)
    # A stop request (SIGTERM to the group) reaches the server directly; this script keeps
    # watching until the server has exited, then kills the rest of the group. (Ignored only
    # now, so that the server does not inherit the ignoring.)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        code = child.poll()
        if code is not None:
            _say(f"command exited with status {code}")
            _kill_others(pgid)
            return code if code >= 0 else 128 - code
        if os.getppid() != args.parent_pid:
            _say(f"launcher {args.parent_pid} is gone: killing its command")
            os.killpg(pgid, signal.SIGKILL)  # ourselves included
        time.sleep(POLL_S)


if __name__ == "__main__":
    sys.exit(main())
