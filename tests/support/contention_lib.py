"""The contention harness shared by tests/linux/test_contention.py (short runs)
and stress/contention.py (long runs, figures for RELIABILITY.md).

  * owner_hammer: threads that use a held block as hard as they can
    (sockets of every family from it, TCP connections that leave TIME_WAIT
    behind, UDP datagrams, V6ONLY UDP sockets that switch the placeholder
    layout, associate + bind, closes that give ports back);
  * Prober: a forked child running as another uid that tries every bind form
    (plain / SO_REUSEADDR / SO_REUSEPORT / both; 0.0.0.0, 127.0.0.1, [::]
    dual-stack and V6ONLY, [::1]) on every port of the block, or autobinds
    (bind to port 0, connect), until told to stop; it reports every success;
  * ports_held_by_workers: several processes x threads acquiring and binding
    at once, checked for a port handed out twice;
  * pick_race: portpicker (which holds nothing) against portres.acquire
    under a racing autobinder.
"""

from __future__ import annotations

import errno
import json
import os
import random
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import IO, Any, Callable, Dict, List, Optional

from tests.support import BIND_FORMS, BIND_OPTIONS, try_bind

HERE = os.path.dirname(os.path.abspath(__file__))

OTHER_UID = 65534
TYPES = {"tcp": socket.SOCK_STREAM, "udp": socket.SOCK_DGRAM}


# ------------------------------------------------------------ the owner


def owner_hammer(res, stop: threading.Event, stats: Dict[str, int], seed: int) -> None:
    """One thread of the owner: take, use and give back ports of RES until
    STOP.  Counts actions in STATS (shared; races on the counters are
    harmless)."""
    import portres

    rnd = random.Random(seed)
    kind = TYPES[res.protocol]
    live: List[socket.socket] = []
    try:
        while not stop.is_set():
            action = rnd.randrange(10)
            try:
                if action < 4:
                    fam = rnd.choice([socket.AF_INET, socket.AF_INET6])
                    host = rnd.choice(["", "loopback"])
                    if host:
                        host = "127.0.0.1" if fam == socket.AF_INET else "::1"
                    s = res.socket(fam, host)
                    live.append(s)
                    _use(s, kind)
                elif action < 6:
                    fam = rnd.choice([socket.AF_INET, socket.AF_INET6])
                    s = socket.socket(fam, kind)
                    if fam == socket.AF_INET6:
                        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, rnd.randrange(2))
                    try:
                        if action == 4:
                            res.bind(s)
                        else:
                            portres.associate(s, res.token)
                            portres.bind(s, ("", 0))
                    except OSError:
                        s.close()
                        raise
                    live.append(s)
                    _use(s, kind)
                elif live:
                    live.pop(rnd.randrange(len(live))).close()
                    stats["closed"] = stats.get("closed", 0) + 1
                    continue
                stats["bound"] = stats.get("bound", 0) + 1
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:  # block full: expected
                    raise
                stats["full"] = stats.get("full", 0) + 1
                if live:
                    live.pop(0).close()
    finally:
        for s in live:
            s.close()


def _use(s: socket.socket, kind: int) -> None:
    """Make the port busy: a TCP connection (closed by the client first, so
    the block's port is left with TIME_WAIT and the listener), or a UDP
    datagram to itself."""
    addr = s.getsockname()
    host = "::1" if s.family == socket.AF_INET6 else "127.0.0.1"
    if kind == socket.SOCK_STREAM:
        s.listen()
        with socket.create_connection((host, addr[1]), timeout=2) as c:
            conn, _ = s.accept()
            conn.close()
        # conn closed first: TIME_WAIT sits on the block's port
    else:
        if s.family == socket.AF_INET6 and addr[0] == "::":
            try:
                if s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0:
                    host = "127.0.0.1"
            except OSError:
                pass
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.sendto(b"x", (host, addr[1]))
        s.settimeout(2)
        s.recv(16)


def _where(exc: BaseException) -> str:
    """The error and the harness line it came from, for the assertion text."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f"{os.path.basename(f.filename)}:{f.lineno} {f.line}" for f in frames][-3:]
    return f"{exc!r} at {' <- '.join(reversed(ours))}"


# ------------------------------------------------------------ the prober


class Prober:
    """A child forked now (before any thread starts, and before the
    reservation under test exists: a forked child would hold copies of its
    placeholder sockets), switched to UID, waiting for start(); it runs
    FN(*args, *more, deadline), MORE given to start(), and sends back its
    JSON result."""

    def __init__(self, fn: Callable[..., Any], *args: Any, uid: Optional[int] = OTHER_UID) -> None:
        self._go_r, self._go_w = os.pipe()
        self._res_r, res_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # child
            code = 1
            try:
                os.close(self._go_w)
                os.close(self._res_r)
                if uid is not None:
                    from tests.support import import_all_portres

                    import_all_portres()  # before the uid switch (lazy imports)
                    os.setgroups([])
                    os.setgid(uid)
                    os.setuid(uid)
                data = b""
                while True:
                    chunk = os.read(self._go_r, 1 << 16)
                    if not chunk:
                        break
                    data += chunk
                seconds, more = json.loads(data.decode())
                out = {"result": fn(*args, *more, time.monotonic() + seconds)}
                code = 0
            except BaseException as exc:  # report, never return into the caller
                out = {"error": repr(exc)}
            try:
                data = json.dumps(out).encode()
                while data:
                    data = data[os.write(res_w, data) :]
            finally:
                os._exit(code)
        os.close(self._go_r)
        os.close(res_w)

    def start(self, seconds: float, *more: Any) -> None:
        data = json.dumps([seconds, list(more)]).encode()
        while data:
            data = data[os.write(self._go_w, data) :]
        os.close(self._go_w)

    def result(self, timeout: float = 120) -> Any:
        chunks = []
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0 or not select.select([self._res_r], [], [], left)[0]:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                raise AssertionError("prober did not answer in time")
            chunk = os.read(self._res_r, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
        os.close(self._res_r)
        os.waitpid(self.pid, 0)
        out = json.loads(b"".join(chunks).decode() or '{"error": "no output"}')
        if "error" in out:
            raise AssertionError(f"prober failed: {out['error']}")
        return out["result"]


def probe_binds(sock_type: int, ports: List[int], deadline: float) -> dict:
    """Every bind form on every port, round after round, until DEADLINE."""
    attempts, taken = 0, []
    errors: Dict[str, int] = {}
    rounds = 0
    while time.monotonic() < deadline:
        rounds += 1
        for port in ports:
            for form in BIND_FORMS:
                for opt in BIND_OPTIONS:
                    name = try_bind(port, sock_type, form, opt)
                    if name == "ok":
                        taken.append(f"{port}/{form}/{opt}")
                    else:
                        errors[name] = errors.get(name, 0) + 1
                    attempts += 1
    return {"attempts": attempts, "rounds": rounds, "taken": taken[:50], "n_taken": len(taken), "errors": errors}


def probe_autobind(reuseport: bool, block: Dict[str, List[int]], server: List[Any], deadline: float) -> dict:
    """Automatic port choice, every way, until DEADLINE: bind to port 0
    (TCP/UDP, IPv4/IPv6) and connect() (TCP to SERVER, UDP).  Sockets are
    kept a little while so the range stays crowded.  Reports every port the
    kernel chose inside BLOCK[protocol]."""
    held = {p: set(ports) for p, ports in block.items()}
    landed = {"tcp": 0, "udp": 0}
    inside: List[str] = []
    refused: Dict[str, int] = {}
    keep: List[socket.socket] = []
    ways = [
        ("tcp", "bind4"),
        ("tcp", "bind6"),
        ("tcp", "connect"),
        ("udp", "bind4"),
        ("udp", "bind6"),
        ("udp", "connect"),
    ]
    rnd = random.Random(os.getpid())
    while time.monotonic() < deadline:
        proto, way = rnd.choice(ways)
        fam = socket.AF_INET6 if way == "bind6" else socket.AF_INET
        s: Optional[socket.socket] = socket.socket(fam, TYPES[proto])
        try:
            assert s is not None
            if reuseport:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if way == "connect":
                s.connect(tuple(server) if proto == "tcp" else ("127.0.0.1", 9))
            else:
                s.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", 0))
            port = s.getsockname()[1]
            landed[proto] += 1
            if port in held[proto]:
                inside.append(f"{proto}/{way}/{port}")
            keep.append(s)
            s = None
        except OSError as exc:
            name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            refused[name] = refused.get(name, 0) + 1
        finally:
            if s is not None:
                s.close()
        if len(keep) > 24:
            keep.pop(rnd.randrange(len(keep))).close()
    for s in keep:
        s.close()
    return {"landed": landed, "inside": inside[:50], "n_inside": len(inside), "refused": refused}


def hammer_and_probe(protocol: str, count: int, seconds: float, threads: int = 4) -> dict:
    """Hold a block of COUNT ports; THREADS owner threads hammer it for
    SECONDS while another uid tries every bind form on every port of it.
    Returns the figures."""
    import portres

    prober = Prober(probe_binds, TYPES[protocol])
    res = portres.acquire(count, protocol=protocol)
    try:
        stop = threading.Event()
        stats: Dict[str, int] = {}
        errors: List[str] = []

        def guarded(i: int) -> None:
            try:
                owner_hammer(res, stop, stats, i)
            except BaseException as exc:
                errors.append(_where(exc))

        workers = [threading.Thread(target=guarded, args=(i,)) for i in range(threads)]
        for w in workers:
            w.start()
        prober.start(seconds, list(res.ports))
        got = prober.result(timeout=seconds + 120)
        stop.set()
        for w in workers:
            w.join()
        return {
            "protocol": protocol,
            "block": [res.start, res.count],
            "seconds": seconds,
            "owner": stats,
            "owner_errors": errors,
            "other_uid": got,
        }
    finally:
        res.close()


# --------------------------------------------- many processes x many threads

WORKER = r"""
import json, socket, sys, threading
sys.path.insert(0, sys.argv[1])
import portres
threads, rounds = int(sys.argv[2]), int(sys.argv[3])
for r in range(rounds):
    held, lock, errors = [], threading.Lock(), []
    def work(i):
        try:
            proto = "udp" if (i + r) % 2 else "tcp"
            res = portres.acquire(8, protocol=proto)
            socks = []
            for k in range(8):
                fam = socket.AF_INET6 if k % 2 else socket.AF_INET
                socks.append(res.socket(fam))
            with lock:
                held.append((res, socks, proto))
        except Exception as e:
            errors.append(repr(e))
    ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in ts: t.start()
    for t in ts: t.join()
    report = {"errors": errors, "ports": [[proto, s.getsockname()[1], res.start, res.count]
              for res, socks, proto in held for s in socks]}
    print(json.dumps(report), flush=True)
    sys.stdin.readline()            # the parent has checked every process
    for res, socks, proto in held:
        for s in socks: s.close()
        res.close()
print("done", flush=True)
"""


def _pipe(f: "Optional[IO[str]]") -> "IO[str]":
    assert f is not None  # Popen with stdin/stdout=PIPE
    return f


def ports_held_by_workers(processes: int, threads: int, rounds: int) -> dict:
    """PROCESSES worker processes, each with THREADS threads acquiring an
    8-port block (TCP or UDP) and binding all 8 ports from it, at once; each
    round, while everything is held, every (protocol, port) must belong to
    exactly one socket of one process."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, HERE, str(threads), str(rounds)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    dupes, total, errors = [], 0, []
    try:
        for _round in range(rounds):
            owner: Dict[tuple, int] = {}
            for i, p in enumerate(procs):
                line = _pipe(p.stdout).readline()
                rep = json.loads(line)
                errors += rep["errors"]
                for proto, port, start, count in rep["ports"]:
                    total += 1
                    assert start <= port < start + count
                    key = (proto, port)
                    if key in owner:
                        dupes.append([proto, port, owner[key], i])
                    owner[key] = i
            for p in procs:
                _pipe(p.stdin).write("\n")
                _pipe(p.stdin).flush()
        for p in procs:
            assert _pipe(p.stdout).readline().strip() == "done"
    finally:
        for p in procs:
            _pipe(p.stdin).close()
            p.wait(timeout=60)
    return {
        "processes": processes,
        "threads": threads,
        "rounds": rounds,
        "sockets_bound": total,
        "duplicates": dupes,
        "errors": errors,
    }


# -------------------------------------------------------- one block, 16 threads


def _sides(s: socket.socket) -> List[int]:
    """The sides of its port a socket of a block holds."""
    if s.family == socket.AF_INET:
        return [4]
    return [6] if s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) else [4, 6]


def shared_block_each_port_once(count: int, threads: int, rounds: int) -> dict:
    """THREADS threads take ports from ONE reservation of COUNT ports at once
    (res.socket, res.bind, associate + bind) until it is full; every side of
    a port (IPv4: an AF_INET socket, IPv6: a V6ONLY one, both: a dual-stack
    one) must be handed out at most once, and every port at least once.
    Then each thread closes a random half of its sockets and all race again
    for the freed ports."""
    import portres

    res = portres.acquire(count)
    got: List[List[socket.socket]] = [[] for _ in range(threads)]
    errors: List[str] = []
    figures = []
    try:
        for r in range(rounds):
            barrier = threading.Barrier(threads)

            def take(i, r=r, barrier=barrier):
                rnd = random.Random(i * 1000 + r)
                barrier.wait()
                while True:
                    how = rnd.randrange(3)
                    fam = rnd.choice([socket.AF_INET, socket.AF_INET6])
                    try:
                        if how == 0:
                            s = res.socket(fam)
                        else:
                            s = socket.socket(fam)
                            try:
                                if how == 1:
                                    res.bind(s)
                                else:
                                    portres.associate(s, res.token)
                                    portres.bind(s, ("", 0))
                            except OSError:
                                s.close()
                                raise
                        got[i].append(s)
                    except OSError as exc:
                        if exc.errno != errno.EADDRINUSE:
                            errors.append(repr(exc))
                        return

            ts = [threading.Thread(target=take, args=(i,)) for i in range(threads)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            ports = [s.getsockname()[1] for socks in got for s in socks]
            sides = [(s.getsockname()[1], side) for socks in got for s in socks for side in _sides(s)]
            figures.append(
                {
                    "round": r,
                    "handed": len(sides),
                    "distinct": len(set(sides)),
                    "all_of_the_block": sorted(set(ports)) == list(res.ports),
                    "per_thread": [len(s) for s in got],
                }
            )
            for i in range(threads):  # give back a random half
                rnd = random.Random(r * 7 + i)
                rnd.shuffle(got[i])
                half = len(got[i]) // 2
                for s in got[i][:half]:
                    s.close()
                got[i] = got[i][half:]
    finally:
        for socks in got:
            for s in socks:
                s.close()
        res.close()
    return {"count": count, "threads": threads, "rounds": figures, "errors": errors}


# -------------------------------------------------- portpicker vs portres


def racing_autobinder(deadline: float) -> dict:
    """Another program: opens sockets with automatic ports (bind to port 0,
    as clients and test servers do), keeps up to 40 for a moment."""
    keep: List[socket.socket] = []
    n = 0
    rnd = random.Random(os.getpid())
    while time.monotonic() < deadline:
        s = socket.socket()
        try:
            s.bind(("0.0.0.0", 0))
            keep.append(s)
            n += 1
        except OSError:
            s.close()
            time.sleep(0.0005)
        if len(keep) > 40:
            keep.pop(rnd.randrange(len(keep))).close()
    for s in keep:
        s.close()
    return {"autobinds": n}


def pick_race(tool: str, tries: int, gap: float) -> dict:
    """TOOL ('portpicker' or 'portres') picks a port, waits GAP seconds (the
    time a program takes to start the server that binds it), then binds it,
    while another uid autobinds in the same range.  Counts the binds that
    fail because the other program took the port in between."""
    import portres

    prober = Prober(racing_autobinder)
    prober.start(3600)  # stopped by SIGTERM below
    ok = stolen = 0
    try:
        time.sleep(0.2)
        for _ in range(tries):
            if tool == "portpicker":
                import portpicker  # type: ignore[import-untyped]

                portpicker._random_ports.clear()  # each pick: a new program
                port = portpicker.pick_unused_port()
                time.sleep(gap)
                s = socket.socket()
                try:
                    s.bind(("0.0.0.0", port))
                    ok += 1
                except OSError as exc:
                    if exc.errno != errno.EADDRINUSE:
                        raise
                    stolen += 1
                finally:
                    s.close()
            else:
                with portres.acquire(1) as res:
                    time.sleep(gap)
                    try:
                        res.socket().close()
                        ok += 1
                    except OSError as exc:
                        if exc.errno != errno.EADDRINUSE:
                            raise
                        stolen += 1
    finally:
        os.kill(prober.pid, signal.SIGKILL)
        os.waitpid(prober.pid, 0)
    return {"tool": tool, "tries": tries, "gap_s": gap, "bound": ok, "stolen": stolen}


def picked_port_taken_in_between(tool: str, tries: int) -> dict:
    """Deterministic form: TOOL picks a port; another uid then binds exactly
    that port (plain bind, 0.0.0.0); does it get it?"""
    import portres

    def other_binds(port: int, deadline: float) -> bool:  # forked after the pick: see Prober
        s = socket.socket()
        try:
            s.bind(("0.0.0.0", port))
            return True
        except OSError:
            return False
        finally:
            s.close()

    taken = 0
    for _ in range(tries):
        if tool == "portpicker":
            import portpicker

            portpicker._random_ports.clear()
            p = Prober(other_binds)
            port = portpicker.pick_unused_port()
            p.start(0, port)
            taken += bool(p.result())
        else:
            p = Prober(other_binds)
            with portres.acquire(1) as res:
                p.start(0, res.start)
                taken += bool(p.result())
    return {"tool": tool, "tries": tries, "taken_by_other_uid": taken}


# ------------------------------------------- autobind (in a private netns)


def autobind_scenario(
    seconds: float,
    lo: int = 40000,
    hi: int = 40063,
    count: int = 24,
    uid: Optional[int] = OTHER_UID,
    reuseport: bool = False,
) -> dict:
    """Inside a private network namespace (the caller's job): a narrow
    ephemeral range LO-HI, a TCP and a UDP block of COUNT ports held and
    hammered by the owner, while UID lets the kernel choose ports (bind to 0,
    connect) as fast as it can.  Counts autobinds landing in a held block."""
    import portres

    with open("/proc/sys/net/ipv4/ip_local_port_range", "w") as f:
        f.write(f"{lo} {hi}")
    server = socket.socket()
    server.bind(("127.0.0.1", 5000))
    server.listen(1024)
    prober = Prober(probe_autobind, reuseport, uid=uid)
    tcp = portres.acquire(count)
    udp = portres.acquire(count, protocol="udp")
    stop = threading.Event()
    stats: Dict[str, int] = {}
    errors: List[str] = []

    def guarded(res, i):
        try:
            owner_hammer(res, stop, stats, i)
        except BaseException as exc:
            errors.append(_where(exc))

    def accept_all():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                server.accept()[0].close()
            except OSError:
                pass

    workers = [threading.Thread(target=guarded, args=(r, i)) for i, r in enumerate([tcp, udp, tcp, udp])]
    workers.append(threading.Thread(target=accept_all))
    try:
        for w in workers:
            w.start()
        prober.start(seconds, {"tcp": list(tcp.ports), "udp": list(udp.ports)}, ["127.0.0.1", 5000])
        got = prober.result(timeout=seconds + 120)
    finally:
        stop.set()
        for w in workers:
            w.join()
        tcp_block, udp_block = [tcp.start, tcp.count], [udp.start, udp.count]
        tcp.close()
        udp.close()
        server.close()
    return {
        "range": [lo, hi],
        "tcp_block": tcp_block,
        "udp_block": udp_block,
        "seconds": seconds,
        "uid": uid,
        "reuseport": reuseport,
        "owner": stats,
        "owner_errors": errors,
        "other": got,
    }
