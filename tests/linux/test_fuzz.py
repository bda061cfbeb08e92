"""Bad-input fuzzing of every public function and of the CLI (hypothesis).

Contract under test (docs/design.md, "The contract", errors): whatever is passed, only
TypeError/ValueError/OSError (TimeoutError included) escape, each with a
non-empty message that says what is wrong; nothing stays held (the open
descriptor count is flat across every example); nothing crashes.

    python -m pytest tests/linux/test_fuzz.py                            # quick: 200 per target
    PORTRES_FUZZ_PROFILE=deep python -m pytest tests/linux/test_fuzz.py  # deep: >= 14,000 cases

Persistent reservations, the CLI's add/delete/demo and blocks of any size
are fuzzed inside a private network namespace (tests/netns_scenarios/fuzz.py), so the
host's settings and ports are never touched; on the host, valid blocks are
kept small (count <= 64).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
import subprocess
import sys

import pytest
from hypothesis import given, note
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, multiple, rule

import portres
from portres import _overlapped, _portres
from tests.support import LINUX, needs_netns, run_in_netns
from tests.support.fuzz_strategies import (
    FUZZ,
    FUZZ_STATEFUL,
    FdGuard,
    any_host,
    any_value,
    bounded,
    check_cli,
    hermetic_getaddrinfo,
    ints,
    run,
    short,
    small_count,
    write_report,
    zoo_member,
    zoo_names,
)

pytestmark = pytest.mark.skipif(not LINUX, reason="descriptor accounting and the zoo are Linux's")


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    write_report()


@contextlib.contextmanager
def fresh_blocks():
    """A TCP and a UDP block held for one example, and a released one:
    inside the example's FdGuard, so "nothing stays held" covers them."""
    tcp = portres.acquire(4)
    udp = portres.acquire(4, protocol="udp")
    gone = portres.acquire(1)
    gone.close()
    try:
        yield {"tcp": tcp, "udp": udp, "released": gone}
    finally:
        tcp.close()
        udp.close()


@pytest.fixture(autouse=True)
def hermetic():
    with hermetic_getaddrinfo():
        yield


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def host_safe(count, start):
    """On the host, valid blocks stay small: big ones are fuzzed in a
    private namespace (tests/netns_scenarios/fuzz.py)."""
    if _is_int(count) and 64 < count <= 65535 and _is_int(start) and 0 <= start <= 65535:
        count = count % 64 + 1
    return count, start


TOKEN_LABELS = st.sampled_from(["live-tcp", "live-udp", "released", "random"])
tokens = bounded(any_value, TOKEN_LABELS, 2)


def token_value(label, held):
    if label == "live-tcp":
        return held["tcp"].token
    if label == "live-udp":
        return held["udp"].token
    if label == "released":
        return held["released"].token
    if label == "random":
        return int.from_bytes(os.urandom(8), "little") | 1
    return label


timeouts = bounded(any_value, st.one_of(st.none(), st.floats(0, 0.05)), 1)
SOCK_WORDS = ("sock", "fileno", "closed", "family", "socket")


def _real(sock):
    return getattr(sock, "_sock", sock)


def _assert_bound_in(sock, res, port):
    assert port in res.ports, (port, res)
    assert _real(sock).getsockname()[1] == port


# ------------------------------------------------------------------ acquire


@FUZZ
@given(
    count=bounded(any_value, small_count, 2),
    protocol=bounded(any_value, st.sampled_from(["tcp", "udp", "UDP", "Tcp"]), 2),
    start=bounded(any_value, st.just(0), 2),
)
def test_fuzz_acquire(count, protocol, start):
    count, start = host_safe(count, start)
    with FdGuard():
        outcome, res = run(
            "acquire",
            lambda: portres.acquire(count, protocol=protocol, start=start),
            ("count", "start", "protocol", "block", "port"),
        )
        if res is not None:
            try:
                assert res.count == count and res.protocol == str.lower(protocol)
                assert res.ports == range(res.start, res.start + count)
                assert start == 0 or res.start == start
                assert 0 < res.token < 2**64 and not res.closed
            finally:
                res.close()
            assert res.closed


# ------------------------------------------------------------- Reservation


@FUZZ
@given(
    which=st.sampled_from(["tcp", "udp"]),
    family=bounded(any_value, st.sampled_from([socket.AF_INET, socket.AF_INET6]), 3),
    host=bounded(any_host, st.sampled_from(["", "127.0.0.1", "::1", "::"]), 1),
    positional=st.booleans(),
)
def test_fuzz_reservation_socket(which, family, host, positional):
    call = (lambda: res.socket(family, host)) if positional else (lambda: res.socket(family=family, host=host))
    with FdGuard(), fresh_blocks() as held:
        res = held[which]
        outcome, sock = run("Reservation.socket", call, ("family", "host", "address", "resolve"))
        if sock is not None:
            with sock:
                _assert_bound_in(sock, res, sock.getsockname()[1])
                assert sock.family == family and not sock.get_inheritable()


@FUZZ
@given(
    which=st.sampled_from(["tcp", "udp"]),
    sock=zoo_names,
    host=bounded(any_host, st.sampled_from(["", "127.0.0.1", "::1", "::"]), 2),
)
def test_fuzz_reservation_bind(which, sock, host):
    note(f"sock={sock}")
    with FdGuard(), fresh_blocks() as held, zoo_member(sock) as s:
        res = held[which]
        outcome, port = run("Reservation.bind", lambda: res.bind(s, host), SOCK_WORDS + ("host", "address", "resolve"))
        if port is not None:
            _assert_bound_in(s, res, port)


# --------------------------------------------------------- associate & co


@FUZZ
@given(sock=zoo_names, token=tokens, timeout=timeouts)
def test_fuzz_associate(sock, token, timeout):
    with FdGuard(), fresh_blocks() as held, zoo_member(sock) as s:
        tok = token_value(token, held)
        note(f"sock={sock} token={short(tok)}")
        outcome, _ = run(
            "associate", lambda: portres.associate(s, tok, timeout=timeout), SOCK_WORDS + ("token", "timeout")
        )
        if outcome == "ok" and token in ("live-tcp", "live-udp"):
            res = held[token[5:]]
            real = _real(s)
            if getattr(real, "family", None) in (socket.AF_INET, socket.AF_INET6):
                out, port = run("associate+bind", lambda: portres.bind(real, ("", 0)))
                if port is not None:
                    _assert_bound_in(real, res, port)


OVERLAPPED_OPS = st.lists(
    st.tuples(st.sampled_from(["wait", "result", "cancel", "done", "event", "repr"]), timeouts), max_size=6
)


@FUZZ
@given(sock=zoo_names, token=tokens, ops=OVERLAPPED_OPS)
def test_fuzz_associate_nowait_and_overlapped(sock, token, ops):
    with FdGuard(), fresh_blocks() as held, zoo_member(sock) as s:
        tok = token_value(token, held)
        outcome, op = run("associate_nowait", lambda: portres.associate_nowait(s, tok), SOCK_WORDS + ("token",))
        if op is None:
            return
        for name, t in ops:
            if name == "wait":
                out, r = run("Overlapped.wait", lambda op=op, t=t: op.wait(t), ("timeout",))
                assert r in (None, True)  # complete at once on Linux
            elif name == "result":
                run("Overlapped.result", lambda op=op, t=t: op.result(t), ("timeout",))
            elif name == "cancel":
                run("Overlapped.cancel", op.cancel)
            elif name == "done":
                assert op.done() is True
            elif name == "event":
                assert op.event >= 0
            else:
                assert "Overlapped" in repr(op)
        del op


@FUZZ
@given(sock=zoo_names, token=tokens, wait_for=st.one_of(st.none(), st.floats(0, 0.01)))
def test_fuzz_associate_async(sock, token, wait_for):

    async def main():
        coro = portres.associate_async(s, tok)
        if wait_for is None:
            return await coro
        try:
            return await asyncio.wait_for(coro, wait_for)
        except asyncio.TimeoutError as exc:
            if str(exc):  # portres's own TimeoutError says what timed out
                raise
            return "wait_for timed out"  # asyncio's: cancelled the task, as asked

    with FdGuard(), fresh_blocks() as held, zoo_member(sock) as s:
        tok = token_value(token, held)
        run("associate_async", lambda: asyncio.run(main()), SOCK_WORDS + ("token",))


addresses = st.one_of(
    st.tuples(any_host, bounded(ints, st.just(0), 2)),
    st.tuples(st.sampled_from(["", "::1", "::"]), bounded(ints, st.just(0)), any_value),
    st.tuples(
        st.sampled_from(["", "::1", "fe80::1"]), st.just(0), bounded(ints, st.just(0)), bounded(ints, st.just(0))
    ),
    st.tuples(any_value, any_value, any_value, any_value, any_value),
    st.tuples(),
    any_value,
)


@FUZZ
@given(sock=zoo_names, address=addresses, associate=st.sampled_from([None, "live-tcp", "live-udp"]))
def test_fuzz_bind(sock, address, associate):
    note(f"sock={sock}")
    with FdGuard(), fresh_blocks() as held, zoo_member(sock) as s:
        if associate:
            run("bind:associate", lambda: portres.associate(s, token_value(associate, held)))
        outcome, port = run(
            "bind",
            lambda: portres.bind(s, address),
            SOCK_WORDS + ("address", "host", "port", "flowinfo", "scope_id", "tuple", "resolve"),
        )
        if port is not None:
            assert _real(s).getsockname()[1] == port


@FUZZ
@given(sock=zoo_names, token=bounded(tokens, st.just("fresh"), 1))
def test_fuzz_release(sock, token):
    with FdGuard(), fresh_blocks() as held, zoo_member(sock) as s:
        fresh = portres.acquire(2) if token == "fresh" else None
        try:
            tok = fresh.token if fresh else token_value(token, held)
            outcome, _ = run("release", lambda: portres.release(s, tok), SOCK_WORDS + ("token",))
            if fresh is not None:
                assert fresh.closed == (outcome == "ok")
        finally:
            if fresh is not None:
                fresh.close()


# ------------------------------------------------- Overlapped, kept pending


@FUZZ
@given(ops=st.lists(st.tuples(st.sampled_from(["wait", "result", "cancel", "done"]), timeouts), min_size=1, max_size=6))
def test_fuzz_overlapped_pending(ops):
    """An operation the kernel keeps (Linux test hook): wait() says False,
    result() cancels, reaps and raises TimeoutError; afterwards the
    operation is done and result() raises its cancellation."""
    with FdGuard():
        op = _overlapped.Overlapped(_portres._pending_overlapped(), lambda e: portres._core._associate_error(e, 1))
        cancelled = False
        for name, t in ops:
            if _is_int(t) or isinstance(t, float):
                if not (isinstance(t, float) and math.isnan(t)) and 0.01 < t < math.inf:
                    t = 0.01 if not cancelled else t  # never wait long on a pending op
                elif t == math.inf and not cancelled:
                    t = 0.01
            elif t is None and not cancelled:
                t = 0.0
            if name == "wait":
                out, r = run("pending.wait", lambda op=op, t=t: op.wait(t), ("timeout",))
                if out == "ok":
                    assert r is cancelled
            elif name == "result":
                out, _ = run("pending.result", lambda op=op, t=t: op.result(t), ("timeout",))
                if out in ("TimeoutError", "OSError:ECANCELED"):
                    cancelled = True
                assert out != "ok"
            elif name == "cancel":
                run("pending.cancel", op.cancel)
                cancelled = True
            else:
                assert op.done() is cancelled
        del op


# ------------------------------------------ a stateful run of the real API


class ReservationMachine(RuleBasedStateMachine):
    """Random sequences of acquire / socket / bind / associate+bind / close
    / release / reuse of dead tokens, against a model: a live block hands
    out each side of its ports exactly once (IPv4 to an AF_INET socket,
    IPv6 to a V6ONLY one, both to a dual-stack one; a new res.socket(AF_INET6)
    is made V6ONLY on a port whose IPv4 side is out; a closed socket gives
    its sides back), refuses the next socket with EADDRINUSE when no port
    has the sides it needs, and a closed block refuses everything."""

    reservations = Bundle("reservations")
    sockets = Bundle("sockets")

    def __init__(self):
        super().__init__()
        self.before = FdGuard().__enter__()
        self.all = []
        self.bound = {}  # id(res) -> [socket, ...]
        self.owner = {}  # socket -> res

    @rule(target=reservations, count=st.integers(1, 6), protocol=st.sampled_from(["tcp", "udp"]))
    def acquire(self, count, protocol):
        res = portres.acquire(count, protocol=protocol)
        self.all.append(res)
        self.bound[id(res)] = []
        return res

    @staticmethod
    def _sides(s):
        if s.family == socket.AF_INET:
            return {4}
        return {6} if s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) else {4, 6}

    def _taken(self, res):
        """port -> the sides its live sockets hold."""
        taken = {}
        for s in self.bound[id(res)]:
            if s.fileno() >= 0:
                taken.setdefault(s.getsockname()[1], set()).update(self._sides(s))
        return taken

    def _expect_take(self, res, taker, need, fresh6=False):
        """NEED: the sides the new socket takes; FRESH6: a new AF_INET6
        socket of res.socket(), which may take the IPv6 side alone."""
        taken = self._taken(res)
        outcome, got = run("machine.take", taker)
        if res.closed:
            assert got is None and outcome in ("ValueError", "OSError:EBADF", "OSError:ENOENT"), outcome
            return None
        fits = [p for p in res.ports if not taken.get(p, set()) & ({6} if fresh6 else need)]
        if not fits:
            assert outcome == "OSError:EADDRINUSE", outcome
            return None
        assert outcome == "ok", outcome
        sock, port = got
        assert port in fits, (port, taken)
        sides = self._sides(sock)
        if fresh6:  # dual-stack where the IPv4 side is free, V6ONLY beside an IPv4 socket
            assert sides == {6} if 4 in taken.get(port, set()) else sides in ({6}, {4, 6}), (port, taken, sides)
        else:
            assert sides == need, (sides, need)
        self.bound[id(res)].append(sock)
        self.owner[sock] = res
        return sock

    @rule(
        target=sockets,
        res=reservations,
        family=st.sampled_from([socket.AF_INET, socket.AF_INET6]),
        host=st.sampled_from(["", "loopback"]),
    )
    def new_socket(self, res, family, host):
        h = "" if host == "" else ("127.0.0.1" if family == socket.AF_INET else "::1")

        def take():
            s = res.socket(family, h)
            return s, s.getsockname()[1]

        need = {4} if family == socket.AF_INET else {4, 6}
        got = self._expect_take(res, take, need, fresh6=family == socket.AF_INET6)
        return multiple() if got is None else got

    @rule(
        target=sockets,
        res=reservations,
        family=st.sampled_from([socket.AF_INET, socket.AF_INET6]),
        how=st.sampled_from(["Reservation.bind", "associate+bind", "nowait+bind"]),
    )
    def bind_existing(self, res, family, how):
        s = socket.socket(family, socket.SOCK_STREAM if res.protocol == "tcp" else socket.SOCK_DGRAM)

        def take():
            if how == "Reservation.bind":
                return s, res.bind(s)
            if how == "associate+bind":
                portres.associate(s, res.token)
            else:
                portres.associate_nowait(s, res.token).result(1)
            return s, portres.bind(s, ("", 0))

        got = self._expect_take(res, take, self._sides(s))
        if got is None:
            s.close()
            return multiple()
        return got

    @rule(s=consumes(sockets))
    def close_socket(self, s):
        s.close()

    @rule(res=reservations, how=st.sampled_from(["close", "release", "close-twice"]))
    def end(self, res, how):
        if how == "release" and not res.closed:
            with socket.socket() as s:
                portres.release(s, res.token)
        else:
            res.close()
            if how == "close-twice":
                res.close()
        assert res.closed

    @rule(res=reservations)
    def reuse_token(self, res):
        with socket.socket(type=socket.SOCK_STREAM if res.protocol == "tcp" else socket.SOCK_DGRAM) as s:
            outcome, _ = run("machine.reuse_token", lambda: portres.associate(s, res.token))
            assert outcome == ("OSError:ENOENT" if res.closed else "ok"), outcome
            outcome, _ = (
                run("machine.release_dead", lambda: portres.release(s, res.token)) if res.closed else ("skip", None)
            )
            assert outcome in ("skip", "OSError:ENOENT")

    @invariant()
    def sides_unique_within_blocks(self):
        for res in self.all:
            held = {}
            for s in self.bound[id(res)]:
                if s.fileno() >= 0:
                    port = s.getsockname()[1]
                    assert port in res.ports
                    for side in self._sides(s):
                        assert (port, side) not in held, (port, side)
                        held[port, side] = s

    def teardown(self):
        for res in self.all:
            for s in self.bound[id(res)]:
                s.close()
            res.close()
        self.before.__exit__(None, None, None)


TestReservationMachine = ReservationMachine.TestCase
TestReservationMachine.settings = FUZZ_STATEFUL


# --------------------------------------------------------------------- CLI

CLI_WORDS = st.one_of(
    st.sampled_from(
        [
            "list",
            "lookup",
            "check",
            "--json",
            "--protocol",
            "-p",
            "tcp",
            "udp",
            "sctp",
            "--help",
            "-h",
            "--boot",
            "--count",
            "--listeners",
            "--",
            "-",
            "0",
            "1",
            "80",
            "65535",
            "65536",
            "-1",
            "0x50",
            "0o17",
            "1_000",
            "1e3",
            "nan",
            "inf",
            "٣",
            "99999999999999999999999",
            " 80",
            "80 ",
            "\0",
            "\udcff",
            "é",
        ]
    ),
    st.integers(-(2**70), 2**70).map(str),
    st.text(max_size=10),
)
CLI_NUMBER = st.one_of(
    st.sampled_from(
        ["0", "1", "80", "65535", "65536", "-1", "0x50", "1_000", "٣", "1e3", "nan", "99999999999999999999999"]
    ),
    st.integers(-10, 70000).map(str),
)
cli_structured = st.tuples(
    st.sampled_from(["list", "lookup", "check", "lookup", "check"]),
    st.lists(CLI_NUMBER, max_size=3),
    st.lists(st.sampled_from(["--json", "--protocol=udp", "-p", "tcp", "--protocol", "sctp", "-h"]), max_size=2),
).map(lambda t: [t[0], *t[1], *t[2]])
cli_argv = bounded(st.lists(CLI_WORDS, max_size=6), cli_structured, 2)


def _reserved_ports() -> str:
    with open("/proc/sys/net/ipv4/ip_local_reserved_ports") as f:
        return f.read()


@pytest.fixture
def private_state(tmp_path, monkeypatch):
    monkeypatch.setenv("PORTRES_STATE_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("PORTRES_BOOT_DIR", str(tmp_path / "etc"))
    monkeypatch.setenv("PORTRES_SYSCTL_D_FILE", str(tmp_path / "sysctl.d" / "99.conf"))


@FUZZ
@given(argv=cli_argv)
def test_fuzz_cli_in_process(private_state, argv):
    # add/delete change the namespace's sysctl and demo holds ports: fuzzed
    # in tests/netns_scenarios/fuzz.py.  Here they become `check`.
    if argv and argv[0] in ("add", "delete", "demo"):
        argv = ["check"] + argv[1:]
    before = _reserved_ports()
    check_cli("cli", argv)
    assert _reserved_ports() == before


CLI_PROCESS_CASES = [
    [],
    ["--help"],
    ["nope"],
    ["check"],
    ["check", "80", "81"],
    ["check", b"\xff\xfe"],
    ["lookup", b"8\xff", "1"],
    ["check", "9" * 5000],
    ["list", "--protocol", b"\xc3("],
    ["check", "--json", "-1"],
    ["lookup", "1", "0"],
    ["list", "--json", "-p", "udp"],
]


def test_cli_process_bad_arguments(private_state):
    """`python -m portres` with undecodable bytes, huge numbers, junk: a
    usage error or an answer, never a traceback."""
    for argv in CLI_PROCESS_CASES:
        p = subprocess.run([sys.executable, "-m", "portres", *argv], capture_output=True, timeout=60)
        text = (p.stdout + p.stderr).decode("utf-8", "replace")
        assert p.returncode in (0, 1, 2, 3), (argv, p.returncode, text)
        assert "Traceback" not in text, (argv, text)
        if p.returncode:
            assert p.stderr.strip() or (not argv and b"usage" in p.stdout), argv


# ------------------------------- in a private namespace: persistent, big blocks


@needs_netns
def test_fuzz_in_private_netns(tmp_path):
    """Persistent reservations (create/lookup/delete/list and the CLI's
    add/delete/list/lookup, against a model of the sysctl), `demo`, and
    acquire with blocks of any size: tests/netns_scenarios/fuzz.py inside a
    private network namespace with its state in a temp dir."""
    env = dict(
        PORTRES_STATE_DIR=str(tmp_path / "run"),
        PORTRES_BOOT_DIR=str(tmp_path / "etc"),
        PORTRES_SYSCTL_D_FILE=str(tmp_path / "sysctl.d" / "99.conf"),
    )
    out = run_in_netns("fuzz.all_targets", env=env, timeout=1800)
    assert out["ok"] and out["calls"], out


# ------------------------------------------- defects found by this fuzzing
# Each was a defect when found (an OverflowError or a message naming nothing
# escaping, non-IP sockets associated, a CLI traceback); fixed since: kept as
# regression tests.


def test_regression_huge_int_timeout_is_not_an_overflow_error():
    with socket.socket() as s, portres.acquire(1) as res:
        try:
            portres.associate(s, res.token, timeout=10**400)  # "forever", like inf
        except ValueError as exc:
            assert "timeout" in str(exc)
    with socket.socket() as s, portres.acquire(1) as res:
        op = portres.associate_nowait(s, res.token)
        try:
            op.wait(10**400)
        except ValueError as exc:
            assert "timeout" in str(exc)


def test_regression_fileno_beyond_c_long_is_a_value_error():
    class Huge:
        def fileno(self):
            return 2**64

    for call in (
        lambda: portres.associate(Huge(), 1),
        lambda: portres.release(Huge(), 1),
        lambda: portres.bind(Huge(), ("", 0)),
    ):
        with pytest.raises((ValueError, TypeError), match="sock|fileno|descriptor"):
            call()


def test_regression_associate_refuses_non_inet_sockets():
    with portres.acquire(1) as tcp, portres.acquire(1, protocol="udp") as udp:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as u:
            with pytest.raises((OSError, ValueError), match="TCP/UDP|AF_INET|family"):
                portres.associate(u, tcp.token)
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM) as n:
            with pytest.raises((OSError, ValueError), match="TCP/UDP|AF_INET|family"):
                portres.associate(n, udp.token)


def test_regression_huge_int_messages_name_the_argument():
    for call, word in (
        (lambda: portres.acquire(10**5000), "count"),
        (lambda: portres.acquire(1, start=10**5000), "start"),
        (lambda: portres.associate(socket.socket(), 10**5000), "token"),
        (lambda: portres.bind(socket.socket(), ("", 10**5000)), "port"),
    ):
        with pytest.raises(ValueError) as info:
            call()
        assert word in str(info.value)


def test_regression_unencodable_host_message_names_the_host():
    with portres.acquire(1) as res:
        for host in ("a..b", "a" * 64, "\ud800"):
            with pytest.raises(ValueError) as info:
                res.socket(host=host)
            assert "host" in str(info.value), str(info.value)


def test_regression_cli_block_past_65535_or_start_0_is_a_usage_error(private_state):
    for argv in (["lookup", "0", "1"], ["lookup", "65535", "2"], ["delete", "0", "1"]):
        p = subprocess.run([sys.executable, "-m", "portres", *argv], capture_output=True, text=True, timeout=60)
        assert "Traceback" not in p.stderr, (argv, p.stderr[-300:])
        assert p.returncode == 2, (argv, p.returncode)
