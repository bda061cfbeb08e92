"""Threads hammer shared reservations at once: binding from them, acquiring
and closing blocks, associating sockets by token, releasing blocks other
threads are using.  No side of a port (IPv4, IPv6) is ever live on two
sockets, no descriptor is leaked, nothing crashes.  Runs on every build; on
a free-threaded build (3.13t, the GIL off) the threads really run in
parallel in the C code (.ci/run runs the suite there too)."""

from __future__ import annotations

import errno
import gc
import os
import random
import socket
import sys
import sysconfig
import threading
import time

import pytest

import portres
from tests.support import LINUX, open_fds

FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
SECONDS = float(os.environ.get("PORTRES_HAMMER_SECONDS", "4"))
THREADS = 8

# What a thread may legitimately meet when another thread closed the block
# it uses, or the block is full: the error classes, by errno.
EXPECTED = {errno.EADDRINUSE, errno.ENOENT, errno.EBADF}


def _sides(sock: socket.socket) -> tuple:
    """The sides of its port a socket of a block holds: IPv4 (AF_INET), IPv6
    (a V6ONLY AF_INET6 socket), both (a dual-stack one)."""
    if sock.family == socket.AF_INET:
        return (4,)
    return (6,) if sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) else (4, 6)


class Live:
    """(protocol, port, side) -> the socket live on it, checked on every
    hand-out."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.socks: dict = {}
        self.twice: list = []

    def add(self, proto: str, sock: socket.socket) -> None:
        keys = [(proto, sock.getsockname()[1], side) for side in _sides(sock)]
        with self.lock:
            for key in keys:
                if key in self.socks:
                    self.twice.append(key)
                self.socks[key] = sock

    def close(self, proto: str, sock: socket.socket) -> None:
        # closed under the lock: a port is handed out again only after its
        # socket is closed, so a hand-out that finds the key here is live twice
        keys = [(proto, sock.getsockname()[1], side) for side in _sides(sock)]
        with self.lock:
            for key in keys:
                if self.socks.get(key) is sock:
                    del self.socks[key]
            sock.close()


def _hammer(seconds: float) -> dict:
    live = Live()
    stop = threading.Event()
    unexpected: list = []
    counts = {"bound": 0, "associated": 0, "acquired": 0, "released": 0, "refused": 0}
    counts_lock = threading.Lock()
    shared_lock = threading.Lock()
    shared = {p: [portres.acquire(8, protocol=p) for _ in range(2)] for p in ("tcp", "udp")}
    retired: list = []

    def bump(name: str) -> None:
        with counts_lock:
            counts[name] += 1

    def pick(proto: str):
        with shared_lock:
            return random.choice(shared[proto])

    def replace(proto: str, old) -> None:
        new = portres.acquire(8, protocol=proto)
        with shared_lock:
            blocks = shared[proto]
            if old in blocks:
                blocks[blocks.index(old)] = new
                retired.append(old)
                return
        new.close()

    def worker(seed: int) -> None:
        rnd = random.Random(seed)
        mine: list = []  # (proto, socket) this thread holds
        kind = {"tcp": socket.SOCK_STREAM, "udp": socket.SOCK_DGRAM}
        try:
            while not stop.is_set():
                proto = rnd.choice(("tcp", "udp"))
                op = rnd.random()
                try:
                    if op < 0.35:  # a socket from a shared block
                        res = pick(proto)
                        fam = rnd.choice((socket.AF_INET, socket.AF_INET6))
                        s = res.socket(fam)
                        live.add(proto, s)
                        mine.append((proto, s))
                        bump("bound")
                    elif op < 0.55:  # associate by token, then bind
                        res = pick(proto)
                        s = socket.socket(socket.AF_INET6, kind[proto])
                        try:
                            if rnd.random() < 0.5:
                                portres.associate(s, res.token)
                            else:
                                portres.associate_nowait(s, res.token).result(5)
                            portres.bind(s, ("::", 0))
                        except BaseException:
                            s.close()
                            raise
                        live.add(proto, s)
                        mine.append((proto, s))
                        bump("associated")
                    elif op < 0.65:  # a block of its own, used and closed
                        with portres.acquire(rnd.randint(1, 16), protocol=proto) as res:
                            s = res.socket()
                            live.add(proto, s)
                            live.close(proto, s)
                        bump("acquired")
                    elif op < 0.69:  # close a shared block others are using
                        res = pick(proto)
                        if rnd.random() < 0.5:
                            res.close()
                        else:
                            with socket.socket(socket.AF_INET, kind[proto]) as s:
                                try:
                                    portres.release(s, res.token)
                                except OSError as exc:
                                    if exc.errno != errno.ENOENT:
                                        raise
                        replace(proto, res)
                        bump("released")
                    elif mine:  # close one of its sockets
                        p, s = mine.pop(rnd.randrange(len(mine)))
                        live.close(p, s)
                except ValueError as exc:  # "... is closed": another thread closed it
                    if "closed" not in str(exc):
                        raise
                    bump("refused")
                except OSError as exc:
                    if exc.errno not in EXPECTED:
                        raise
                    bump("refused")
                while len(mine) > 12:
                    p, s = mine.pop(0)
                    live.close(p, s)
        except BaseException as exc:
            unexpected.append(repr(exc))
            stop.set()
        finally:
            for p, s in mine:
                live.close(p, s)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not stop.is_set():
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join(60)
    alive = [t.name for t in threads if t.is_alive()]
    for blocks in shared.values():
        for res in blocks:
            res.close()
    for res in retired:
        res.close()
    return {"counts": counts, "twice": live.twice, "unexpected": unexpected, "alive": alive, "left": len(live.socks)}


@pytest.mark.skipif(not LINUX, reason="counts descriptors in /proc/self/fd")
def test_threads_share_acquire_close_and_associate_at_once():
    before = open_fds()
    out = _hammer(SECONDS)
    gc.collect()
    assert out["alive"] == [], "threads hung"
    assert out["unexpected"] == [], out["unexpected"][:5]
    assert out["twice"] == [], f"ports live on two sockets at once: {out['twice'][:10]}"
    assert out["left"] == 0
    c = out["counts"]
    assert c["bound"] > 100 and c["associated"] > 50 and c["acquired"] > 20 and c["released"] > 5, c
    assert open_fds() == before, "descriptors leaked"


@pytest.mark.skipif(not FREE_THREADED, reason="a free-threaded (--disable-gil) CPython build")
def test_importing_portres_keeps_the_gil_off():
    import subprocess

    code = (
        "import sys, warnings; warnings.simplefilter('error'); import portres, portres._portres; "
        "print(sys._is_gil_enabled())"
    )
    env = dict(os.environ)
    env.pop("PYTHON_GIL", None)  # PYTHON_GIL=0 would hide a module that turns it back on
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False", proc.stdout + proc.stderr


@pytest.mark.skipif(not LINUX, reason="counts descriptors in /proc/self/fd")
def test_threads_share_one_overlapped_operation():
    # Several threads at once on one Overlapped: done(), wait(), result(),
    # cancel() and its event, for an associate and an acquire; each gets the
    # one result, nothing crashes or leaks.
    before = open_fds()
    errors: list = []
    for round_ in range(150):
        with portres.acquire(2) as res, socket.socket() as s:
            if round_ % 2:
                op = portres.associate_nowait(s, res.token)
            else:
                op = portres._portres.acquire_port_reservation(portres._portres.TCP, 0, 1, True)
            got: list = []
            barrier = threading.Barrier(4)

            def use(k: int, op, got: list, barrier: threading.Barrier) -> None:
                try:
                    barrier.wait(5)
                    if k == 0:
                        op.cancel()
                    got.append((op.done(), op.wait(1), op.event >= 0))
                    r = op.result(1)
                    got.append(r)
                except BaseException as exc:
                    errors.append(repr(exc))

            threads = [threading.Thread(target=use, args=(k, op, got, barrier)) for k in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            results = [g for g in got if not isinstance(g, tuple)]
            flags = [g for g in got if isinstance(g, tuple)]
            assert all(f == (True, True, True) for f in flags), flags
            assert len(results) == 4
            if round_ % 2:
                assert results == [None] * 4
            else:  # the one reservation, the same object in every thread
                assert all(r is results[0] for r in results)
                results[0].close()
            op = results = None  # the last operation's eventfd goes with it
    assert errors == []
    assert open_fds() == before, "descriptors leaked"


# A thread releases a block by token (portres.release) while its owner's
# last reference goes (the PortReservation freed).  The releasing thread does
# not hold the block: once it lets go of the block's lock the owner may free
# it.  Run in a child whose glibc poisons freed memory (and keeps no
# per-thread cache that would skip that), and which forks after every round:
# a block freed while still on the unlisted list, or touched once freed,
# derails the list fork() walks, and the child crashes.  Under the
# AddressSanitizer build (.ci/sanitize.sh) the child reports the use itself.
_RELEASE_WHILE_FREED = r"""
import os, socket, sys, threading
import portres
sys.setswitchinterval(1e-5)  # the GIL changes hands within the release call
found = missed = 0
s = socket.socket()
for _ in range(int(sys.argv[1])):
    res = portres.acquire(64)  # 64 placeholders: a release takes a while
    token, started = res.token, []
    def release():
        global found, missed
        started.append(1)
        try:
            portres.release(s, token)
            found += 1
        except FileNotFoundError:  # the owner's free closed it first
            missed += 1
    t = threading.Thread(target=release)
    t.start()
    while not started:
        pass
    del res  # the last reference: portres_block_free, the GIL released
    t.join()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
print(found, missed)
"""


@pytest.mark.skipif(not LINUX, reason="glibc's malloc tunables, fork()")
def test_release_by_token_while_the_owner_frees_the_block():
    import platform
    import subprocess

    from tests.support import child_env

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("poisoning freed memory needs glibc's malloc tunables")
    env = child_env({"GLIBC_TUNABLES": "glibc.malloc.tcache_count=0:glibc.malloc.perturb=165"})
    proc = subprocess.run(
        [sys.executable, "-c", _RELEASE_WHILE_FREED, "300"], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, f"child died ({proc.returncode}):\n{proc.stderr[-3000:]}"
    found, missed = map(int, proc.stdout.split())
    assert found + missed == 300
    assert found > 0, "no release found its block: the race was never run"
