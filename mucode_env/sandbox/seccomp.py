"""The seccomp filter applied to every sandbox child, compiled on the host with pyseccomp.

The host exports the filter as raw BPF bytes; the zygote (standard library only) installs it with
``prctl(PR_SET_SECCOMP)`` in each child after ``PR_SET_NO_NEW_PRIVS``. Threads stay allowed
(numpy, ``threading``); creating processes, sockets and every kernel interface a program could
use to escape or to reach other processes is denied with EPERM.
"""

from __future__ import annotations

import errno
import functools
import struct
import sys
import tempfile

CLONE_THREAD = 0x00010000

# Denied with EPERM. Names unknown to this kernel/libseccomp are skipped.
DENIED_SYSCALLS = (
    "fork", "vfork", "execve", "execveat",
    "socket", "socketpair", "connect", "bind", "listen", "accept", "accept4",
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "pidfd_open",
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "move_mount", "fsopen",
    "fsmount", "open_tree", "bpf", "perf_event_open", "keyctl", "add_key", "request_key",
    "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    "reboot", "swapon", "swapoff", "personality", "name_to_handle_at", "open_by_handle_at",
    "acct", "syslog", "quotactl", "setuid", "setgid", "setreuid", "setregid", "setresuid",
    "setresgid", "setgroups", "setfsuid", "setfsgid", "capset", "chown", "fchown", "lchown",
    "fchownat", "mknod", "mknodat", "settimeofday", "clock_settime", "adjtimex", "sethostname",
    "setdomainname", "iopl", "ioperm", "lookup_dcookie", "kcmp", "mbind", "migrate_pages",
    "move_pages", "set_mempolicy",
    # System V IPC and POSIX message queues live in the worker's IPC namespace, which outlives
    # each child and is shared by every execution in that worker: a segment or queue created by
    # one program was readable by the next one (cross-episode channel). Nothing needs them.
    "shmget", "shmat", "shmdt", "shmctl", "msgget", "msgsnd", "msgrcv", "msgctl",
    "semget", "semop", "semtimedop", "semctl",
    "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive", "mq_notify", "mq_getsetattr",
)


@functools.lru_cache(maxsize=1)
def child_filter_bpf() -> bytes:
    """Raw BPF program of the child filter (cached; compiling takes ~1 ms)."""
    import pyseccomp as seccomp

    filt = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    # A binary search over syscall numbers instead of a linear chain of comparisons. Every child
    # installs this filter, and the kernel, when it attaches one, runs it once per syscall
    # number to cache which syscalls it always allows: with the linear chain that emulation
    # (with interrupts off) was most of the filter's ~0.15 ms per child; the tree halves it.
    filt.set_attr(seccomp.Attr.CTL_OPTIMIZE, 2)
    for name in DENIED_SYSCALLS:
        try:
            filt.add_rule(seccomp.ERRNO(errno.EPERM), name)
        except (OSError, RuntimeError, ValueError):
            continue  # not a syscall on this architecture
    # clone() is how glibc makes both threads and processes: allow it only with CLONE_THREAD.
    filt.add_rule(seccomp.ERRNO(errno.EPERM), "clone", seccomp.Arg(0, seccomp.MASKED_EQ, CLONE_THREAD, 0))
    # clone3 passes its flags in memory that BPF cannot read: make glibc fall back to clone().
    try:
        filt.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    except (OSError, RuntimeError, ValueError):
        pass
    with tempfile.TemporaryFile() as handle:
        filt.export_bpf(handle)
        handle.seek(0)
        return _signal_guard(seccomp) + handle.read()


# Placeholders for the child's own pid in the signal guard: each child writes its pid (and its
# negation, a process group) over them before it installs the filter (zygote.Zygote._child).
# Neither value is a pid (pid_max is at most 2**22) nor a constant of the libseccomp program.
SELF_PID = 0x7A5E1F00
NEG_SELF_PID = -SELF_PID & 0xFFFFFFFF

F_SETOWN, F_SETSIG, F_SETOWN_EX = 8, 10, 15
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
_LD_W_ABS, _JEQ_K, _RET_K = 0x20, 0x15, 0x06


def pid_slots(program: bytes) -> dict[str, list[int]]:
    """Indices of the instructions whose constant the child replaces: with its pid ("self") or
    its negation ("group"); the zygote receives them in its configuration."""
    slots: dict[str, list[int]] = {"self": [], "group": []}
    for index in range(len(program) // 8):
        code, _, _, k = struct.unpack_from("=HBBI", program, 8 * index)
        if code == _JEQ_K and k in (SELF_PID, NEG_SELF_PID):
            slots["self" if k == SELF_PID else "group"].append(index)
    return slots


def _signal_guard(seccomp) -> bytes:
    """BPF run before the libseccomp program: signals only to the child itself.

    Without a uid switch (a host that is not root) a child has the uid of its zygote, so the
    kernel let it kill the zygote, or every process of that uid with ``kill(-1, ...)``. libseccomp
    cannot compare an argument with a value known only in the child (its pid), so this part is
    written here, with placeholders the child patches: ``kill`` only to itself, its process group
    (``0`` or ``-pid``); ``tgkill``, ``rt_sigqueueinfo`` and ``rt_tgsigqueueinfo`` only within
    itself; ``tkill`` and ``pidfd_send_signal`` denied; and ``fcntl`` may not name a signal
    recipient (F_SETOWN, F_SETOWN_EX, F_SETSIG), which would send SIGIO (or any signal) to
    another process. Only the low 32 bits of the arguments are compared, as the kernel reads a
    pid_t or a command. Other architectures fall through to the libseccomp program.
    """
    arch = seccomp.system_arch()
    nr = {name: seccomp.resolve_syscall(arch, name) for name in
          ("kill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "tkill", "pidfd_send_signal", "fcntl")}
    low = 4 if sys.byteorder == "big" else 0
    arg0, arg1 = 16 + low, 24 + low  # struct seccomp_data: nr, arch, instruction_pointer, args[6]
    eperm = SECCOMP_RET_ERRNO | errno.EPERM
    program = [
        ("ld", 4), ("jeq", arch, None, "end"), ("ld", 0),
        ("jeq", nr["kill"], "kill", None), ("jeq", nr["tgkill"], "tgid", None),
        ("jeq", nr["rt_sigqueueinfo"], "tgid", None), ("jeq", nr["rt_tgsigqueueinfo"], "tgid", None),
        ("jeq", nr["tkill"], "deny", None), ("jeq", nr["pidfd_send_signal"], "deny", None),
        ("jeq", nr["fcntl"], "fcntl", "end"),
        "kill", ("ld", arg0), ("jeq", 0, "allow", None), ("jeq", SELF_PID, "allow", None),
        ("jeq", NEG_SELF_PID, "allow", "deny"),
        "tgid", ("ld", arg0), ("jeq", SELF_PID, "allow", "deny"),
        "fcntl", ("ld", arg1), ("jeq", F_SETOWN, "deny", None), ("jeq", F_SETOWN_EX, "deny", None),
        ("jeq", F_SETSIG, "deny", "end"),
        "allow", ("ret", SECCOMP_RET_ALLOW),
        "deny", ("ret", eperm),
        "end",
    ]
    return _assemble(program)


def _assemble(program: list) -> bytes:
    """Classic BPF from ("ld", offset), ("jeq", k, true, false), ("ret", k) and label strings.
    A jump target of None is the next instruction; jumps go forward only, as BPF's do."""
    labels, index = {}, 0
    for item in program:
        if isinstance(item, str):
            labels[item] = index
        else:
            index += 1
    out, index = [], 0
    for item in program:
        if isinstance(item, str):
            continue
        if item[0] == "ld":
            out.append(struct.pack("=HBBI", _LD_W_ABS, 0, 0, item[1]))
        elif item[0] == "ret":
            out.append(struct.pack("=HBBI", _RET_K, 0, 0, item[1]))
        else:
            _, k, true, false = item
            jt, jf = (0 if t is None else labels[t] - index - 1 for t in (true, false))
            if not (0 <= jt <= 255 and 0 <= jf <= 255):
                raise ValueError("BPF jump out of range")
            out.append(struct.pack("=HBBI", _JEQ_K, jt, jf, k))
        index += 1
    return b"".join(out)
