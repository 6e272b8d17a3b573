"""Soak test: 10,000 executions in a row leave no zombie, no leaked descriptor, no worker growth."""

from __future__ import annotations

import os
import sys

import pytest

psutil = pytest.importorskip("psutil")

from mucode_env.problem import TestCase  # noqa: E402
from mucode_env.sandbox import Job, Sandbox, SandboxConfig, SandboxLimits, Status  # noqa: E402
from mucode_env.sandbox.jail import bwrap_path  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux") or bwrap_path() is None,
                       reason="needs Linux and bubblewrap"),
]

N_EXECUTIONS = 10_000
BATCH = 200
RSS_GROWTH_LIMIT = 8 << 20  # bytes per zygote over the whole soak



def _zygotes(sandbox: Sandbox) -> list:
    found = []
    for pid in sandbox.worker_pids():
        for proc in psutil.Process(pid).children(recursive=True):
            if proc.name().startswith("python") and "zygote" in " ".join(proc.cmdline()):
                found.append(proc)
    return found


def _fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _snapshot(sandbox: Sandbox) -> dict:
    zygotes = _zygotes(sandbox)
    return {
        "host_fds": _fd_count(os.getpid()),
        "zygote_pids": [z.pid for z in zygotes],
        "zygote_fds": [_fd_count(z.pid) for z in zygotes],
        "zygote_rss": [z.memory_info().rss for z in zygotes],
        "jail_procs": sorted(p.pid for pid in sandbox.worker_pids() for p in psutil.Process(pid).children(recursive=True)),
    }


def _zombies() -> list[int]:
    me = psutil.Process()
    return [p.pid for p in me.children(recursive=True) if p.status() == psutil.STATUS_ZOMBIE]


# A mix: passing, failing, raising, printing, writing scratch files, using threads.
PROGRAMS = [
    ("def f(x):\n    return x * 2\n", lambda i: str(2 * i)),
    ("def f(x):\n    return x + 1\n", lambda i: str(i)),  # wrong answer
    ("def f(x):\n    print('debug', x)\n    return [x] * 3\n", lambda i: str([i] * 3)),
    ("def f(x):\n    return 1 // (x - x)\n", lambda i: "0"),  # ZeroDivisionError
    ("import os\ndef f(x):\n    open('s%d' % x, 'w').write('x' * 1000)\n    return sorted(os.listdir('.'))\n",
     lambda i: repr([f"s{i}"])),
    ("import threading\ndef f(x):\n    out = []\n    t = threading.Thread(target=out.append, args=(x,))\n"
     "    t.start()\n    t.join()\n    return out\n", lambda i: str([i])),
]


def _job(i: int) -> Job:
    code, expected = PROGRAMS[i % len(PROGRAMS)]
    # distinct code per execution so that nothing is served from the cache
    return Job(code + f"# {i}\n", (TestCase.equals(f"f({i})", expected(i)),), limits=SandboxLimits(per_test_s=2.0))


def test_ten_thousand_executions_leak_nothing():
    config = SandboxConfig(tier="bwrap", cache_size=0, max_executions_per_worker=10 ** 9)
    with Sandbox(config) as sandbox:
        sandbox.execute([_job(i) for i in range(BATCH)])  # warm-up: pages faulted in, caches filled
        before = _snapshot(sandbox)
        # per worker: the zygote and the one for programs that name a preloaded package (numpy)
        assert len(before["zygote_pids"]) == 2 * sandbox.n_workers
        statuses: dict[Status, int] = {}
        done = 0
        while done < N_EXECUTIONS:
            results = sandbox.execute([_job(done + i) for i in range(BATCH)])
            for result in results:
                statuses[result.status] = statuses.get(result.status, 0) + 1
            done += BATCH
            # a hostile one now and then: timeout, fork attempt, memory bomb
            for code in ("def f():\n    while True:\n        pass\n# %d\n" % done,
                         "import os\nos.fork()\n# %d\n" % done,
                         "def f():\n    return bytearray(10**10)\n# %d\n" % done):
                sandbox.run(code, [TestCase.equals("f()", "1")], limits=SandboxLimits(per_test_s=0.05, total_s=0.5))
        after = _snapshot(sandbox)
        assert Status.SANDBOX_ERROR not in statuses
        assert statuses[Status.PASSED] > N_EXECUTIONS // 3
        assert sandbox.stats["restarts"] == 0
        assert after["zygote_pids"] == before["zygote_pids"]
        assert after["jail_procs"] == before["jail_procs"]  # bwrap, init, zygotes per worker; no stragglers
        assert after["host_fds"] == before["host_fds"]
        assert after["zygote_fds"] == before["zygote_fds"]
        for rss_before, rss_after in zip(before["zygote_rss"], after["zygote_rss"]):
            assert rss_after - rss_before < RSS_GROWTH_LIMIT
        assert _zombies() == []
    assert _zombies() == []
