#!/usr/bin/env python3
"""portres benchmarks: one command, one table of ratios.

    python bench/run.py            # everything (about two minutes)
    python bench/run.py --quick    # tiny counts: checks the harness only (CI)
    python bench/run.py --json out.json

Every ratio is portres / reference, both sides measured in the same process,
alternately (A B, B A, ...), after warm-up rounds; each figure is the median
of several repetitions timed with time.perf_counter_ns (or, for the C
baselines, clock_gettime(CLOCK_MONOTONIC) inside C).  Below 1.00 portres is
faster.  No test asserts a timing.

Each section runs in its own child process; as root with unshare(1), inside
a fresh private network namespace (lo up, default sysctls), so that the
host's sockets cannot crowd the ephemeral range and what one section leaves
behind (TIME_WAIT sockets of ephemeral_port_reserve) cannot slow another.
The C baseline (bench/_benchhelp.c) is compiled with cc into a temporary
directory at bench time.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# --portres PATH: benchmark the package in PATH (say an older checkout with
# its extension built in place) instead of the installed one.
if os.environ.get("PORTRES_BENCH_PATH"):
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
    sys.path.insert(0, os.environ["PORTRES_BENCH_PATH"])
ns = time.perf_counter_ns
QUICK = False
SECTIONS = ("socket", "reuse", "floor", "acquire", "peers", "call", "crowded", "memory",
            "import",  # import: issue 14
            "connect",  # connect: issue 13
            "held")


# ----------------------------------------------------------------- helpers

def build_helper():
    """Compile bench/_benchhelp.c (with src/linux/sockdiag.c) into a temporary
    directory and import it."""
    tmp = tempfile.mkdtemp(prefix="portres-bench-")
    out = os.path.join(tmp, "_benchhelp" + sysconfig.get_config_var("EXT_SUFFIX"))
    cc = os.environ.get("CC", "cc")
    src = os.path.join(os.path.dirname(HERE), "src")
    cmd = [cc, "-O2", "-shared", "-fPIC", "-I", sysconfig.get_paths()["include"], "-I", src,
           os.path.join(HERE, "_benchhelp.c"),
           # the backend's own sock_diag dump, not a copy
           os.path.join(src, "linux", "sockdiag.c"), os.path.join(src, "error.c"),
           "-o", out]
    subprocess.run(cmd, check=True)
    sys.path.insert(0, tmp)
    import _benchhelp  # noqa: E402

    return _benchhelp


def paired(fa, fb, reps, warmup=2):
    """Run fa and fb (each returns the ns of one timed batch) alternately;
    return their medians."""
    a, b = [], []
    for i in range(warmup + reps):
        if i % 2:
            xb = fb()
            xa = fa()
        else:
            xa = fa()
            xb = fb()
        if i >= warmup:
            a.append(xa)
            b.append(xb)
    return statistics.median(a), statistics.median(b)


def rotated(fns, reps, warmup=2):
    """paired() for more than two: each round runs every function once, in
    an order rotated by one from the round before; their medians."""
    out = [[] for _ in fns]
    for i in range(warmup + reps):
        for k in range(len(fns)):
            j = (i + k) % len(fns)
            x = fns[j]()
            if i >= warmup:
                out[j].append(x)
    return [statistics.median(x) for x in out]


def row(name, portres_ns, ref_ns, ref, how="", unit="per op"):
    return {"name": name, "portres_ns": portres_ns, "ref_ns": ref_ns, "ref": ref,
            "how": how, "unit": unit, "ratio": portres_ns / ref_ns if ref_ns else None}


def v6only_needed():
    try:
        with open("/proc/sys/net/ipv6/bindv6only") as f:
            return int(f.read().strip()) != 0
    except OSError:
        return False


def n(full, quick):
    return quick if QUICK else full


# ---------------------------------------------------------------- sections

def section_socket(helper):
    import portres

    rows = []
    N = n(256, 4)
    reps = n(31, 2)

    def held_portres(host=""):
        def run():
            res = portres.acquire(N)
            socks = []
            t0 = ns()
            for _ in range(N):
                socks.append(res.socket(socket.AF_INET, host))
            t1 = ns()
            for s in socks:
                s.close()
            res.close()
            return (t1 - t0) / N
        return run

    def held_plain():
        socks = []
        t0 = ns()
        for _ in range(N):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        t1 = ns()
        for s in socks:
            s.close()
        return (t1 - t0) / N

    a, b = paired(held_portres(), held_plain, reps)
    rows.append(row(f"res.socket(), {N} held", a, b,
                    'socket.socket() + bind(("127.0.0.1", 0))',
                    "per socket; a fresh block of N per round"))
    a, b = paired(held_portres("127.0.0.1"), held_plain, reps)
    rows.append(row(f'res.socket(host="127.0.0.1"), {N} held', a, b,
                    'socket.socket() + bind(("127.0.0.1", 0))', "per socket"))

    def held_inline():   # res.socket()'s fast path without its method frame
        res = portres.acquire(N)
        bind_new, inet, stream = res._res._bind_new, socket.AF_INET, socket.SOCK_STREAM
        socks = []
        t0 = ns()
        for _ in range(N):
            s = socket.socket(inet, stream)
            bind_new(s.fileno(), inet, "")
            socks.append(s)
        t1 = ns()
        for s in socks:
            s.close()
        res.close()
        return (t1 - t0) / N

    if hasattr(portres._portres.PortReservation, "_bind_new"):
        a, b = paired(held_inline, held_plain, reps)
        rows.append(row(f"socket.socket() + res._res._bind_new(), {N} held", a, b,
                        'socket.socket() + bind(("127.0.0.1", 0))',
                        "res.socket() inlined: what the Python method layer costs"))

    # The kernel side alone: the same loops in C, no Python.
    def c_shared():
        with portres.acquire(N) as res:
            hold, _close = helper.bare_socket_bind(N, res.start)
        return hold / N

    def c_plain():
        hold, _close = helper.bare_socket_bind(N, 0)
        return hold / N

    a, b = paired(c_shared, c_plain, reps)
    rows.append(row(f"kernel floor, {N} held (C)", a, b,
                    "socket() + bind(127.0.0.1:0) (C)",
                    "C loop: socket + SO_REUSEPORT + bind(port held by a placeholder)"))

    M = n(5000, 4)

    def c_cycle_tracked():   # the floor section's step d
        with portres.acquire(1) as res:
            return helper.floor_cycle(M, socket.SOCK_STREAM, res.start, 1, "d")[0] / M

    def c_cycle_plain():
        return helper.floor_cycle(M, socket.SOCK_STREAM, 0, 1, "a")[0] / M

    a, b = paired(c_cycle_tracked, c_cycle_plain, n(15, 2))
    rows.append(row("kernel floor, cycle with release tracking (C)", a, b,
                    "socket() + bind(127.0.0.1:0) + close() (C)",
                    "C loop: socket + SO_REUSEPORT + bind(held port) + epoll_ctl(ADD) + close"))

    for block in (1, 64):
        def cycle_portres(block=block):
            with portres.acquire(block) as res:
                t0 = ns()
                for _ in range(M):
                    s = res.socket()
                    s.close()
                t1 = ns()
            return (t1 - t0) / M

        def cycle_plain():
            t0 = ns()
            for _ in range(M):
                s = socket.socket()
                s.bind(("127.0.0.1", 0))
                s.close()
            t1 = ns()
            return (t1 - t0) / M

        a, b = paired(cycle_portres, cycle_plain, n(15, 2))
        rows.append(row(f"bind-close-rebind cycle, block of {block}", a, b,
                        "socket() + bind(0) + close()",
                        f"per cycle; {M} cycles per block, its first reclaim (a sock_diag dump) included"))
    return {"rows": rows}


HOLD_ELSEWHERE = r"""
import os, resource, socket, sys
n = int(sys.argv[1])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 2 * n + 64)), hard))
keep = []
for _ in range(n):
    t = socket.socket(socket.AF_INET6)
    t.bind(("::", 0))
    t.listen(1)
    u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    u.bind(("::", 0))
    keep += [t, u]
print("ready", flush=True)
sys.stdin.read()
"""


def hold_elsewhere(count):
    """COUNT TCP listeners and COUNT UDP sockets held in other, new network
    namespaces (by children of at most 8192 of each: the hard RLIMIT_NOFILE
    may be low): they share the kernel's socket hash tables with ours, and
    nothing else.  Returns the children (close their stdin to end them), or
    None without unshare(1)."""
    if not can_netns():
        return None
    children = []
    for k in range(0, count, 8192):
        p = subprocess.Popen(["unshare", "--net", "--", sys.executable, "-c", HOLD_ELSEWHERE,
                              str(min(8192, count - k))],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        children.append(p)
        if p.stdout.readline().strip() != "ready":
            release_elsewhere(children)
            raise RuntimeError("a child holding sockets in another netns failed")
    return children


def release_elsewhere(children):
    for p in children:
        p.stdin.close()
        p.wait()


def section_reuse(helper):
    """A port of a block reused: res.socket() + close() again and again on a
    block of 1 and of 16, TCP and UDP, against socket() + bind(0) + close()
    of the same protocol, on an idle machine and with many sockets held in
    another network namespace (which a global sock_diag dump would walk)."""
    import portres

    rows = []
    M = n(5000, 4)
    reps = n(15, 2)
    elsewhere = n(16384, 64)
    types = {"tcp": socket.SOCK_STREAM, "udp": socket.SOCK_DGRAM}
    for load in ("idle", "crowded"):
        child = hold_elsewhere(elsewhere) if load == "crowded" else None
        if load == "crowded" and child is None:
            break
        try:
            for proto in ("tcp", "udp"):
                for block in (1, 16):
                    def cycle_portres(block=block, proto=proto):
                        with portres.acquire(block, protocol=proto) as res:
                            sock = res.socket
                            t0 = ns()
                            for _ in range(M):
                                s = sock()
                                s.close()
                            t1 = ns()
                        return (t1 - t0) / M

                    def cycle_plain(proto=proto):
                        typ, sock, addr = types[proto], socket.socket, ("127.0.0.1", 0)
                        t0 = ns()
                        for _ in range(M):
                            s = sock(socket.AF_INET, typ)
                            s.bind(addr)
                            s.close()
                        t1 = ns()
                        return (t1 - t0) / M

                    a, b = paired(cycle_portres, cycle_plain, reps)
                    where = ("idle" if load == "idle" else
                             f"{elsewhere} TCP listeners + {elsewhere} UDP sockets in other netns")
                    rows.append(row(f"reuse cycle, {proto}, block of {block}, {where}", a, b,
                                    "socket() + bind(0) + close()",
                                    f"per cycle: res.socket() + close(), {M} per block"))
        finally:
            if child is not None:
                release_elsewhere(child)
    return {"rows": rows}


# What each step of the floor section adds to the one before (the C loop
# of _benchhelp.c floor_cycle(), which mirrors src/linux/bind.c and
# reclaim.c); "a" alone is the plain cycle every row is divided by.
FLOOR_STEPS = {
    "a": "plain: socket() + bind(127.0.0.1:0) + close() (against itself: the noise)",
    "b": "shared port: SO_REUSEPORT + bind(0.0.0.0:P), P held by the block's placeholder",
    "c": "+ SO_COOKIE read before the bind",
    "d": "+ epoll item added before the bind (removed by the kernel at close)",
    "e": "+ the block's destroy listener (groups + cBPF port filter), drained, not waited for",
    "f": "+ waiting for the closed socket's destroy message (sched_yield, poll <= CLOSING_WAIT_MS)",
    "g": "+ the fdinfo read reclaim() makes before that wait (its own path)",
}


def section_floor(helper):
    """The reuse cycle of section reuse, in C, built up from the plain cycle
    one guarantee-bearing step at a time (bench/_benchhelp.c floor_cycle()),
    TCP and UDP, each step against the plain cycle of the same protocol,
    alternately, in one process.  The ports are held by a real block
    (portres.acquire(): its placeholders, dual-stack, SO_REUSEPORT, the UDP
    drop filter); the C loop does what res.socket() + close() make the
    kernel do, without the Python layer and the block's bookkeeping.  The
    floor of the issue 11 target: step f for a block of 1 (it waits for
    each message); for a block of 16, step e if its messages were in by
    the time it runs out, f when they are not (the JSON's "messages" say
    how often).  With at least 16k sockets in other network namespaces
    too, for the floor steps.  Each row also times the
    plain Python cycle (section reuse's reference) in turn with the two:
    python_bound is what a Python reuse cycle would cost against it if
    portres's Python layer cost what socket.socket()'s does and the
    kernel's work were this step's, nothing more."""
    import portres

    rows = []
    M = n(5000, 40)   # --quick: enough for a block of 16 to reclaim
    reps = n(15, 2)
    elsewhere = n(16384, 64)
    types = {"tcp": socket.SOCK_STREAM, "udp": socket.SOCK_DGRAM}
    plan = {"idle": [(1, st) for st in "abcdefg"] + [(16, st) for st in "defg"],
            "crowded": [(1, st) for st in "abdefg"] + [(16, st) for st in "ef"]}
    for load in ("idle", "crowded"):
        child = hold_elsewhere(elsewhere) if load == "crowded" else None
        if load == "crowded" and child is None:
            break
        where = "idle" if load == "idle" else f"{elsewhere} + {elsewhere} sockets in other netns"
        try:
            for proto in ("tcp", "udp"):
                typ = types[proto]
                for block, step in plan[load]:
                    how = [0, 0, 0, 0, 0]

                    def stepped(block=block, step=step, proto=proto, typ=typ, how=how):
                        if step == "a":
                            return helper.floor_cycle(M, typ, 0, 1, "a")[0] / M
                        with portres.acquire(block, protocol=proto) as res:
                            t, *counts = helper.floor_cycle(M, typ, res.start, block, step)
                        for i, c in enumerate(counts):
                            how[i] += c
                        return t / M

                    def plain(typ=typ):
                        return helper.floor_cycle(M, typ, 0, 1, "a")[0] / M

                    def py_plain(typ=typ):   # section reuse's reference: the 1.5x is of this
                        sock, inet, addr = socket.socket, socket.AF_INET, ("127.0.0.1", 0)
                        t0 = ns()
                        for _ in range(M):
                            s = sock(inet, typ)
                            s.bind(addr)
                            s.close()
                        return (ns() - t0) / M

                    a, b, p = rotated((stepped, plain, py_plain), reps)
                    r = row(f"floor {step}, {proto}, block of {block}, {where}", a, b,
                            "C: socket() + bind(127.0.0.1:0) + close()", FLOOR_STEPS[step],
                            unit="per cycle")
                    # The least a Python reuse cycle could cost against section reuse's
                    # reference: the plain Python cycle plus this step's kernel work (its
                    # time above the plain C cycle), all three timed in turn here.
                    r.update(step=step, proto=proto, block=block, load=load, py_plain_ns=p,
                             python_bound=(p + a - b) / p)
                    if sum(how):   # how the reuses found their message (warm-up rounds included)
                        r["messages"] = dict(zip(("drained", "after_yield", "after_poll", "missed", "overrun"),
                                                 how))
                    rows.append(r)
        finally:
            if child is not None:
                release_elsewhere(child)
    return {"rows": rows}


def section_connect(helper):
    """Connect churn (issue 13): Reservation.connect() from a block of 4
    against socket.create_connection(), to one local listener; a cycle is
    connect, accept, the first side closes, the other reads EOF and closes
    (bench/connect_churn.py's churn(), which also runs alone, on Windows
    too).  When the client closes first its port is in TIME_WAIT towards
    the listener, and the next connect from that port takes it over."""
    import connect_churn

    import portres

    rows = []
    M = n(2000, 4)
    reps = n(9, 2)
    with socket.socket() as srv, portres.acquire(4) as res:
        srv.bind(("127.0.0.1", 0))
        srv.listen(128)
        for closes_first in ("server", "client"):
            def run(connect, closes_first=closes_first):
                return 1e9 / connect_churn.churn(srv, connect, M, closes_first)

            a, b = paired(lambda: run(res.connect), lambda: run(socket.create_connection), reps)
            rows.append(row(f"connect churn, block of 4, the {closes_first} closes first", a, b,
                            "socket.create_connection() (an ephemeral port)",
                            f"per cycle: connect, accept, both closed; {M} cycles per batch",
                            unit="per cycle"))
    return {"rows": rows}


def ephemeral_range():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = map(int, f.read().split())
            return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def section_acquire(helper):
    """acquire(N) + close() against the same N ports bound and closed by a C
    loop.  A wildcard acquire lands on a random window, so the baseline
    binds a random window of the (otherwise empty) ephemeral range as well:
    both meet cold kernel hash buckets.  With start=S both bind the same
    window every time (warm)."""
    import random

    import portres

    rows = []
    v6 = 1 if v6only_needed() else 0
    lo, hi = ephemeral_range()
    rnd = random.Random(7)
    plan = [(1, "tcp", 0), (16, "tcp", 0), (256, "tcp", 0), (1024, "tcp", 0), (1024, "tcp", 1),
            (4096, "tcp", 0), (1024, "udp", 0)]
    if QUICK:
        plan = [(1, "tcp", 0), (16, "tcp", 0), (16, "tcp", 1), (16, "udp", 0)]
    types = {"tcp": socket.SOCK_STREAM, "udp": socket.SOCK_DGRAM}
    for count, proto, fixed in plan:
        reps = n(max(15, min(61, 16384 // count)), 2)
        fixed_start = lo + (hi - lo + 1 - count) // 2

        def pr(count=count, proto=proto, fixed=fixed, start=fixed_start):
            t0 = ns()
            res = portres.acquire(count, protocol=proto, start=start if fixed else 0)
            res.close()
            return ns() - t0

        def bare(count=count, proto=proto, fixed=fixed, start=fixed_start):
            if not fixed:
                start = rnd.randrange(lo, hi - count + 2)
            hold, close = helper.bare_hold(start, count, types[proto], v6, 0)
            return hold + close

        a, b = paired(pr, bare, reps)
        if count == 1 and not fixed and proto == "tcp":   # the same without the Python layer
            from portres import _portres

            def c_binding():
                t0 = ns()
                _portres.acquire_port_reservation(_portres.TCP, 0, 1).close()
                return ns() - t0

            c, d = paired(c_binding, bare, reps)
            rows.append(row("_portres.acquire_port_reservation(TCP, 0, 1).close() (C binding)", c, d,
                            "1 x (socket + bind + SO_REUSEPORT) + close, C loop",
                            "acquire(1) without portres.acquire()'s Python layer", unit="per call"))
        rows.append(row(f"acquire({count}{', start=S' if fixed else ''}) + close(), {proto}", a, b,
                        f"{count} x (socket + bind + SO_REUSEPORT) + close, C loop",
                        "whole call; the baseline's loop timed inside C, on "
                        + ("the same window S" if fixed else "a random window of the range")
                        + ("; portres adds a drop filter per UDP port" if proto == "udp" else ""),
                        unit="per call"))

    def udp_one():
        t0 = ns()
        portres.acquire(1, protocol="udp").close()
        return ns() - t0

    def udp_floor():
        return helper.udp_floor(1)

    a, b = paired(udp_one, udp_floor, n(61, 2))
    rows.append(row('acquire(1, protocol="udp") + close()', a, b,
                    "C: socket + bind(0) + SO_REUSEPORT + drop filter + close",
                    "whole call, no other UDP block open; the C floor attaches the same "
                    "filter (eBPF loaded once, or cBPF)", unit="per call"))

    def udp_floor_named():
        return helper.udp_floor(1, True)

    # The same floor, and the getsockname() any acquire of "a free port" makes
    # to learn which port the kernel chose (the first floor does not).
    a, b = paired(udp_one, udp_floor_named, n(61, 2))
    rows.append(row('acquire(1, protocol="udp") + close(), against the floor + getsockname()', a, b,
                    "C: socket + bind(0) + SO_REUSEPORT + drop filter + getsockname + close",
                    "as above, with the call that learns the port", unit="per call"))
    return {"rows": rows}


def section_peers(helper):
    import ephemeral_port_reserve
    import portpicker

    import portres

    rows = []
    B = n(64, 2)
    reps = n(9, 2)

    def portres_per_port(block):
        def run():
            t0 = ns()
            socks = []
            for _ in range(B // block):
                res = portres.acquire(block)
                for _ in range(block):
                    socks.append(res.socket(socket.AF_INET, "127.0.0.1"))
                socks.append(res)
            for s in socks:
                s.close()
            t1 = ns()
            return (t1 - t0) / B
        return run

    def portpicker_per_port():
        t0 = ns()
        socks = []
        for _ in range(B):
            port = portpicker.pick_unused_port()
            s = socket.socket()
            s.bind(("127.0.0.1", port))
            socks.append(s)
        for s in socks:
            s.close()
        t1 = ns()
        return (t1 - t0) / B

    def epr_per_port():
        t0 = ns()
        socks = []
        for _ in range(B):
            port = ephemeral_port_reserve.reserve()
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
            socks.append(s)
        for s in socks:
            s.close()
        t1 = ns()
        return (t1 - t0) / B

    for block in (1, B):
        a, b = paired(portres_per_port(block), portpicker_per_port, reps)
        rows.append(row(f"per held port, acquire({block}) + res.socket()", a, b,
                        "portpicker.pick_unused_port() + bind",
                        "whole life: get the port, bind a socket, close everything"))
    for block in (1, B):
        a, b = paired(portres_per_port(block), epr_per_port, reps)
        rows.append(row(f"per held port, acquire({block}) + res.socket()", a, b,
                        "ephemeral_port_reserve.reserve() + SO_REUSEADDR bind",
                        "whole life; each reserve() leaves a TIME_WAIT socket"))
    return {"rows": rows}


def section_call(helper):
    import portres
    from portres import _portres

    rows = []
    K = n(20000, 10)
    reps = n(15, 2)
    res = portres.acquire(1)
    sock = socket.socket()
    token = res.token
    portres.associate(sock, token)
    assoc = portres.associate
    raw = _portres.associate_port_reservation
    noop = helper.noop
    fd = sock.fileno()

    def p():
        t0 = ns()
        for _ in range(K):
            assoc(sock, token)
        return (ns() - t0) / K

    def r():
        t0 = ns()
        for _ in range(K):
            raw(fd, token)
        return (ns() - t0) / K

    def z():
        t0 = ns()
        for _ in range(K):
            noop(sock, token)
        return (ns() - t0) / K

    a, b = paired(p, z, reps)
    rows.append(row("portres.associate(sock, token), already associated", a, b,
                    "no-op C function(sock, token)", "per call"))
    a, b = paired(r, z, reps)
    rows.append(row("_portres.associate_port_reservation(fd, token) (C binding)", a, b,
                    "no-op C function(sock, token)", "per call"))
    sock.close()
    res.close()
    return {"rows": rows}


def section_held(helper):
    """The process's own load: each call with HELD blocks and HELD associated
    (unbound) sockets held by the process, against the same call with none
    held, alternately in one process.  A lookup that walked a list of blocks
    or associations would grow with HELD (before: 17x and 68x at 8000)."""
    import gc
    import resource

    import portres

    held_n = n(8000, 20)
    K = n(3000, 10)
    reps = n(9, 2)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 3 * held_n + 1000
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    own = portres.acquire(16)
    token = own.token
    held = {"blocks": [], "socks": []}

    def hold():
        held["blocks"] = [portres.acquire(1) for _ in range(held_n)]
        for r in held["blocks"]:
            s = socket.socket()
            portres.associate(s, r.token)
            held["socks"].append(s)

    def drop():
        for s in held["socks"]:
            s.close()
        for r in held["blocks"]:
            r.close()
        held["blocks"], held["socks"] = [], []

    def acq():
        t0 = ns()
        for _ in range(K):
            portres.acquire(1).close()
        return (ns() - t0) / K

    def assoc_bind():
        t0 = ns()
        for _ in range(K):
            s = socket.socket()
            portres.associate(s, token)
            portres.bind(s, ("127.0.0.1", 0))
            s.close()
        return (ns() - t0) / K

    def assoc_unbound():   # a stale association per socket: pruned from time to time
        t0 = ns()
        for _ in range(K):
            s = socket.socket()
            portres.associate(s, token)
            s.close()
        return (ns() - t0) / K

    def loaded(f):
        def run():
            hold()
            try:
                return f()
            finally:
                drop()
        return run

    def no_gc(f):   # as timeit does: the 16k held objects would make Python's collector dearer
        def run():
            gc.collect()
            gc.disable()
            try:
                return f()
            finally:
                gc.enable()
        return run

    def plain_cycle():   # another program's socket, in the same namespace
        t0 = ns()
        for _ in range(K):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            s.close()
        return (ns() - t0) / K

    def listening(blocks):
        def run():
            res = [portres.acquire(1) for _ in range(blocks)]
            for r in res:   # a reclaim joins the block's destroy listener
                r.socket().close()
                r.socket().close()
            try:
                return no_gc(plain_cycle)()
            finally:
                for r in res:
                    r.close()
        return run

    rows = []
    for blocks in (1, n(1000, 3)):
        a, b = paired(listening(blocks), no_gc(plain_cycle), reps, warmup=1)
        rows.append(row(f"plain TCP socket() + bind(0) + close(), while {blocks} block(s) listen for "
                        "destroy messages", a, b, "the same with no block", "same process, alternately",
                        "per cycle"))
    for name, f in (("acquire(1) + close()", acq),
                    ("socket() + associate(s, token) + bind(s) + close()", assoc_bind),
                    ("socket() + associate(s, token) + close(), never bound", assoc_unbound)):
        a, b = paired(loaded(no_gc(f)), no_gc(f), reps, warmup=1)
        rows.append(row(f"{name}, {held_n} blocks + {held_n} associated sockets held", a, b,
                        "the same with none held", "same process, alternately", "per call"))
    own.close()
    return {"rows": rows}


# Wildcard acquire in a crowded range: 90% of the ephemeral range is taken
# by plain bound TCP sockets.  The free 10% is a few windows of WINDOW ports
# (one per 8192 ports of range, at least one) and, for the rest, isolated
# single free ports spread evenly: a block of 1 fits almost anywhere, a block
# of 16 or 256 only in a window.
WINDOW = 256


def crowd(lo, span):
    """Take 90% of [lo, lo+span) with bound sockets, held by forked children
    (at most 15000 descriptors each: the hard RLIMIT_NOFILE may be low and
    not raisable).  Returns (release, free): call release() to end them."""
    import random

    free_budget = span // 10
    n_windows = max(1, span // 8192)
    free = set()
    rnd = random.Random(span)
    for w in range(n_windows):
        base = lo + (w * span) // n_windows + rnd.randrange(0, span // n_windows - WINDOW)
        free.update(range(base, base + WINDOW))
    singles = free_budget - len(free)
    if singles > 0:
        step = span / singles
        k = 0
        while len(free) < free_budget and k < singles * 2:
            p = lo + int(k * step + step / 2)
            if p not in free and all(q not in free for q in (p - 1, p + 1)):
                free.add(p)
            k += 1
    taken = [p for p in range(lo, lo + span) if p not in free]
    children = []
    for i in range(0, len(taken), 15000):
        ready_r, ready_w = os.pipe()
        stop_r, stop_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: hold its share until told to stop
            try:
                os.close(ready_r)
                os.close(stop_w)
                for _pid, other_w in children:   # or the earlier children never see EOF
                    os.close(other_w)
                keep = []
                for p in taken[i:i + 15000]:
                    s = socket.socket(socket.AF_INET6)
                    s.bind(("::", p))
                    keep.append(s)
                os.write(ready_w, b"x")
                os.read(stop_r, 1)
            finally:
                os._exit(0)
        os.close(ready_w)
        os.close(stop_r)
        if os.read(ready_r, 1) != b"x":
            raise RuntimeError("a crowding child failed")
        os.close(ready_r)
        children.append((pid, stop_w))

    def release():
        for pid, stop_w in children:
            os.close(stop_w)
            os.waitpid(pid, 0)

    return release, free


def crowded_child(span, blocks, reps):
    """In a private netns: set the range, crowd it, time acquire(B)."""
    import portres

    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    lo = 61000 - span if span < 28000 else 32768
    with open("/proc/sys/net/ipv4/ip_local_port_range", "w") as f:
        f.write(f"{lo} {lo + span - 1}")
    release, free = crowd(lo, span)
    out = {}
    for b in blocks:
        times, failed = [], 0
        for i in range(reps + 2):
            t0 = ns()
            try:
                res = portres.acquire(b)
            except OSError:      # a block that exists was not found
                failed += 1
                continue
            t1 = ns()
            ok = all(p in free for p in res.ports)
            res.close()
            assert ok, "acquired a taken port"
            if i >= 2:
                times.append(t1 - t0)
        out[str(b)] = statistics.median(times) if times else 0
        out[f"failed{b}"] = failed
    # The kernel's price of mapping the range: one sock_diag dump per family.
    helper = build_helper()
    out["dump"] = statistics.median(helper.diag_dump(1, lo, lo + span - 1)[0] for _ in range(reps))
    out["sockets"] = helper.diag_dump(1, lo, lo + span - 1)[1]
    # acquire(4) against a C loop that probes the same range with binds.
    import random
    rnd = random.Random(span)

    def pr4():
        t0 = ns()
        portres.acquire(4).close()
        return ns() - t0

    def c4():
        return helper.probe_acquire(4, lo, lo + span - 1, rnd.randrange(1 << 30))

    out["probe4_portres"], out["probe4_c"] = paired(pr4, c4, reps)
    release()
    return out


def section_crowded(helper):
    spans = [4096, 28232] if not QUICK else [512]
    blocks = [1, 16, 256] if not QUICK else [1, 16]
    reps = n(15, 2)
    table = {}
    for span in spans:
        code = (f"import sys; sys.path.insert(0, {HERE!r}); import run, json; "
                f"run.QUICK = {QUICK}; "
                f"print(json.dumps(run.crowded_child({span}, {blocks}, {reps})))")
        cmd = [sys.executable, "-c", code]
        if can_netns():
            cmd = ["unshare", "--net", "--"] + cmd
        else:
            return {"skipped": "needs root and unshare(1) for a private network namespace"}
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if out.returncode:
            raise RuntimeError(out.stderr)
        table[str(span)] = json.loads(out.stdout.strip().splitlines()[-1])
    rows = [row(f"wildcard acquire(4) + close(), {span}-port range 90% taken",
                t["probe4_portres"], t["probe4_c"], "C loop probing the range with binds",
                "per call; the same range, a random start each") for span, t in table.items()]
    return {"crowded": table, "blocks": blocks, "reps": reps + 2, "rows": rows}


def section_memory(helper):
    """Kernel and process memory per held port: in a fresh child process."""
    code = (f"import sys; sys.path.insert(0, {HERE!r}); import run, json; run.QUICK = {QUICK}; "
            "print(json.dumps(run.memory_child()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    if out.returncode:
        raise RuntimeError(out.stderr)
    return {"memory": json.loads(out.stdout.strip().splitlines()[-1])}


def meminfo():
    vals = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, v = line.split(":", 1)
            vals[k] = int(v.split()[0]) * 1024
    return vals


def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def slabs():
    out = {}
    try:
        with open("/proc/slabinfo") as f:
            for line in f.readlines()[2:]:
                parts = line.split()
                out[parts[0]] = (int(parts[1]), int(parts[3]))  # active_objs, objsize
    except OSError:
        pass
    return out


class _Mallinfo2(__import__("ctypes").Structure):
    _fields_ = [(name, __import__("ctypes").c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]


def c_heap():
    """Bytes malloc()ed and not freed (glibc mallinfo2), or None."""
    import ctypes

    try:
        fn = ctypes.CDLL(None).mallinfo2
    except (AttributeError, OSError):
        return None
    fn.restype = _Mallinfo2
    info = fn()
    return info.uordblks + info.hblkhd


def memory_child():
    """Per held port: kernel slab objects (/proc/slabinfo active objects, and
    /proc/meminfo Slab), RSS, descriptors, C heap (mallinfo2), Python heap
    (tracemalloc) and gc-tracked Python objects, for acquire(N) against N
    plain bound sockets.  Medians of several trials; other processes on the
    machine add noise to the slab figures."""
    import tracemalloc

    import portres

    N = n(4096, 64)
    trials = n(7, 1)
    result = {"ports": N}
    for label, fn in (
        ("portres tcp", lambda: portres.acquire(N)),
        ("portres udp", lambda: portres.acquire(N, protocol="udp")),
        ("plain bound tcp sockets", lambda: [_bound() for _ in range(N)]),
    ):
        deltas = []
        for _ in range(trials + 1):
            gc.collect()
            time.sleep(0.3)   # sockets and inodes are freed after an RCU grace period
            fds0 = len(os.listdir("/proc/self/fd"))
            objs0 = len(gc.get_objects())
            m0, r0, s0, h0 = meminfo(), rss(), slabs(), c_heap()
            tracemalloc.start()
            py0 = tracemalloc.get_traced_memory()[0]
            held = fn()
            py = tracemalloc.get_traced_memory()[0] - py0
            tracemalloc.stop()
            m1, r1, s1, h1 = meminfo(), rss(), slabs(), c_heap()
            fds1 = len(os.listdir("/proc/self/fd"))
            gc.collect()
            pyobjs = len(gc.get_objects()) - objs0
            by_cache = {k: s1.get(k, (0, 0))[0] - s0.get(k, (0, 0))[0] for k in set(s0) | set(s1)}
            sizes = {k: v[1] for k, v in s1.items()}
            deltas.append({"slab": m1["Slab"] - m0["Slab"], "rss": r1 - r0, "fds": fds1 - fds0,
                           "py": py, "pyobjs": pyobjs, "objs": by_cache, "sizes": sizes,
                           "heap": (h1 - h0) if h0 is not None and h1 is not None else 0})
            if isinstance(held, list):
                for s in held:
                    s.close()
            else:
                held.close()
            del held
        deltas = deltas[1:]  # the first trial warms the slab caches
        med = lambda key, deltas=deltas: statistics.median(d[key] for d in deltas)  # noqa: E731
        caches = {}
        for k in deltas[0]["objs"]:
            per_port = statistics.median(d["objs"].get(k, 0) for d in deltas) / N
            if per_port >= 0.5:
                caches[k] = (round(per_port, 2), deltas[-1]["sizes"].get(k, 0))
        for k in list(caches):   # SLUB merges caches: name what shares each one
            try:
                target = os.readlink(f"/sys/kernel/slab/{k}")
                aliases = sorted(a for a in os.listdir("/sys/kernel/slab")
                                 if a != k and not a.startswith(":")
                                 and os.path.islink(f"/sys/kernel/slab/{a}")
                                 and os.readlink(f"/sys/kernel/slab/{a}") == target)
            except OSError:
                aliases = []
            if aliases:
                more = ", ..." if len(aliases) > 4 else ""
                caches[f"{k} (merged with {', '.join(aliases[:4])}{more})"] = caches.pop(k)
        result[label] = {
            "slab_per_port": med("slab") / N,
            "slab_objects_bytes_per_port": sum(c * size for c, size in caches.values()),
            "rss_per_port": med("rss") / N,
            "fds_per_port": med("fds") / N,
            "c_heap_per_port": med("heap") / N,
            "python_bytes_total": med("py"),
            "python_gc_objects_total": med("pyobjs"),
            "slab_objects_per_port": sorted(((k, c, size) for k, (c, size) in caches.items()),
                                            key=lambda t: -t[1] * t[2]),
        }
    return result


def _bound():
    s = socket.socket(socket.AF_INET6)
    s.bind(("::", 0))
    return s


# --- issue 14 (ops): the cost of `import portres` -------------------------

def _import_us(module):
    """Cumulative microseconds of MODULE's top-level import in a fresh
    interpreter (-X importtime), the interpreter's own start excluded."""
    env = dict(os.environ)
    # As installed: with bytecode (the first run of section_import writes it).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if os.environ.get("PORTRES_BENCH_PATH"):
        env["PYTHONPATH"] = os.environ["PORTRES_BENCH_PATH"]
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"],
                         capture_output=True, text=True, env=env, timeout=60, check=True)
    for line in out.stderr.splitlines():
        fields = [f.strip() for f in line.split("|")]
        if len(fields) == 3 and fields[2] == module:
            return int(fields[1])
    raise RuntimeError(f"no importtime line for {module}:\n{out.stderr[-2000:]}")


def section_import(helper):
    """`import portres` against `import socket`, each in fresh interpreters,
    alternated; the ratio is the issue's bound (at most 3)."""
    reps = n(15, 3)
    _import_us("portres")  # warm-up: writes the bytecode an installed package has
    a, b = [], []
    for _ in range(reps):
        a.append(_import_us("portres") * 1000)
        b.append(_import_us("socket") * 1000)
    return {"rows": [row("import portres (fresh interpreter, -X importtime)", statistics.median(a),
                         statistics.median(b), "import socket, same way", unit="per import")]}

# --- end issue 14 (ops) ----------------------------------------------------


SECTION_FUNCS = {
    "import": section_import,  # issue 14
    "socket": section_socket,
    "reuse": section_reuse,
    "floor": section_floor,
    "acquire": section_acquire,
    "peers": section_peers,
    "call": section_call,
    "crowded": section_crowded,
    "memory": section_memory,
    "connect": section_connect,  # issue 13
    "held": section_held,
}


# ------------------------------------------------------------------ driver

def can_netns():
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        return False
    return subprocess.run(["unshare", "--net", "--", "true"], capture_output=True).returncode == 0


def run_section(name, use_netns):
    code = (f"import sys; sys.path.insert(0, {HERE!r}); import run; run.child({name!r}, {QUICK})")
    cmd = [sys.executable, "-c", code]
    if use_netns and name != "crowded":
        cmd = ["unshare", "--net", "--"] + cmd
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if out.returncode:
        raise RuntimeError(f"section {name} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def merge(runs):
    """The medians of several runs of one section."""
    out = dict(runs[0])
    if "rows" in out:
        rows = []
        for i, r in enumerate(out["rows"]):
            same = [run["rows"][i] for run in runs]
            rows.append(dict(r, portres_ns=statistics.median(x["portres_ns"] for x in same),
                             ref_ns=statistics.median(x["ref_ns"] for x in same),
                             ratio=statistics.median(x["ratio"] for x in same), runs=len(same)))
            if len(same) > 1:   # each run's own figures too (the spread between processes)
                rows[-1]["each"] = [[x["portres_ns"], x["ref_ns"], x["ratio"]] for x in same]
            if "messages" in r:   # floor: summed over the runs
                rows[-1]["messages"] = {k: sum(x["messages"][k] for x in same) for k in r["messages"]}
            for k in ("py_plain_ns", "python_bound"):   # floor
                if k in r:
                    rows[-1][k] = statistics.median(x[k] for x in same)
                    if len(same) > 1:
                        rows[-1]["each_" + k] = [x[k] for x in same]
        out["rows"] = rows
    if "crowded" in out:
        out["crowded"] = {span: {k: statistics.median(run["crowded"][span][k] for run in runs)
                                 for k in vals} for span, vals in out["crowded"].items()}
    return out


def child(name, quick):
    global QUICK
    QUICK = quick
    if os.environ.get("PORTRES_BENCH_NETNS") == "1":
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    helper = build_helper()
    gc.collect()
    print(json.dumps(SECTION_FUNCS[name](helper)))


def machine():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": platform.release(),
            "python": platform.python_version(), "loadavg": os.getloadavg()[0]}


def fmt_ns(x):
    if x >= 1e6:
        return f"{x / 1e6:.2f} ms"
    if x >= 1e4:
        return f"{x / 1e3:.0f} µs"
    if x >= 1e3:
        return f"{x / 1e3:.2f} µs"
    return f"{x:.0f} ns"


def reps_of(cr):
    return cr.get("reps", "?")


def render(results, info):
    lines = [f"machine: {info['nproc']} x {info['cpu']}, Linux {info['kernel']}, "
             f"Python {info['python']}, {'private netns' if info['netns'] else 'host netns'}, "
             f"load average {info['loadavg']:.2f} at start, {info['repeat']} run(s) per section"
             + (" (--quick: harness check only, figures meaningless)" if QUICK else ""), ""]
    table = [r for name in SECTIONS if name != "floor"   # floor: a table of its own, below
             for r in results.get(name, {}).get("rows", [])]
    if table:
        lines.append("| benchmark | portres | reference | ratio | reference is |")
        lines.append("|---|---:|---:|---:|---|")
    for r in table:
        lines.append(f"| {r['name']} | {fmt_ns(r['portres_ns'])} | {fmt_ns(r['ref_ns'])} | "
                     f"{r['ratio']:.2f} | {r['ref']} |")
    floor = results.get("floor", {}).get("rows", [])
    if floor:
        lines += ["", "the reuse cycle in C, step by step (floor section; ratio to the plain C cycle "
                  "of the same protocol; bound: the plain Python cycle + the step's kernel work, "
                  "against the plain Python cycle; all in turn in one process):", "",
                  "| load | block | step | TCP | ratio | bound | UDP | ratio | bound | what the step adds |",
                  "|---|---:|---|---:|---:|---:|---:|---:|---:|---|"]
        cells = {(r["load"], r["block"], r["step"], r["proto"]): r for r in floor}
        for load, block, step in dict.fromkeys((r["load"], r["block"], r["step"]) for r in floor):
            t, u = cells.get((load, block, step, "tcp")), cells.get((load, block, step, "udp"))
            lines.append(f"| {load} | {block} | {step} | "
                         + " | ".join(f"{fmt_ns(x['portres_ns'])} | {x['ratio']:.2f} | {x['python_bound']:.2f}"
                                      if x else "- | - | -" for x in (t, u))
                         + f" | {FLOOR_STEPS[step]} |")
    cr = results.get("crowded", {})
    if "crowded" in cr:
        lines += ["", "wildcard acquire(B) with 90% of the ephemeral range taken (median):", ""]
        blocks = cr["blocks"]
        lines.append("| range (sockets in it) | " + " | ".join(f"B={b}" for b in blocks)
                     + " | one sock_diag map of the range (C) |")
        lines.append("|---:|" + "---:|" * (len(blocks) + 1))
        for span, vals in cr["crowded"].items():
            lines.append(f"| {span} ({int(vals['sockets'])}) | "
                         + " | ".join(fmt_ns(vals[str(b)]) + (f" ({int(vals['failed' + str(b)])} of "
                                                              f"{reps_of(cr)} failed)"
                                                              if vals.get('failed' + str(b)) else "")
                                      for b in blocks)
                         + f" | {fmt_ns(vals['dump'])} |")
    elif "skipped" in cr:
        lines += ["", f"crowded range: skipped ({cr['skipped']})"]
    mem = results.get("memory", {}).get("memory")
    if mem:
        lines += ["", f"memory per held port (acquire({mem['ports']}) vs as many plain bound "
                  "sockets; medians):", ""]
        lines.append("| | kernel slab objects, bytes/port | /proc/meminfo Slab, bytes/port | "
                     "fds/port | C heap bytes/port | RSS bytes/port | Python bytes (total) | "
                     "gc-tracked Python objects (total) |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for k, v in mem.items():
            if isinstance(v, dict):
                lines.append(f"| {k} | {v['slab_objects_bytes_per_port']:.0f} | "
                             f"{v['slab_per_port']:.0f} | {v['fds_per_port']:.2f} | "
                             f"{v['c_heap_per_port']:.1f} | {v['rss_per_port']:.0f} | "
                             f"{v['python_bytes_total']:.0f} | {v['python_gc_objects_total']:.0f} |")
        for k, v in mem.items():
            if isinstance(v, dict):
                lines.append(f"\n{k}: slab objects per port: "
                             + ", ".join(f"{c} x {name} ({size} B)"
                                         for name, c, size in v["slab_objects_per_port"]))
    return "\n".join(lines)


def main():
    global QUICK
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny counts: check the harness works")
    ap.add_argument("--json", metavar="FILE", help="also write the raw results as JSON")
    ap.add_argument("--no-netns", action="store_true", help="run in the host's network namespace")
    ap.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    ap.add_argument("--portres", metavar="PATH",
                    help="benchmark the portres package in PATH instead of the installed one")
    ap.add_argument("--repeat", type=int, default=1, metavar="K",
                    help="run each section K times (fresh processes) and report the medians")
    args = ap.parse_args()
    QUICK = args.quick
    if args.portres:
        os.environ["PORTRES_BENCH_PATH"] = os.path.abspath(args.portres)
    use_netns = not args.no_netns and can_netns()
    if use_netns:
        os.environ["PORTRES_BENCH_NETNS"] = "1"
    info = dict(machine(), netns=use_netns, repeat=max(1, args.repeat))
    results = {}
    for name in args.only or SECTIONS:
        t0 = time.monotonic()
        runs = [run_section(name, use_netns) for _ in range(max(1, args.repeat))]
        results[name] = merge(runs)
        print(f"[{name}: {time.monotonic() - t0:.1f} s]", file=sys.stderr)
    print(render(results, info))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "quick": QUICK, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
