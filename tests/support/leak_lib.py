"""Leak measurement shared by tests/linux/test_leaks.py (a few thousand cycles)
and stress/leaks.py (100,000 cycles and more).

One cycle = what a program does with portres, good paths and bad:
acquire a 2-port block (TCP or UDP in turn), a socket from it, associate +
bind another, a third refused (block full: EADDRINUSE; every 10th cycle, as
it costs two sock_diag dumps), an overlapped
associate, bad arguments (ValueError), a dead token (ENOENT), then release
(res.close() or the raw release(sock, token) in turn) and close everything.

Measured: open descriptors, RSS, the C heap (glibc mallinfo2: the
extension's malloc'ed memory, which tracemalloc does not see), Python
memory (tracemalloc) and the number of objects the garbage collector
tracks (gc.get_objects(); sys.gettotalrefcount exists only on debug builds).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import socket
import tracemalloc
from typing import Any, Dict, List

import portres


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (n, ctypes.c_size_t)
        for n in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


_mallinfo2: Any = None
_mallinfo2_looked_up = False


def _find_mallinfo2() -> Any:
    """glibc's mallinfo2, or None: looked up on first use, never at import
    (there is no libc to load on Windows, and the module must import there)."""
    global _mallinfo2, _mallinfo2_looked_up
    if not _mallinfo2_looked_up:
        _mallinfo2_looked_up = True
        name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(name or "libc.so.6")
        except OSError:
            libc = None
        _mallinfo2 = getattr(libc, "mallinfo2", None)
        if _mallinfo2 is not None:
            _mallinfo2.restype = _Mallinfo2
    return _mallinfo2


def c_heap() -> int:
    """Bytes malloc'ed and not freed (glibc); -1 when unknown."""
    mallinfo2 = _find_mallinfo2()
    if mallinfo2 is None:
        return -1
    m = mallinfo2()
    return int(m.uordblks + m.hblkhd)


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def py_mem() -> int:
    """Python memory traced by tracemalloc, less what this module holds (the
    samples themselves); -1 when not tracing."""
    if not tracemalloc.is_tracing():
        return -1
    snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, __file__)])
    return sum(stat.size for stat in snap.statistics("filename"))


def snapshot() -> Dict[str, int]:
    gc.collect()
    return {"fds": fds(), "rss": rss(), "c_heap": c_heap(), "py_mem": py_mem(), "gc_objects": len(gc.get_objects())}


def cycle(i: int) -> None:
    protocol = "udp" if i % 2 else "tcp"
    kind = socket.SOCK_DGRAM if i % 2 else socket.SOCK_STREAM
    res = portres.acquire(2, protocol=protocol)
    a = res.socket(socket.AF_INET6 if i % 4 < 2 else socket.AF_INET)
    b = socket.socket(socket.AF_INET, kind)
    portres.associate(b, res.token)
    portres.bind(b, ("127.0.0.1", 0))
    c = socket.socket(socket.AF_INET, kind)
    if i % 10 == 0:
        try:
            res.bind(c)  # the block is full (a slow path: ~2 ms)
            raise AssertionError("a third port from a 2-port block")
        except OSError:
            pass
    op = portres.associate_nowait(c, res.token)
    op.result(0)
    del op
    try:
        portres.associate(c, 0)  # bad argument
    except ValueError:
        pass
    if i % 3 == 0:
        with socket.socket(socket.AF_INET, kind) as d:
            portres.release(d, res.token)
    else:
        res.close()
    try:
        portres.associate(c, res.token)  # dead token
    except OSError:
        pass
    for s in (a, b, c):
        s.close()
    res.close()


def run(cycles: int, samples: int = 20, warmup: int = 500, trace: bool = True) -> List[Dict[str, int]]:
    """Warm up, then CYCLES cycles; SAMPLES + 1 snapshots, evenly spaced."""
    for i in range(warmup):
        cycle(i)
    if trace:
        tracemalloc.start()
    out = [dict(snapshot(), cycle=0)]
    step = max(1, cycles // samples)
    done = 0
    while done < cycles:
        n = min(step, cycles - done)
        for i in range(done, done + n):
            cycle(i)
        done += n
        out.append(dict(snapshot(), cycle=done))
    if trace:
        tracemalloc.stop()
    return out


def growth(points: List[Dict[str, int]]) -> Dict[str, float]:
    """Last minus first, and the least-squares slope per 1,000 cycles over
    the second half (after allocator caches settle)."""
    out: Dict[str, float] = {}
    half = points[len(points) // 2 :]
    for key in ("fds", "rss", "c_heap", "py_mem", "gc_objects"):
        out[key] = points[-1][key] - points[0][key]
        xs = [p["cycle"] for p in half]
        ys = [p[key] for p in half]
        n = len(xs)
        mx, my = sum(xs) / n, sum(ys) / n
        den = sum((x - mx) ** 2 for x in xs) or 1
        out[key + "_per_1k"] = 1000 * sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den
    return out


def stale_associations(n: int, res=None) -> Dict[str, int]:
    """N sockets associated with one live reservation and closed without a
    bind (a program that gives up on a socket): C heap before/after."""
    own = res is None
    if own:
        res = portres.acquire(1)
    try:
        for _ in range(200):
            s = socket.socket()
            portres.associate(s, res.token)
            s.close()
        before = c_heap()
        for _ in range(n):
            s = socket.socket()
            portres.associate(s, res.token)
            s.close()
        return {"n": n, "c_heap_before": before, "c_heap_after": c_heap()}
    finally:
        if own:
            res.close()
