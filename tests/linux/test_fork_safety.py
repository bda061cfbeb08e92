"""No placeholder survives in a forked child: not those of the blocks the
parent holds, and not those of a block another thread is still building
(issue 11, defect 2).  A child made while acquire() runs in another thread
(os.fork() and a multiprocessing worker) holds no socket of that block, and
once the parent closes the reservation another uid binds its ports while
the child still lives.  Likewise for a child forked while other threads
bind the second side of ports (the IPv6 side beside an AF_INET socket),
which moves UDP placeholders."""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import multiprocessing
import os
import socket
import sys
import threading
import time
import warnings

import pytest

import portres
from tests.support import (
    BIND_FORMS,
    KINDS,
    LINUX,
    marker_lines,
    needs_ipv6,
    needs_root,
    other_uid_binds,
    try_bind,
)

pytestmark = pytest.mark.skipif(not LINUX, reason="fork() and /proc/self/fd: Linux placeholders")

BLOCK = 2000  # about 0.1 s to build here: a wide window to fork in
ATTEMPTS = 20


def _inet_sockets(exclude: frozenset) -> list:
    """(fd, family, type, port) of every AF_INET/AF_INET6 socket this
    process holds whose inode is not in EXCLUDE."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if not link.startswith("socket:") or link in exclude:
            continue
        try:
            s = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue
        with s:
            if s.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            found.append((fd, int(s.family), int(s.type), s.getsockname()[1]))
    return found


def _socket_links() -> frozenset:
    links = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if link.startswith("socket:"):
            links.add(link)
    return frozenset(links)


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


class _Acquirer(threading.Thread):
    """acquire(BLOCK) in a thread; the main thread forks while it runs."""

    def __init__(self, protocol: str) -> None:
        super().__init__(daemon=True)
        self.protocol = protocol
        self.res: "portres.Reservation | None" = None
        self.error: "BaseException | None" = None

    def run(self) -> None:
        try:
            self.res = portres.acquire(BLOCK, protocol=self.protocol)
        except BaseException as exc:  # reported by the test
            self.error = exc


def _fork_during_acquire(protocol: str, start_child):
    """Start an acquire() in a thread and, as soon as its placeholders show
    up in /proc/self/fd, start a child with START_CHILD(baseline).  Returns
    (reservation, child handle) once the acquire has finished; retries when
    the acquire was over before the fork (or the range was too crowded)."""
    for _ in range(ATTEMPTS):
        baseline_links = _socket_links()
        base = _fd_count()
        t = _Acquirer(protocol)
        t.start()
        child = None
        while t.is_alive():
            if _fd_count() > base + 50:  # the block is being built now
                child = start_child(baseline_links)
                break
        t.join()
        if t.error is not None:
            if isinstance(t.error, OSError) and t.error.errno == errno.EADDRINUSE:
                if child is not None:
                    child.finish()
                continue  # no free window of BLOCK ports just now: try again
            raise t.error
        assert t.res is not None
        if child is None or t.res.closed:
            t.res.close()
            continue  # the acquire was over before the fork: again
        return t.res, child
    pytest.skip(f"could not fork while acquire({BLOCK}) ran in {ATTEMPTS} attempts")


class _ForkedChild:
    """os.fork(): the child reports REPORT(BASELINE) (JSON; by default its
    inet sockets), then waits to be told to exit, so the parent can probe
    the ports while it lives."""

    def __init__(self, baseline, report=None) -> None:
        report = report or _inet_sockets
        r, w = os.pipe()
        go_r, go_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: no Python-level threads, report and wait
            code = 1
            try:
                os.close(r)
                os.close(go_w)
                os.write(w, json.dumps(report(baseline)).encode() + b"\n")
                os.close(w)
                os.read(go_r, 1)
                code = 0
            finally:
                os._exit(code)
        os.close(w)
        os.close(go_r)
        self.pid, self._r, self._go = pid, r, go_w

    def sockets(self):
        """What the child reported."""
        data = b""
        while not data.endswith(b"\n"):
            chunk = os.read(self._r, 65536)
            if not chunk:
                break
            data += chunk
        return json.loads(data.decode())

    def alive(self) -> bool:
        return os.waitpid(self.pid, os.WNOHANG) == (0, 0)

    def finish(self) -> None:
        os.write(self._go, b"x")
        os.close(self._go)
        os.close(self._r)
        _, status = os.waitpid(self.pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0


def _mp_worker(conn, baseline) -> None:
    conn.send(_inet_sockets(frozenset(baseline)))
    conn.recv()  # live until told to exit


class _MPChild:
    """A multiprocessing worker started with the fork start method (the
    default on Linux before Python 3.14, and what a Pool uses there)."""

    def __init__(self, baseline: frozenset) -> None:
        ctx = multiprocessing.get_context("fork")
        self._conn, child_conn = ctx.Pipe()
        with warnings.catch_warnings():
            # 3.12+: "This process is multi-threaded, use of fork() may lead
            # to deadlocks": the case under test.
            warnings.simplefilter("ignore", DeprecationWarning)
            self._proc = ctx.Process(target=_mp_worker, args=(child_conn, sorted(baseline)))
            self._proc.start()
        child_conn.close()

    def sockets(self) -> list:
        assert self._conn.poll(30), "the worker reported nothing"
        return self._conn.recv()

    def alive(self) -> bool:
        return self._proc.is_alive()

    def finish(self) -> None:
        self._conn.send("exit")
        self._proc.join(30)
        self._conn.close()
        assert self._proc.exitcode == 0


def _probe_ports(res, held: list) -> list:
    """The ports to probe as another uid: (up to ten of) those the child
    holds, and the first, middle and last of the block."""
    ports = {p for (_fd, _fam, _type, p) in held[:10] if p}
    ports |= {res.start, res.start + res.count // 2, res.start + res.count - 1}
    return sorted(ports)


CHILDREN = {"os.fork": _ForkedChild, "multiprocessing": _MPChild}


@contextlib.contextmanager
def _forked_during_acquire(kind: str, protocol: str):
    """(reservation, child, the child's inet sockets) of a KIND child forked
    while acquire() ran; the child is told to exit at the end if it lives."""
    res, child = _fork_during_acquire(protocol, CHILDREN[kind])
    try:
        yield res, child, child.sockets()
    finally:
        if child.alive():
            child.finish()


@pytest.mark.parametrize("protocol", ["tcp", "udp"])
@pytest.mark.parametrize("kind", sorted(CHILDREN))
def test_child_forked_during_acquire_holds_no_placeholder(kind, protocol):
    with _forked_during_acquire(kind, protocol) as (res, child, held):
        with res:
            assert len(res.ports) == BLOCK
        assert held == [], (
            f"the {kind} child holds {len(held)} socket(s) of the block being built, "
            f"e.g. (fd, family, type, port) {held[:5]}"
        )


@needs_root
@pytest.mark.parametrize("protocol", ["tcp", "udp"])
@pytest.mark.parametrize("kind", sorted(CHILDREN))
def test_ports_free_for_others_after_close_while_child_forked_during_acquire_lives(kind, protocol):
    with _forked_during_acquire(kind, protocol) as (res, child, held):
        ports = _probe_ports(res, held)
        res.close()
        assert child.alive()
        binds = other_uid_binds(ports, KINDS[protocol])
        refused = {k: v for k, v in binds.items() if v != "ok"}
        assert refused == {}, (
            f"after close(), another uid cannot bind {len(refused)} form(s) while the "
            f"{kind} child lives, e.g. {sorted(refused.items())[:5]}"
        )
        assert child.alive()


def test_child_forked_while_threads_acquire_and_close_holds_nothing():
    """A hammer: two threads acquire and close blocks while the main thread
    forks children that look for any inet socket they inherited."""
    stop = threading.Event()
    errors: list = []

    def churn(protocol: str) -> None:
        while not stop.is_set():
            try:
                with portres.acquire(64, protocol=protocol):
                    pass
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    errors.append(repr(exc))
                    return

    baseline = _socket_links()
    threads = [threading.Thread(target=churn, args=(p,), daemon=True) for p in ("tcp", "udp")]
    for t in threads:
        t.start()
    leaks = []
    try:
        deadline = time.monotonic() + 5
        forks = 0
        while time.monotonic() < deadline and not errors:
            child = _ForkedChild(baseline)
            held = child.sockets()
            child.finish()
            forks += 1
            if held:
                leaks.append(held[:3])
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    assert forks > 10, f"only {forks} forks in 5 s"
    assert leaks == [], f"{len(leaks)} of {forks} children inherited sockets: {leaks[:3]}"


# ---------------------------------------------- fork during second-side binds

SO_GET_FILTER = 26  # include/uapi/asm-generic/socket.h (= SO_ATTACH_FILTER)
PROC_NET: "dict[tuple[int, int], str]" = {
    (socket.SOCK_STREAM, socket.AF_INET): "/proc/net/tcp",
    (socket.SOCK_STREAM, socket.AF_INET6): "/proc/net/tcp6",
    (socket.SOCK_DGRAM, socket.AF_INET): "/proc/net/udp",
    (socket.SOCK_DGRAM, socket.AF_INET6): "/proc/net/udp6",
}


def _fd_links() -> dict:
    links = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            links[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
    return links


def _is_placeholder(s: socket.socket) -> bool:
    """A bound socket of a block that portres holds the port with, told from
    the ones the test gets (AF_INET; AF_INET6 V6ONLY, no filter): dual-stack
    AF_INET6, or (UDP) a socket filter attached, "return 0" (EACCES: an
    eBPF one, which the kernel does not dump)."""
    if s.family == socket.AF_INET6 and not s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY):
        return True
    try:
        return len(s.getsockopt(socket.SOL_SOCKET, SO_GET_FILTER, 1024)) > 0
    except OSError as exc:
        return exc.errno == errno.EACCES


def _what_the_child_holds(block_ports: dict, baseline: dict) -> dict:
    """In a forked child: the placeholders of the parent's blocks (sockets of
    BLOCK_PORTS[type] that _is_placeholder()) and their tracking descriptors
    (epoll instances, destroy listeners, /proc fdinfo files, the runtime
    marker) that it holds, beyond BASELINE (fd -> link, from before the
    blocks).  Closes its copies of the sockets the parent handed out, so that
    a child left alive holds no port of the blocks unless portres leaked
    one."""
    placeholders, tracking = [], []
    for fd, link in _fd_links().items():
        if baseline.get(fd) == link and not link.startswith("/memfd:portres"):
            continue
        if link == "anon_inode:[eventpoll]" or "/fdinfo/" in link or link.startswith("/memfd:portres"):
            tracking.append([fd, link])
            continue
        if not link.startswith("socket:"):
            continue
        s = socket.socket(fileno=os.dup(fd))
        with s:
            if s.family == socket.AF_NETLINK:
                # A block's destroy listener has joined groups.  One without
                # is a dump socket: a block's (kept for confirming dumps), or
                # one portres opens for a moment outside any block, e.g. to
                # explain a full TCP block (port_sockets) in another thread,
                # inherited like any descriptor open at fork(): not told apart.
                if s.getsockname()[1]:
                    tracking.append([fd, link])
                continue
            if s.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            port = s.getsockname()[1]
            if port in block_ports[int(s.type)] and _is_placeholder(s):
                placeholders.append([fd, int(s.family), int(s.type), port])
                continue
        os.close(fd)  # a hand-out's copy (or a socket still being bound): not portres's
    return {"placeholders": placeholders, "tracking": tracking}


def _inodes_on(sock_type: int, family: int, port: int) -> set:
    """The inodes of the kernel's sockets of that kind bound on PORT (TCP:
    listeners, established, ...; a TCP socket that is only bound is not listed)."""
    with open(PROC_NET[(sock_type, family)]) as f:
        next(f)
        return {int(row[9]) for row in map(str.split, f) if int(row[1].rsplit(":", 1)[1], 16) == port}


class _SecondSides(threading.Thread):
    """Binds the two sides of ports of RES again and again: AF_INET on a
    free port p, then AF_INET6 port=p (its V6ONLY side), a few ports live at
    once.  After each hand-out, the kernel must have no other socket the
    thread was ever handed on that side of the port (handed out twice)."""

    def __init__(self, res: "portres.Reservation", stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.res, self.stop = res, stop
        self.kind = KINDS[res.protocol]
        self.handed: dict = {socket.AF_INET: set(), socket.AF_INET6: set()}
        self.second_sides = 0
        self.twice: list = []
        self.error: "BaseException | None" = None

    def _taken(self, s: socket.socket) -> None:
        if self.kind == socket.SOCK_STREAM:
            s.listen()  # listed in /proc/net/tcp*
        port, ino = s.getsockname()[1], os.fstat(s.fileno()).st_ino
        self.handed[s.family].add(ino)
        others = (_inodes_on(self.kind, s.family, port) & self.handed[s.family]) - {ino}
        if others:
            self.twice.append([port, int(s.family), sorted(others)])

    def run(self) -> None:
        live: list = []
        try:
            while not self.stop.is_set():
                if len(live) > 2:
                    for s in live.pop(0):
                        s.close()
                try:
                    s4 = self.res.socket(socket.AF_INET)
                except OSError as exc:  # every port still held (children's copies): again
                    if exc.errno != errno.EADDRINUSE:
                        raise
                    for s in live.pop(0) if live else ():
                        s.close()
                    continue
                pair = [s4]
                live.append(pair)
                self._taken(s4)
                try:
                    s6 = self.res.socket(socket.AF_INET6, port=s4.getsockname()[1])
                except OSError as exc:  # its IPv6 side still held by a child's copy
                    if exc.errno != errno.EADDRINUSE:
                        raise
                    continue
                pair.append(s6)
                assert s6.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
                self._taken(s6)
                self.second_sides += 1
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            for pair in live:
                for s in pair:
                    s.close()


KEEP_ALIVE = 4  # the last children live on while the freed ports are probed
BATCH = 4  # children forked before their reports are read: more forks per second


@needs_ipv6
def test_child_forked_during_second_side_binds_holds_nothing_of_the_blocks():
    """One thread per protocol binds second sides (a V6ONLY socket beside an
    AF_INET one, which moves UDP placeholders: placeholder_behind()) while
    the main thread forks.  No child holds a placeholder or a tracking
    descriptor; no side of a port is handed out twice; once the blocks are
    closed, a plain bind of each of their ports succeeds while the last
    children live."""
    baseline = _fd_links()
    stop = threading.Event()
    blocks = [portres.acquire(8, protocol=p) for p in ("tcp", "udp")]
    threads = [_SecondSides(res, stop) for res in blocks]
    block_ports = {KINDS[res.protocol]: set(res.ports) for res in blocks}
    children: list = []
    bad: list = []
    forks = 0
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 5
        report = functools.partial(_what_the_child_holds, block_ports)
        while time.monotonic() < deadline and all(t.is_alive() for t in threads):
            batch = [_ForkedChild(baseline, report) for _ in range(BATCH)]  # forked back to back
            forks += BATCH
            for child in batch:
                held = child.sockets()
                if held["placeholders"] or held["tracking"]:
                    bad.append(held)
            children += batch
            while len(children) > KEEP_ALIVE:
                children.pop(0).finish()
        stop.set()
        for t in threads:
            t.join()
        for res in blocks:
            res.close()
        assert all(child.alive() for child in children)
        refused = {}
        for res in blocks:
            for port in res.ports:
                for form in BIND_FORMS:
                    result = try_bind(port, KINDS[res.protocol], form, "plain")
                    if result != "ok":
                        refused[f"{res.protocol} {port}/{form}"] = result
    finally:
        stop.set()
        for res in blocks:
            res.close()
        for child in children:
            child.finish()
    for t in threads:
        assert t.error is None, f"{t.res.protocol}: {t.error!r}"
    assert forks > 10, f"only {forks} forks in 5 s"
    assert min(t.second_sides for t in threads) > 10, [t.second_sides for t in threads]
    assert [t.twice for t in threads] == [[], []], "a side of a port handed out twice (port, family, inodes)"
    assert bad == [], f"{len(bad)} of {forks} children held placeholders or tracking descriptors: {bad[:3]}"
    assert refused == {}, f"after close(), binds refused while the last children live: {refused}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v"]))


def _registry_in_child(parent_tokens: list) -> str:
    """In a forked child: the parent's tokens are not found, the marker is
    empty, and the tables work from empty (the token table past one growth,
    associations, the marker lines).  "" or what went wrong."""
    from portres import _runtime_linux

    marker = marker_lines

    for token in parent_tokens:
        with socket.socket() as s:
            try:
                portres._portres.associate_port_reservation(s.fileno(), token)
                return f"the parent's token {token:#x} is found in the child"
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    return repr(exc)
    if marker():
        return f"the child's marker lists {marker()}"
    blocks = [portres.acquire(2) for _ in range(70)]  # the token table grows past 64
    for res in blocks:
        with socket.socket() as s:
            portres.associate(s, res.token)
            port = portres.bind(s, ("127.0.0.1", 0))
            if port not in res.ports:
                return f"bound {port}, outside {res.ports}"
    want = sorted(_runtime_linux.line(r.protocol, r.start, r.count).decode().rstrip("\n") for r in blocks)
    if marker() != want:
        return "the child's marker does not list its blocks"
    for res in blocks:
        res.close()
    return f"the child's marker keeps {marker()}" if marker() else ""


def test_child_forked_while_threads_use_the_registry_starts_it_empty():
    """A hammer on the registry's tables (src/linux/registry.c): threads
    acquire, associate (and re-associate), bind, close, release by token and
    leave associated sockets unbound for the prune, while the main thread
    forks; each child finds none of the parent's blocks and uses the tables
    from empty.  A child that touched a freed or half-changed entry crashes.

    Under the AddressSanitizer build (.ci/sanitize.sh preloads its runtime)
    the threads are between calls at each fork: clang 14's allocator has no
    fork handler, so a child forked while a thread is inside malloc hangs in
    its own first malloc (seen here; glibc's malloc has the handler)."""
    import random
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, 4096), hard), hard))
    stop = threading.Event()
    errors: list = []
    shared: list = []
    lock = threading.Lock()
    sanitized = "asan" in os.environ.get("LD_PRELOAD", "")
    busy = [threading.Lock() for _ in range(4)]  # held by worker k during a call (sanitized)

    def pick(pop: bool = False):
        with lock:
            if not shared:
                return None
            k = random.randrange(len(shared))
            return shared.pop(k) if pop else shared[k]

    def worker(seed: int) -> None:
        rnd = random.Random(seed)
        with socket.socket() as any_socket:
            while not stop.is_set():
                try:
                    if sanitized:
                        busy[seed].acquire()
                    k = rnd.random()
                    if k < 0.25 or not shared:
                        res = portres.acquire(rnd.choice((1, 2, 8)))
                        with lock:
                            shared.append(res)
                    elif k < 0.5 and (res := pick()) is not None:
                        socks = [socket.socket() for _ in range(rnd.randrange(1, 6))]
                        try:
                            for s in socks:
                                portres.associate(s, res.token)
                            portres.bind(socks[0], ("127.0.0.1", 0))
                        finally:
                            for s in socks:  # the rest unbound: pruned later
                                s.close()
                    elif k < 0.65 and (res := pick(pop=True)) is not None:
                        portres.release(any_socket, res.token)  # by token, then freed
                        del res
                    elif k < 0.8 and (res := pick(pop=True)) is not None:
                        res.close()
                    elif (res := pick()) is not None:
                        with socket.socket() as s:
                            portres.associate(s, res.token)
                            other = pick() or res
                            portres.associate(s, other.token)  # moves to other's list
                            if rnd.random() < 0.5:
                                other.close()  # its associations go with it
                            portres.bind(s, ("127.0.0.1", 0))
                except OSError as exc:
                    if exc.errno not in (errno.EADDRINUSE, errno.ENOENT, errno.EBADF):
                        errors.append(repr(exc))
                        return
                finally:
                    if sanitized:
                        busy[seed].release()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(len(busy))]
    for t in threads:
        t.start()
    bad = []
    forks = 0
    try:
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline and not errors:
            with lock:
                tokens = [r.token for r in shared[:20]]
            r, w = os.pipe()
            if sanitized:
                for b in busy:
                    b.acquire()
            pid = os.fork()
            if sanitized and pid:
                for b in busy:
                    b.release()
            if pid == 0:  # child: report, never return into pytest
                code = 3
                try:
                    os.close(r)
                    os.write(w, _registry_in_child(tokens).encode())
                    code = 0
                finally:
                    os._exit(code)
            os.close(w)
            with os.fdopen(r, "rb") as f:
                said = f.read().decode()
            _, status = os.waitpid(pid, 0)
            forks += 1
            if status or said:
                bad.append((os.waitstatus_to_exitcode(status), said))
    finally:
        stop.set()
        for t in threads:
            t.join()
        for res in shared:
            res.close()
    assert errors == []
    assert forks > 10, f"only {forks} forks in 4 s"
    assert bad == [], f"{len(bad)} of {forks} children: {bad[:3]}"
