"""The seccomp filter applied to every sandbox child, compiled on the host with pyseccomp.

The host exports the filter as raw BPF bytes; the zygote (standard library only) installs it with
``prctl(PR_SET_SECCOMP)`` in each child after ``PR_SET_NO_NEW_PRIVS``. Threads stay allowed
(numpy, ``threading``); creating processes, sockets and every kernel interface a program could
use to escape or to reach other processes is denied with EPERM.
"""

from __future__ import annotations

import errno
import functools
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
        return handle.read()
