"""The fork server that runs inside each sandbox worker (standard library only).

It is started once per worker, inside the jail, as ``python -s -S -P zygote.py``. It pre-imports
common modules, then serves requests from the host over stdin/stdout (4-byte big-endian length +
JSON). For every execution it forks a child that drops privileges and applies its limits
*before* any untrusted code runs:

    setsid -> fds (stdin, capture memfds, result memfd) -> rlimits -> scratch dir
    -> setgroups/setgid/setuid(slot uid) -> PR_SET_NO_NEW_PRIVS -> seccomp -> run the program

The zygote never receives expected outputs; the child only reports plain values (or stdout for
stdio problems) and the host decides the verdict. The zygote enforces the wall-clock deadline
with SIGKILL of the child's process group.

This file must not import anything from the project: the project tree is not mounted in the jail.
"""

import collections
import ctypes
import json
import marshal
import os
import resource
import select
import signal
import struct
import sys
import time

# Modules imported once in the zygote so that children start warm (copy-on-write): the ones
# programs commonly use. Every module imported here makes each fork dearer (more mappings and
# heap pages to copy and to tear down at exit), so the rarely used standard modules below are
# imported by the second fork server instead, with the preloaded packages (_Heavy): a program
# that names one runs there. Moving these 8 out cut ~0.45 ms of CPU per MBPP execution (about
# 8%; benchmarks/sandbox_cpu_breakdown.py, alternating runs on a Zen 3 VM); none of the 499
# MBPP test references imports any of them.
PRELOAD = (
    "re", "math", "cmath", "heapq", "bisect", "collections", "itertools", "functools", "string",
    "random", "operator", "copy", "typing", "json", "array", "struct", "traceback",
    "enum", "abc", "numbers", "io", "sys", "time",
)
RARE_STDLIB = ("statistics", "fractions", "decimal", "datetime", "hashlib", "textwrap", "unicodedata", "dataclasses")
RESULT_FD = 3
PR_SET_NO_NEW_PRIVS = 38
SYS_LANDLOCK_CREATE_RULESET, SYS_LANDLOCK_ADD_RULE, SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446  # every arch
PR_SET_DUMPABLE = 4
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
MAX_DEPTH = 50
MAX_TB_WALK = 5000
MAX_TB_SHOWN = 10
DEEP_STACK = 20000  # frames: deeper than this, unwinding after a timeout takes seconds
WIPE_BUDGET_S = 2.0
USER_FILES = ("solution.py", "test_setup.py", "<test>")


# Exact stdlib dict subclasses sent as plain dicts (MBPP reference solutions return Counter);
# only the items travel, so nothing of the object's own __eq__ reaches the host.
_DICT_LIKE = (collections.Counter, collections.OrderedDict, collections.defaultdict)



def _run_delay_ms(pid):
    """Time the child's main thread spent runnable but waiting for a CPU, from
    /proc/<pid>/schedstat (second field, ns); None where the kernel does not report it.

    The host tells a load-starved timeout (long run-queue wait) from a program that sleeps
    (no wait) with it, and retries only the first."""
    try:
        fd = os.open("/proc/%d/schedstat" % pid, os.O_RDONLY)  # no text file object: hot path
        try:
            return int(os.read(fd, 200).split()[1]) / 1e6
        finally:
            os.close(fd)
    except (OSError, ValueError, IndexError):
        return None

class _Alarm(BaseException):
    """Raised by SIGALRM in the child: the current test ran past its time budget.

    A BaseException so that a bare ``except Exception`` in the program cannot swallow it.
    """


class _TooLarge(Exception):
    pass


class _NotPlain(Exception):
    pass


def _encode(value, depth=0, budget=None):
    """Encode plain builtin data as tagged JSON. Exact types only: subclasses are refused.

    ``budget`` is a one-element list holding the bytes still allowed: encoding stops with
    _TooLarge as soon as the value is provably too big, so that a small object graph with shared
    references (``a = [a, a]`` 40 times) or a 200 MB string cannot make the child spend its whole
    deadline (or its memory) serialising.
    """
    if budget is None:
        budget = [1 << 62]
    if depth > MAX_DEPTH:
        raise _NotPlain("value nested more than %d levels deep" % MAX_DEPTH)
    t = type(value)
    budget[0] -= 8
    if budget[0] < 0:
        raise _TooLarge("return value larger than the limit")
    if value is None or t is bool:
        return value
    if t is str:
        budget[0] -= len(value)
        if budget[0] < 0:
            raise _TooLarge("return value larger than the limit")
        return value
    if t is int:
        if -(1 << 53) < value < (1 << 53):
            return value
        budget[0] -= value.bit_length() // 4
        if budget[0] < 0:
            raise _TooLarge("return value larger than the limit")
        return {"i": hex(value)}
    if t is float:
        return {"f": float.hex(value)}
    if t is complex:
        return {"c": [float.hex(value.real), float.hex(value.imag)]}
    if t is bytes:
        budget[0] -= 2 * len(value)
        if budget[0] < 0:
            raise _TooLarge("return value larger than the limit")
        return {"b": value.hex()}
    if t is list:
        return [_encode(v, depth + 1, budget) for v in value]
    if t is tuple:
        return {"t": [_encode(v, depth + 1, budget) for v in value]}
    if t is set or t is frozenset:
        return {"s" if t is set else "fs": [_encode(v, depth + 1, budget) for v in value]}
    if t is dict or t in _DICT_LIKE:
        return {"d": [[_encode(k, depth + 1, budget), _encode(v, depth + 1, budget)] for k, v in value.items()]}
    raise _NotPlain("returned a %s; tests accept only plain builtin values "
                    "(None, bool, int, float, complex, str, bytes, list, tuple, set, dict)"
                    % getattr(t, "__qualname__", "non-builtin object"))


def _short_traceback(exc, limit_chars=1500):
    """The exception with only the program's own frames (never sandbox frames).

    The traceback chain is walked at most MAX_TB_WALK entries deep: a recursion bomb under
    ``sys.setrecursionlimit(10**9)`` leaves millions of entries, and extracting them all took
    longer than the deadline (and more memory than the limit), so no record came back.
    """
    import traceback

    entries = []
    tb = exc.__traceback__
    while tb is not None and len(entries) < MAX_TB_WALK:
        if tb.tb_frame.f_code.co_filename in USER_FILES:
            entries.append((tb.tb_frame, tb.tb_lineno))
        tb = tb.tb_next
    omitted = tb is not None
    if len(entries) > 2 * MAX_TB_SHOWN:
        entries = entries[:MAX_TB_SHOWN] + entries[-MAX_TB_SHOWN:]
        omitted = True
    frames = traceback.StackSummary.extract(iter(entries), lookup_lines=False)
    lines = []
    if frames:
        lines.append("Traceback (most recent call last):\n")
        lines.extend(traceback.format_list(frames))
        if omitted:
            lines.append("  [... deeper frames omitted ...]\n")
    try:
        lines.extend(traceback.format_exception_only(type(exc), exc))
    except BaseException:  # a hostile __str__ must not break reporting
        lines.append(type(exc).__name__ + "\n")
    text = "".join(lines)
    return text[-limit_chars:]


def _exc_message(exc):
    try:
        return str(exc)[:300]
    except BaseException:
        return "<unprintable exception>"


def _exc_type(exc):
    try:
        return type(exc).__name__[:100]
    except BaseException:
        return "Exception"


def _flush_output():
    """Flush the program's buffered stdout/stderr; a hostile stream object must not stop us."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        pass


def _make_dumps():
    """``json.dumps(obj)`` (ASCII, no check for reference cycles) without its Python layers.

    json.dumps goes through JSONEncoder.encode and iterencode and builds a new C encoder per
    call; in a fresh child those first calls cost copy-on-write faults. What is encoded here
    (replies, records, values rebuilt by _encode) never contains a cycle."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return json.dumps
    encode = make(None, json.JSONEncoder().default, json.encoder.encode_basestring_ascii, None,
                  ": ", ", ", False, False, True)
    return lambda obj: "".join(encode(obj, 0))


_dumps = _make_dumps()


def _write_record(record):
    data = (_dumps(record) + "\n").encode()
    view = memoryview(data)
    while view:
        n = os.write(RESULT_FD, view)
        view = view[n:]


# The test the child is running (-1: loading the program) and how often its alarm fired.
_ALARM = {"test": -1, "fired": 0, "started": 0.0, "grace": 0.5}


def _emergency_timeout():
    """Report a timeout for the current test and end the child at once.

    Used when raising _Alarm cannot work: the program swallowed the first alarm (bare ``except``
    in a loop), or the stack is so deep that unwinding it would take longer than the deadline.
    The tests after this one are reported as not run; the run's verdict is TIMEOUT either way.
    """
    try:
        os.write(RESULT_FD, ("\n" + _dumps({"t": _ALARM["test"], "ok": False, "kind": "timeout",
                                                 "ms": (time.perf_counter() - _ALARM["started"]) * 1e3}) + "\n").encode())
    except BaseException:
        pass
    _flush_output()
    os._exit(0)


def _on_alarm(signum, frame):
    _ALARM["fired"] += 1
    if _ALARM["fired"] > 1:
        _emergency_timeout()
    try:
        sys._getframe(DEEP_STACK)
        deep = True
    except ValueError:
        deep = False
    if deep:
        _emergency_timeout()
    # Fire again after a grace period: if the program catches _Alarm and keeps going, the second
    # alarm ends the child instead of letting it spin until the zygote's deadline.
    signal.setitimer(signal.ITIMER_REAL, _ALARM["grace"])
    raise _Alarm()


def _set_alarm(seconds, test=None):
    if seconds:
        _ALARM["fired"] = 0
        _ALARM["grace"] = min(1.0, max(0.05, 0.5 * seconds))
        _ALARM["started"] = time.perf_counter()
        if test is not None:
            _ALARM["test"] = test
    signal.setitimer(signal.ITIMER_REAL, seconds)


def _error_record(test_index, exc, started, kind="error"):
    if isinstance(exc, _Alarm):
        return {"t": test_index, "ok": False, "kind": "timeout", "ms": (time.perf_counter() - started) * 1e3}
    ms = (time.perf_counter() - started) * 1e3
    kind = "compile" if isinstance(exc, SyntaxError) else "memory" if isinstance(exc, MemoryError) else kind
    try:
        return {"t": test_index, "ok": False, "kind": kind,
                "etype": _exc_type(exc), "emsg": _exc_message(exc), "tb": _short_traceback(exc), "ms": ms}
    except BaseException:
        # Out of memory (or a hostile exception) while formatting: drop the traceback, whose
        # frames hold the memory, and report what is cheap to report.
        try:
            exc.__traceback__ = None
        except BaseException:
            pass
        return {"t": test_index, "ok": False, "kind": kind, "etype": _exc_type(exc), "emsg": "", "tb": "", "ms": ms}


def _report_failure(test_index, exc, started, kind="error", adjust=None):
    """Write the failure record of ``exc``; never raises (a missing record would read NOT_RUN)."""
    try:
        record = _error_record(test_index, exc, started, kind)
        if adjust is not None:
            adjust(record, exc)
        _write_record(record)
    except BaseException:
        try:
            _write_record({"t": test_index, "ok": False, "kind": "memory" if isinstance(exc, MemoryError) else kind,
                           "etype": "Error", "emsg": "", "tb": "", "ms": 0.0})
        except BaseException:
            pass


def _load_adjust(record, exc):
    if isinstance(exc, SystemExit):
        record["etype"], record["emsg"] = "SystemExit", "the program exited before the tests ran"


def _test_adjust(record, exc):
    if isinstance(exc, (_NotPlain, _TooLarge)):
        record["kind"] = "bad_value"
        record["tb"] = ""
        # The model sees this: name the problem in its words, not the sandbox's class names.
        record["etype"] = "TypeError" if isinstance(exc, _NotPlain) else "ValueError"
    if isinstance(exc, SystemExit):
        record["etype"], record["emsg"] = "SystemExit", "the program called exit() during a test"


def _run_call(request):
    """Child side of a function-style execution: load, set up, evaluate every test's exprs."""
    per_test_s = float(request["per_test_s"])
    value_bytes = int(request["value_bytes"])
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    started = time.perf_counter()
    try:
        program = compile(request["code"], "solution.py", "exec", dont_inherit=True)
    except BaseException as exc:  # SyntaxError, ValueError (NUL bytes), RecursionError, MemoryError
        _report_failure(-1, exc, started, kind="compile")
        return
    try:
        _set_alarm(per_test_s, test=-1)
        exec(program, namespace)
        if request.get("setup"):
            exec(compile(request["setup"], "test_setup.py", "exec", dont_inherit=True), namespace)
        _set_alarm(0)
    except BaseException as exc:
        _set_alarm(0)
        _report_failure(-1, exc, started, kind="load", adjust=_load_adjust)
        return
    for index, exprs in enumerate(request["tests"]):
        started = time.perf_counter()
        try:
            _set_alarm(per_test_s, test=index)
            values = [eval(compile(e, "<test>", "eval", dont_inherit=True), namespace) for e in exprs]
            # Encoding stays under the test's alarm and a size budget (hostile return values).
            encoded = _dumps([_encode(v, 0, [value_bytes]) for v in values])
            _set_alarm(0)
            del values
            if len(encoded) > value_bytes:
                raise _TooLarge("return value larger than %d bytes" % value_bytes)
            _write_record({"t": index, "ok": True, "v": encoded, "ms": (time.perf_counter() - started) * 1e3})
        except BaseException as exc:
            _set_alarm(0)
            values = encoded = None  # noqa: F841  (drop a huge value before reporting)
            _report_failure(index, exc, started, adjust=_test_adjust)


def _run_stdio(request):
    """Child side of a stdin/stdout execution: run the program as __main__."""
    started = time.perf_counter()
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        program = compile(request["code"], "solution.py", "exec", dont_inherit=True)
    except BaseException as exc:
        _report_failure(-1, exc, started, kind="compile")
        return
    try:
        _set_alarm(float(request["per_test_s"]), test=0)
        exec(program, namespace)
        _set_alarm(0)
    except SystemExit as exc:
        _set_alarm(0)
        code = exc.code
        if code not in (None, 0):
            _write_record({"t": 0, "ok": False, "kind": "error", "etype": "SystemExit",
                           "emsg": "exit status %r" % (code,), "tb": "", "ms": (time.perf_counter() - started) * 1e3})
            return
    except BaseException as exc:
        _set_alarm(0)
        _report_failure(0, exc, started)
        return
    try:
        sys.stdout.flush()
    except BaseException:
        pass
    _write_record({"t": 0, "ok": True, "ms": (time.perf_counter() - started) * 1e3})


# Programs the zygote runs through the children's code path before serving (_warm_up).
_WARM_UP_PROGRAMS = (
    """
from collections import Counter


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def norm(self):
        return (self.x ** 2 + self.y ** 2) ** 0.5


def solve(items, k=2):
    total, seen = 0, {}
    for i, v in enumerate(items):
        if v % k == 0 and v not in seen:
            seen[v] = i
        total += v * v
    pairs = [(a, b) for a in items for b in items if a < b]
    words = " ".join(str(v) for v in sorted(set(items), reverse=True))
    try:
        ratio = total / len(items)
    except ZeroDivisionError:
        ratio = 0.0
    best = max(items, key=lambda v: -v) if items else None
    return total, len(pairs), words, ratio, best, f"{total:>4}", seen, Counter(items), b"x", {1, 2}, [True, None]


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)
""",
    "def solve(items):\n    return items.no_such_method()\n",
    "def solve(:\n",
)
_WARM_UP_TESTS = [["solve([3, 1, 4, 1, 5, 9, 2, 6])"], ["Point(3, 4).norm()", "fib(10)"], ["solve([])"], ["solve(None)"]]


def _warm_up():
    """Run the children's code path (compile, exec, evaluate, encode, report, and the failure
    paths) a few times in the zygote before it serves.

    The first compile() and the first runs of each function in a process initialise state
    lazily (parser and compiler caches, method caches, specialised bytecode); done in every
    child, that was ~30 copy-on-write faults per execution (with the standard preloads; ~200
    in a zygote that preloads nothing). Done here once, children inherit it. The records go to
    a throwaway memfd, nothing new is imported or printed, and the state a child sees (alarm
    bookkeeping, random's seed, stdio buffers) is restored afterwards. No gc.collect() after
    it: that rewrites every object's header and cost more faults per fork than it saved.
    """
    sink = os.memfd_create("warm-up", 0)
    try:
        saved = os.dup(RESULT_FD)  # the host pipe may sit on fd 3
    except OSError:
        saved = None
    os.dup2(sink, RESULT_FD)
    try:
        for _ in range(3):
            for code in _WARM_UP_PROGRAMS:
                _run_call({"code": code, "setup": "", "tests": _WARM_UP_TESTS, "per_test_s": 60.0,
                           "value_bytes": 1 << 20})
    finally:
        _set_alarm(0)
        if saved is None:
            os.close(RESULT_FD)
        else:
            os.dup2(saved, RESULT_FD)
            os.close(saved)
        os.close(sink)
        _flush_output()
        _ALARM.update({"test": -1, "fired": 0, "started": 0.0, "grace": 0.5})


# Landlock file access rights (linux/landlock.h), by the ABI version that introduced them.
_LL_EXECUTE, _LL_WRITE_FILE, _LL_READ_FILE, _LL_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_LL_REFER, _LL_TRUNCATE, _LL_IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
_LL_SCOPE_ABSTRACT_UNIX_SOCKET, _LL_SCOPE_SIGNAL = 1 << 0, 1 << 1


def _landlock_ruleset(spec, libc):
    """(ruleset fd, ABI version) of a Landlock ruleset from ``spec`` ({"read": paths, "write":
    paths, "devices": paths}), or (None, 0) where the kernel has no Landlock.

    Used in the process tier, which has no mount namespace: without it a child could read every
    file its uid can (the datasets' answers are world-readable), and on a host that is not root
    write every file the user can and read /proc/<pid>/environ of the user's processes. Each
    child confines itself with it (``Zygote._child``) before any untrusted code runs; the
    zygote stays unconfined. Nothing under /proc is allowed."""
    syscall = libc.syscall
    syscall.restype = ctypes.c_long
    abi = syscall(SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint(1))
    if abi < 1:
        return None, 0
    handled = (1 << 13) - 1  # ABI 1: execute ... make_sym
    for version, right in ((2, _LL_REFER), (3, _LL_TRUNCATE), (5, _LL_IOCTL_DEV)):
        if abi >= version:
            handled |= right
    scoped = _LL_SCOPE_ABSTRACT_UNIX_SOCKET | _LL_SCOPE_SIGNAL if abi >= 6 else 0
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8  # struct landlock_ruleset_attr grew
    attr = ctypes.create_string_buffer(struct.pack("=QQQ", handled, 0, scoped)[:size], size)
    ruleset = syscall(SYS_LANDLOCK_CREATE_RULESET, attr, ctypes.c_size_t(size), ctypes.c_uint(0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    file_rights = (_LL_EXECUTE | _LL_WRITE_FILE | _LL_READ_FILE | _LL_TRUNCATE | _LL_IOCTL_DEV) & handled
    readable = _LL_EXECUTE | _LL_READ_FILE | _LL_READ_DIR
    rules = ([(path, readable) for path in spec.get("read", ())] + [(path, handled) for path in spec.get("write", ())]
             + [(path, _LL_READ_FILE | _LL_WRITE_FILE | _LL_TRUNCATE) for path in spec.get("devices", ())])
    for path, access in rules:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            continue  # not on this machine
        try:
            is_dir = os.path.isdir(path)
            allowed = access & handled & (~0 if is_dir else file_rights)
            rule = ctypes.create_string_buffer(struct.pack("=Qi", allowed, fd), 12)  # landlock_path_beneath_attr
            if syscall(SYS_LANDLOCK_ADD_RULE, ruleset, 1, rule, 0) != 0:
                raise OSError(ctypes.get_errno(), "landlock_add_rule failed for %s" % path)
        finally:
            os.close(fd)
    if ruleset <= RESULT_FD:  # a child replaces 0..3 before it confines itself
        raise OSError("landlock ruleset on descriptor %d" % ruleset)
    return ruleset, abi


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def _wipe_tree(path, deadline, depth, keep=False):
    """Delete the tree at ``path`` (its contents only with ``keep``) without following links."""
    if depth > 100 or time.monotonic() > deadline:
        return False
    complete = True
    with os.scandir(path) as entries:
        for n, entry in enumerate(entries):
            if entry.is_dir(follow_symlinks=False):
                complete = _wipe_tree(entry.path, deadline, depth + 1) and complete
            else:
                try:
                    os.unlink(entry.path)
                except FileNotFoundError:
                    pass
            if not complete or (n & 1023 == 1023 and time.monotonic() > deadline):
                return False
    if not keep:
        os.rmdir(path)
    return True


def _prepare_child_runtime(home):
    """Set up, once in the zygote, the runtime every child starts with.

    The host protocol has moved off descriptors 0 and 1 (they read and write /dev/null here), so
    the text streams on 0/1/2 can be built now: a child only points those descriptors at its
    memfds. The zygote itself never writes to them. Signal dispositions are the child's: SIGALRM
    (no timer is armed in the zygote once it serves), SIGXFSZ (the zygote has no file size limit), SIGPIPE
    (default: the zygote dies if its host or its preload sibling has gone, which the host
    handles as a dead worker). ``home`` is the zygote's scratch path, the same for every child.
    """
    os.environ.clear()
    os.environ.update({"PYTHONHASHSEED": "0", "LANG": "C.UTF-8", "HOME": home, "TMPDIR": home})
    sys.modules["random"].seed(0)  # every child starts from this state (see _child)
    sys.set_int_max_str_digits(0)
    sys.argv = ["solution.py"]
    sys.stdin = open(0, "r", encoding="utf-8", errors="replace", closefd=False)
    sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False, buffering=1 << 16)
    sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False, buffering=1)
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # output floods die by SIGXFSZ
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    signal.signal(signal.SIGALRM, _on_alarm)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


# A finished child whose memfds the zygote still holds (Zygote.run_child); ``large``: it left more
# than _HOLD_BYTES of output and records, so the batch collects it at once.
_Run = collections.namedtuple("_Run", "out_fd err_fd result_fd status usage timed_out wall_ms run_delay_ms clean "
                                      "keep_stdout capture large")
_HOLD_BYTES = 1 << 20


class Zygote:
    def __init__(self, config, prefix="s"):
        # Scratch dir of every child: <scratch_root>/s (<scratch_root>/n in the preload zygote).
        self.uid = config.get("uid")  # None: do not switch uid (not root)
        self.scratch_root = config["scratch_root"]
        self.seccomp_bpf = bytes.fromhex(config["seccomp_bpf"]) if config.get("seccomp_bpf") else b""
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        self.scratch = os.path.join(self.scratch_root, prefix)
        # In the jail each scratch dir is a tmpfs of its own in a read-only /tmp: emptied, never
        # removed (a child that shares the zygote's uid could otherwise write next to it).
        self.mounted = bool(config.get("scratch_mounted"))
        self._devnull = os.open(os.devnull, os.O_RDONLY)  # stdin of children without input
        self._landlock, self.landlock_abi = (None, 0)
        if config.get("landlock"):
            self._landlock, self.landlock_abi = _landlock_ruleset(config["landlock"], self.libc)
            self._syscall = self.libc.syscall
        if self.seccomp_bpf:
            n = len(self.seccomp_bpf) // 8
            self._filters = (_SockFilter * n).from_buffer_copy(self.seccomp_bpf)
            self._prog = _SockFprog(n, ctypes.cast(self._filters, ctypes.POINTER(_SockFilter)))
            # bound once: in the child the attribute lookups and ctypes.addressof cost ~13
            # copy-on-write faults per execution (of ~245)
            self._prctl = self.libc.prctl
            self._seccomp_args = (PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(self._prog), 0, 0)
            # The filter's placeholders for the child's pid (seccomp.pid_slots on the host): the
            # 32-bit constant of instruction i is word 2 * i + 1 of the program.
            slots = config.get("seccomp_pid_slots") or {}
            self._words = memoryview(self._filters).cast("B").cast("I")
            self._self_words = tuple(2 * i + 1 for i in slots.get("self", ()))
            self._group_words = tuple(2 * i + 1 for i in slots.get("group", ()))

    # ---- child -------------------------------------------------------------------------------
    def _child(self, request, scratch, stdin_fd, out_fd, err_fd, result_fd, limits):
        # Only what differs per execution happens here: everything that is the same for every
        # child (stdio objects, environment, argv, signal dispositions) was prepared once by
        # _prepare_child_runtime in the zygote. Each Python statement here costs copy-on-write
        # page faults in a forked child, which made up most of an execution's CPU.
        os.setsid()
        os.dup2(stdin_fd, 0)
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        os.dup2(result_fd, RESULT_FD)
        if self._landlock is not None and self._syscall(SYS_LANDLOCK_RESTRICT_SELF, self._landlock, 0) != 0:
            os._exit(123)
        # Close every other inherited descriptor (host pipes, the Landlock ruleset among them).
        os.closerange(RESULT_FD + 1, 65536)
        memory = limits["memory_mb"] << 20
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        cpu = int(limits["cpu_s"])
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        fsize = limits["fsize_mb"] << 20
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits["nofile"], limits["nofile"]))
        os.chdir(scratch)
        if self.uid is not None:
            resource.setrlimit(resource.RLIMIT_NPROC, (limits["nproc"], limits["nproc"]))
            os.setgroups([])
            os.setgid(self.uid)
            os.setuid(self.uid)
        # Without a uid switch RLIMIT_NPROC would count the whole user; seccomp forbids forks.
        # PR_SET_NO_NEW_PRIVS and PR_SET_DUMPABLE 0 are inherited: main() set them (_harden).
        if self.seccomp_bpf:
            # Signals only to itself (the filter's signal guard): its pid goes in first.
            pid = os.getpid()
            words = self._words
            for word in self._self_words:
                words[word] = pid
            for word in self._group_words:
                words[word] = -pid & 0xFFFFFFFF
            if self._prctl(*self._seccomp_args) != 0:
                os._exit(122)
        if _CHILD_RESEEDS:  # random's at-fork hook reseeded this child from the OS
            sys.modules["random"].seed(0)
        try:
            if request["mode"] == "stdio":
                _run_stdio(request)
            else:
                _run_call(request)
        except BaseException as exc:
            # Something escaped the per-test handlers: typically an alarm that was pending while
            # a deep recursion unwound and fired inside the handler. Report it for the running
            # test instead of leaving no record (which would read as NOT_RUN).
            _set_alarm(0)
            kind = "timeout" if isinstance(exc, _Alarm) else "memory" if isinstance(exc, MemoryError) else "error"
            try:
                _write_record({"t": _ALARM["test"], "ok": False, "kind": kind, "etype": _exc_type(exc),
                               "emsg": "", "tb": "", "ms": (time.perf_counter() - _ALARM["started"]) * 1e3})
            except BaseException:
                pass
        _flush_output()

    # ---- parent ------------------------------------------------------------------------------
    def _memfd(self, name, data=b""):
        fd = os.memfd_create(name, 0)
        if data:
            os.write(fd, data)
            os.lseek(fd, 0, os.SEEK_SET)
        return fd

    def _read_capture(self, fd, capture_bytes):
        size = os.lseek(fd, 0, os.SEEK_END)  # not fstat: its result is ~20 new objects
        if not size:
            return "", False, 0
        if size <= capture_bytes:
            return os.pread(fd, size, 0).decode("utf-8", "replace"), False, size
        half = capture_bytes // 2
        head = os.pread(fd, half, 0).decode("utf-8", "replace")
        tail = os.pread(fd, half, size - half).decode("utf-8", "replace")
        return head + "\n... [output truncated] ...\n" + tail, True, size

    def _wipe(self, scratch):
        """Delete the scratch dir (only its contents where it is a mount of its own) without
        following symlinks. False if that was not done quickly and completely (a million files,
        very deep trees): the host then restarts the worker, which frees the whole tmpfs at
        once. A synchronous rmtree of such a tree took longer than the host's reply timeout,
        which a hostile program could use to force SANDBOX_ERRORs.
        """
        try:
            if self.mounted:
                if not os.listdir(scratch):  # the common case: the program wrote no file
                    return True
            else:
                os.rmdir(scratch)  # the common case: the program wrote no file
                return True
        except FileNotFoundError:
            return not self.mounted
        except OSError:
            pass
        deadline = time.monotonic() + WIPE_BUDGET_S
        try:
            if self.mounted:
                os.chmod(scratch, 0o700)  # a program that shares our uid may have locked us out
            return _wipe_tree(scratch, deadline, 0, keep=self.mounted)
        except BaseException:  # OSError (ENAMETOOLONG...), RecursionError, MemoryError
            return False

    def _new_scratch(self):
        # The same path for every child (so HOME is set once in the zygote): the previous
        # child's directory was removed (emptied, if it is a mount) after it ended, or the host
        # recycled the worker. A leftover (a worker restarted on the host's filesystem) is wiped.
        scratch = self.scratch
        if self.mounted:
            # The jail's own tmpfs (jail.build_worker): whatever mode a program left on it is reset.
            os.chmod(scratch, 0o700)
        else:
            try:
                os.mkdir(scratch, 0o700)
            except FileExistsError:
                if not self._wipe(scratch):
                    raise
                os.mkdir(scratch, 0o700)
        if self.uid is not None:
            os.chown(scratch, self.uid, self.uid)
        return scratch

    def execute_one(self, request, limits, stdin=b"", keep_stdout=False):
        """Fork one child, wait for it under the deadline, collect what it left."""
        return self.collect(self.run_child(request, limits, stdin, keep_stdout))

    def run_child(self, request, limits, stdin=b"", keep_stdout=False):
        """Fork one child and wait for it under the deadline; what it left stays in its memfds
        (the returned tuple holds them) until ``collect`` reads them.

        Splitting the run from the collection lets a batch fork its children back to back and
        build every reply after the last one: a fork write-protects every page of the zygote,
        so the pages that reading, decoding and encoding a reply touch were copy-on-write
        faults again after each fork (~20 per execution from the JSON encoding alone). Between
        forks the zygote now only does what the next child needs."""
        scratch = self._new_scratch()
        stdin_fd = self._memfd("stdin", stdin) if stdin else self._devnull
        out_fd = self._memfd("out")
        err_fd = self._memfd("err") if keep_stdout else out_fd
        result_fd = self._memfd("result")
        deadline_s = float(limits["deadline_s"])
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            try:
                self._child(request, scratch, stdin_fd, out_fd, err_fd, result_fd, limits)
            except BaseException:
                pass
            os._exit(0)
        timed_out = False
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            pidfd = None
        status = usage = None
        while True:
            remaining = deadline_s - (time.monotonic() - started)
            if remaining <= 0:
                timed_out = True
                break
            if pidfd is not None:
                ready, _, _ = select.select([pidfd], [], [], remaining)
                if ready:
                    break
            else:
                done, st, ru = os.wait4(pid, os.WNOHANG)
                if done:
                    status, usage = st, ru
                    break
                time.sleep(min(0.005, remaining))
        run_delay_ms = _run_delay_ms(pid)  # before the reap (a zombie still has its schedstat)
        if status is None:
            if timed_out:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            _, status, usage = os.wait4(pid, 0)  # the child's own rusage: no getrusage before/after
        if pidfd is not None:
            os.close(pidfd)
        wall_ms = (time.monotonic() - started) * 1e3
        if stdin_fd != self._devnull:
            os.close(stdin_fd)
        clean = self._wipe(scratch)
        large = os.lseek(out_fd, 0, os.SEEK_END) + os.lseek(result_fd, 0, os.SEEK_END) > _HOLD_BYTES
        if keep_stdout:
            large = large or os.lseek(err_fd, 0, os.SEEK_END) > _HOLD_BYTES
        return _Run(out_fd, err_fd, result_fd, status, usage, timed_out, wall_ms, run_delay_ms, clean,
                    keep_stdout, int(limits["capture_bytes"]), large)

    def collect(self, run):
        """The reply of a finished ``run_child``: read its memfds and close them."""
        (out_fd, err_fd, result_fd, status, usage, timed_out, wall_ms, run_delay_ms, clean,
         keep_stdout, capture, _) = run
        cpu_ms = (usage.ru_utime + usage.ru_stime) * 1e3
        try:
            output, truncated, output_size = self._read_capture(out_fd, capture)
            stdout_full = None
            if keep_stdout:
                size = os.lseek(out_fd, 0, os.SEEK_END)
                stdout_full = os.pread(out_fd, size, 0).decode("utf-8", "replace")
                stderr_text, _, _ = self._read_capture(err_fd, capture)
                output = stderr_text
            result_size = os.lseek(result_fd, 0, os.SEEK_END)
            records = os.pread(result_fd, min(result_size, 64 << 20), 0).decode("utf-8", "replace")
        finally:
            if err_fd != out_fd:
                os.close(err_fd)
            os.close(out_fd)
            os.close(result_fd)
        reply = {
            "dirty": not clean,
            "records": records,
            "output": output,
            "output_truncated": truncated,
            "output_size": output_size,
            "timed_out": timed_out,
            "exit_code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
            "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
            "wall_ms": wall_ms,
            "cpu_ms": cpu_ms,
            "run_delay_ms": run_delay_ms,
        }
        if keep_stdout:
            reply["stdout"] = stdout_full
        return reply

    def handle(self, request):
        """Run one request and collect its runs (a stdio request: one per stdin, each collected
        before the next starts, so that a request with many tests holds one run's memfds)."""
        limits = request["limits"]
        if request["mode"] == "stdio":
            return {"runs": [self.collect(self.run_child(request, limits, stdin=stdin.encode("utf-8"), keep_stdout=True))
                             for stdin in request["stdins"]]}
        return {"runs": [self.collect(self.run_child(request, limits))]}


def _read_exact(stream, n):
    data = b""
    while len(data) < n:
        chunk = stream.read(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _send(stream, obj):
    _send_text(stream, _dumps(obj))


def _send_text(stream, text):
    data = text.encode()
    stream.write(struct.pack(">I", len(data)) + data)
    stream.flush()


def _harden():
    """Set, once in the zygote, two flags every child inherits and cannot clear.

    PR_SET_NO_NEW_PRIVS: the zygote never executes a program; setting it here spares each child
    a ctypes call (~0.1 ms of copy-on-write faults).

    PR_SET_DUMPABLE 0: without a uid switch (a host that is not root) a child ran as the zygote's
    own uid, and could open /proc/<zygote>/fd/*: the pipes to the host (read the next requests,
    private tests included, or write a forged reply) and the memfds of other executions. The
    kernel lets only a process with CAP_SYS_PTRACE into the /proc files of a process that is not
    dumpable; a process still reaches its own."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    for option, name in ((PR_SET_NO_NEW_PRIVS, "PR_SET_NO_NEW_PRIVS"), (PR_SET_DUMPABLE, "PR_SET_DUMPABLE")):
        value = 1 if option == PR_SET_NO_NEW_PRIVS else 0
        if libc.prctl(option, value, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(%s) failed" % name)


# Whether each child must reseed random itself (only if random was imported with its hook).
_CHILD_RESEEDS = False


def _import_random_without_fork_hook():
    """Import random without the at-fork hook it registers, which reseeds from os.urandom in
    every forked child: ~50 copy-on-write faults (~0.25 ms) per child, wasted since every child
    must start from seed 0 anyway, which _prepare_child_runtime sets once in the zygote (it
    never draws from random itself). Done in the zygote only, before anything else imports
    random; os.register_at_fork is restored at once, so programs see the real one."""
    global _CHILD_RESEEDS
    if "random" in sys.modules:
        _CHILD_RESEEDS = True
        return
    register = os.register_at_fork
    os.register_at_fork = lambda **hooks: None
    try:
        import random  # noqa: F401
    finally:
        os.register_at_fork = register


def _import_all(names):
    imported = []
    for name in names:
        try:
            __import__(name)
            imported.append(name)
        except Exception:
            pass
    return imported


class _Heavy:
    """The second fork server of a worker, for programs that use a preloaded package (or one of
    the rarely used standard modules, RARE_STDLIB).

    Forking costs in proportion to the forking process's memory: numpy doubled the zygote's
    anonymous memory and mappings, and made every child's fork and exit ~0.5 ms dearer, for the
    few programs that use it. So the zygote forks this sibling at startup, which imports the
    packages and serves, over a pipe pair, the requests whose code or setup names one of them
    (a substring test; a program that imports one some other way still works, in the lean
    zygote, only slower). Same Zygote code, uid, limits and seccomp filter for its children.
    """

    def __init__(self, config, host_streams):
        self.names = [name for name in config.get("preload", []) if name] + list(RARE_STDLIB)
        to_heavy_r, to_heavy_w = os.pipe()
        from_heavy_r, from_heavy_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the heavy zygote: never touches the host's pipe again
            try:
                for stream in host_streams:
                    stream.close()
                os.close(to_heavy_w)
                os.close(from_heavy_r)
                inp, out = os.fdopen(to_heavy_r, "rb"), os.fdopen(from_heavy_w, "wb")
                preloaded = _import_all(self.names)
                zygote = Zygote(config, prefix="n")
                _prepare_child_runtime(zygote.scratch)
                _warm_up()
                sys.modules["random"].seed(0)
                _send(out, {"ready": True, "preloaded": preloaded})
                _serve(inp, out, zygote)
            except BaseException:
                import traceback

                traceback.print_exc()  # to the worker's stderr: the host shows it if startup fails
            finally:
                os._exit(0)
        os.close(to_heavy_r)
        os.close(from_heavy_w)
        self.inp, self.out = os.fdopen(from_heavy_r, "rb"), os.fdopen(to_heavy_w, "wb")
        ready = json.loads(_read_frame(self.inp))
        self.preloaded = ready.get("preloaded", [])

    def wants(self, request):
        code = request.get("code") or ""
        setup = request.get("setup") or ""
        for name in self.names:
            if name in code or name in setup:
                return True
        return False

    def forward(self, frame):
        """Relay one raw request frame and return the heavy zygote's raw reply frame."""
        self.out.write(frame)
        self.out.flush()
        body = _read_frame(self.inp)
        return struct.pack(">I", len(body)) + body

    def forward_request(self, request):
        """Run one request of a batch there; its reply as JSON text."""
        data = marshal.dumps(request)
        return self.forward(struct.pack(">I", len(data)) + data)[4:].decode("ascii")


def _read_frame(stream):
    return _read_exact(stream, struct.unpack(">I", _read_exact(stream, 4))[0])


# Messages from the host (requests, the config) are marshal: the host is trusted and runs the
# same interpreter, and marshal is much cheaper than JSON. Replies to the host are JSON.
_load_request = marshal.loads


def _infra_error(exc):
    return {"infra_error": "%s: %s" % (type(exc).__name__, exc)}


def _collected(zygote, run):
    """The JSON text of the reply to a function-style request from its finished run."""
    try:
        return _dumps({"runs": [zygote.collect(run)]})
    except Exception as exc:
        return _dumps(_infra_error(exc))


def _batch_reply(requests, zygote, heavy):
    """The JSON text of the reply to a batch: one reply per request, in order, each run as if it
    came alone. After a run whose scratch could not be wiped the rest are not run (the host
    recycles the worker and runs them again).

    The children of function-style requests run back to back and their replies are built after
    the last one (see Zygote.run_child), except for a run that left much output, collected at
    once so that a batch never holds more than one large output in memory; a stdio request
    (one run per test) is collected run by run."""
    items = []  # per request: its reply text, or its run still to collect
    dirty = False
    for request in requests:
        if dirty:
            items.append('{"infra_error": "not run: a scratch dir could not be wiped", "skipped": true}')
            continue
        try:
            if heavy is not None and heavy.wants(request):
                items.append(heavy.forward_request(request))
                continue
            if request.get("mode") == "stdio":
                reply = zygote.handle(request)
                dirty = any(run["dirty"] for run in reply["runs"])
                items.append(_dumps(reply))
                continue
            run = zygote.run_child(request, request.get("limits"))
        except Exception as exc:  # this request's infrastructure trouble; the host retries it
            items.append(_dumps(_infra_error(exc)))
            continue
        dirty = not run.clean
        items.append(_collected(zygote, run) if run.large else run)
    texts = [item if type(item) is str else _collected(zygote, item) for item in items]
    return '{"replies": [' + ", ".join(texts) + "]}"


def _serve(inp, out, zygote, heavy=None):
    while True:
        try:
            header = _read_exact(inp, 4)
        except EOFError:
            return
        body = _read_exact(inp, struct.unpack(">I", header)[0])
        request = _load_request(body)
        op = request.get("op")
        if op == "ping":
            _send(out, {"pong": True})
            continue
        if op == "batch":
            _send_text(out, _batch_reply(request["requests"], zygote, heavy))
            continue
        try:
            if heavy is not None and heavy.wants(request):
                out.write(heavy.forward(header + body))
                out.flush()
                continue
            reply = zygote.handle(request)
        except Exception as exc:  # report infrastructure trouble; the host retries
            reply = _infra_error(exc)
        _send(out, reply)


def main():
    # The host protocol moves to new descriptors; 0 and 1 become /dev/null until a child points
    # them at its memfds (see _prepare_child_runtime).
    inp = os.fdopen(os.dup(0), "rb")
    out = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)
    config = _load_request(_read_frame(inp))
    for path in config.get("sys_path", []):
        sys.path.append(path)
    _harden()
    _import_random_without_fork_hook()
    preloaded = _import_all(PRELOAD)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    heavy = _Heavy(config, (inp, out)) if config.get("preload") else None
    zygote = Zygote(config)
    _prepare_child_runtime(zygote.scratch)
    _warm_up()
    sys.modules["random"].seed(0)  # unchanged by the warm-up; reseeded all the same
    _send(out, {"ready": True, "pid": os.getpid(), "preloaded": preloaded + (heavy.preloaded if heavy else []),
                "landlock": zygote.landlock_abi})
    _serve(inp, out, zygote, heavy)


if __name__ == "__main__":
    main()
