"""A UDP socket bound from a reservation receives every datagram sent to it:
the placeholders that keep holding its port never take a share."""

import errno
import socket
import sys
import threading
import time

import pytest

import portres
from tests.support import LINUX, ROOT, needs_ipv6, needs_root, other_uid_binds
from tests.support.udp_lib import FORMS, bind_form, count_received


@pytest.mark.skipif(not LINUX, reason="Linux placeholders")
@needs_root
def test_port_stays_held_in_every_layout():
    with portres.acquire(1, protocol="udp") as res:
        for _name, family, host, v6only, _dests in FORMS:
            s, _port = bind_form(res, family, host, v6only)
            held = other_uid_binds(res.ports, socket.SOCK_DGRAM)
            assert set(held.values()) == {"EADDRINUSE"}, held
            s.close()
            held = other_uid_binds(res.ports, socket.SOCK_DGRAM)
            assert set(held.values()) == {"EADDRINUSE"}, held


def _join_groups(sock, n):
    """Join up to N IPv6 multicast groups on the loopback interface (fewer
    if net.core.optmem_max runs out): closing SOCK then leaves each one,
    which makes its release last about half a millisecond for 1000 instead
    of microseconds.  Returns how many were joined."""
    lo = socket.if_nametoindex("lo")
    for g in range(n):
        mreq = socket.inet_pton(socket.AF_INET6, "ff15::%x" % (g + 1)) + lo.to_bytes(4, sys.byteorder)
        try:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
        except OSError:
            if g == 0:
                raise
            return g
    return n


@pytest.mark.skipif(not LINUX, reason="Linux release tracking")
def test_a_port_given_back_while_its_socket_is_still_closing_delivers_to_the_next_socket():
    """Regression: the kernel drops a file's epoll items before the socket's
    release takes it off the port, so release tracking saw a port free while
    the closing socket was still in its reuseport group; the socket bound
    next in another thread lost its datagrams to it (1 in 3 here, with the
    release slowed down).  A thread binds the block's only port the moment
    it is given back and sends itself a datagram while the old socket is
    still closing."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            _join_groups(probe, 1)
    except OSError as exc:
        pytest.skip(f"no IPv6 multicast on lo to slow a release down: {exc}")
    lost, rounds = [], 30
    with portres.acquire(1, protocol="udp") as res:
        for _ in range(rounds):
            old = res.socket(socket.AF_INET6)
            _join_groups(old, 1000)
            outcome = []

            def bind_next(outcome=outcome):
                deadline = time.monotonic() + 10
                while True:
                    try:
                        new = res.socket(socket.AF_INET6)
                        break
                    except OSError as exc:  # the block's one port is still taken
                        if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                            outcome.append(repr(exc))
                            return
                with new:
                    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as tx:
                        tx.sendto(b"x", ("::1", new.getsockname()[1]))
                    outcome.append(count_received(new, 1, deadline=1.0))

            t = threading.Thread(target=bind_next)
            t.start()
            time.sleep(0.001)
            old.close()
            t.join()
            if outcome != [1]:
                lost.append(outcome)
    assert lost == [], f"{len(lost)} of {rounds} datagrams lost to the closing socket"


# ---------------------------------------------------------------- more forms
#
# UDP bind forms beyond the everyday ones (issue 11, defect 4): a socket
# bound from a block on an IPv4-mapped address, or bound to a device
# (SO_BINDTODEVICE), either gets every datagram a plain socket of the same
# form gets, or is refused with an error that names the form and leaves the
# socket unbound.  Never refused-yet-bound, never bound-yet-deaf; on a fresh
# port and on a port that served the other forms before.

N_FORM = 60
DESTINATIONS = ["127.0.0.1", "::1"]

# name -> (family, host, IPV6_V6ONLY or None, device or None)
BASE = {
    "v4-any": (socket.AF_INET, "0.0.0.0", None, None),
    "v4-loopback": (socket.AF_INET, "127.0.0.1", None, None),
    "v6-any-dualstack": (socket.AF_INET6, "::", 0, None),
    "v6-any-v6only": (socket.AF_INET6, "::", 1, None),
    "v6-loopback": (socket.AF_INET6, "::1", 1, None),
}
MAPPED = {
    "v4mapped-any": (socket.AF_INET6, "::ffff:0.0.0.0", 0, None),
    "v4mapped-loopback": (socket.AF_INET6, "::ffff:127.0.0.1", 0, None),
}
DEVICE = {f"{name}@lo": (fam, host, v6only, "lo") for name, (fam, host, v6only, _) in BASE.items()}
DEVICE.update({f"{name}@lo": (fam, host, v6only, "lo") for name, (fam, host, v6only, _) in MAPPED.items()})
NEW_FORMS = dict(MAPPED, **DEVICE)
ALL_FORMS = dict(BASE, **NEW_FORMS)

needs_device = pytest.mark.skipif(not ROOT, reason="SO_BINDTODEVICE needs CAP_NET_RAW here")


def _new(form: str) -> socket.socket:
    family, _host, v6only, device = ALL_FORMS[form]
    s = socket.socket(family, socket.SOCK_DGRAM)
    if v6only is not None:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
    if device is not None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
    return s


def _received(sock: socket.socket, port: int, n: int) -> dict:
    """Send N datagrams to PORT at each destination; how many SOCK got."""
    got = {}
    for dest in DESTINATIONS:
        family = socket.AF_INET6 if ":" in dest else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as tx:
            for i in range(n):
                tx.sendto(b"%d" % i, (dest, port))
        got[dest] = count_received(sock, n, deadline=0.5, timeout=0.05)
    return got


def _plain_gets(form: str) -> dict:
    """What a plain socket of FORM, on a free port outside any block, gets."""
    with _new(form) as s:
        s.bind((ALL_FORMS[form][1], 0))
        return _received(s, s.getsockname()[1], N_FORM)


_reference: dict = {}


def _expected(form: str) -> dict:
    if form not in _reference:
        _reference[form] = _plain_gets(form)
    return _reference[form]


def _check_from_block(res, form: str) -> str:
    """Bind a socket of FORM from RES and hold it to the contract; returns
    "bound" or "refused"."""
    want = _expected(form)
    s = _new(form)
    try:
        try:
            port = res.bind(s, ALL_FORMS[form][1])
        except OSError as exc:
            assert s.getsockname()[1] == 0, f"{form}: refused ({exc}) yet left bound"
            msg = str(exc)
            assert "SO_BINDTODEVICE" in msg if ALL_FORMS[form][3] else ALL_FORMS[form][1] in msg, (
                f"{form}: the refusal does not name the form: {msg}"
            )
            return "refused"
        assert port in res.ports
        got = _received(s, port, N_FORM)
        assert got == want, f"{form}: a plain socket gets {want}, the one from the block {got}"
        return "bound"
    finally:
        s.close()


linux_forms = pytest.mark.skipif(not LINUX, reason="Linux UDP placeholders and SO_BINDTODEVICE")


def _params(forms):
    return [pytest.param(f, marks=needs_device) if ALL_FORMS[f][3] else f for f in forms]


@linux_forms
@pytest.mark.parametrize("form", _params(NEW_FORMS))
def test_form_on_a_fresh_port_gets_everything_or_is_refused_unbound(form):
    with portres.acquire(1, protocol="udp") as res:
        _check_from_block(res, form)


@linux_forms
@pytest.mark.parametrize("form", _params(NEW_FORMS))
def test_form_on_a_port_that_served_every_other_form(form):
    # The block's one port serves each everyday form, then FORM, in turn:
    # the placeholder layout each of them left behind must not make FORM
    # deaf (nor FORM make the next one deaf).
    with portres.acquire(1, protocol="udp") as res:
        for before in BASE:
            assert _check_from_block(res, before) == "bound"
            _check_from_block(res, form)
            assert _check_from_block(res, before) == "bound"


# ----------------------------------------------------- IPv4 + IPv6 on one port
#
# An AF_INET socket and a V6ONLY AF_INET6 socket share the block's one port
# (issue 13 item 2), bound in either order: every datagram to 127.0.0.1
# reaches the first, every one to ::1 the second, none a placeholder; and it
# stays so when either of them closes and another takes its side.

SIDE4 = {
    "v4-any": ("0.0.0.0", None),
    "v4-loopback": ("127.0.0.1", None),
    "v4-any@lo": ("0.0.0.0", "lo"),
}
SIDE6 = {
    "v6only-any": ("::", None),
    "v6only-loopback": ("::1", None),
    "v6only-any@lo": ("::", "lo"),
}
N_SHARED = 100


def _side_socket(family, host, device, res):
    s = socket.socket(family, socket.SOCK_DGRAM)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    if device is not None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
    # A block of one port: the second socket's port-0 request takes the
    # side its family leaves free.
    deadline = time.monotonic() + 5
    while True:
        try:
            assert res.bind(s, host) == res.start
            return s
        except OSError as exc:  # a closed socket's side is given back once it is off the port
            if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                s.close()
                raise
            time.sleep(0.005)


def _both_get_theirs(s4, s6, port):
    """Send N_SHARED datagrams to 127.0.0.1:PORT and to [::1]:PORT, in
    batches; S4 must get every IPv4 one, S6 every IPv6 one."""
    got = {"127.0.0.1": 0, "::1": 0}
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx4,
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as tx6,
    ):
        for _batch in range(N_SHARED // 25):
            for i in range(25):
                tx4.sendto(b"4%d" % i, ("127.0.0.1", port))
                tx6.sendto(b"6%d" % i, ("::1", port))
            got["127.0.0.1"] += count_received(s4, 25, deadline=1.0, timeout=0.05)
            got["::1"] += count_received(s6, 25, deadline=1.0, timeout=0.05)
    assert got == {"127.0.0.1": N_SHARED, "::1": N_SHARED}


def _shared_params():
    out = []
    for n4, (_h4, d4) in SIDE4.items():
        for n6, (_h6, d6) in SIDE6.items():
            for first in ("v4", "v6"):
                marks = [needs_device] if d4 or d6 else []
                out.append(pytest.param(n4, n6, first, marks=marks, id=f"{n4}+{n6}-{first}-first"))
    return out


@linux_forms
@needs_ipv6
@pytest.mark.parametrize("form4,form6,first", _shared_params())
def test_ipv4_and_v6only_sockets_on_one_port_each_get_every_datagram_of_their_family(form4, form6, first):
    (h4, d4), (h6, d6) = SIDE4[form4], SIDE6[form6]
    with portres.acquire(1, protocol="udp") as res:
        if first == "v4":
            s4 = _side_socket(socket.AF_INET, h4, d4, res)
            s6 = _side_socket(socket.AF_INET6, h6, d6, res)
        else:
            s6 = _side_socket(socket.AF_INET6, h6, d6, res)
            s4 = _side_socket(socket.AF_INET, h4, d4, res)
        try:
            _both_get_theirs(s4, s6, res.start)
        finally:
            s4.close()
            s6.close()


@linux_forms
@needs_ipv6
@pytest.mark.parametrize("first", ["v4", "v6"])
@pytest.mark.parametrize("replaced", ["v4", "v6"])
def test_one_side_replaced_again_and_again_keeps_the_other_sides_delivery(first, replaced):
    """The socket on one side of a shared port closes and a new one takes
    that side, five times: the socket on the other side keeps getting every
    datagram of its family, and each new socket gets every one of its own."""
    with portres.acquire(1, protocol="udp") as res:
        socks = {}
        for fam in (first, "v6" if first == "v4" else "v4"):
            family, host = (socket.AF_INET, "0.0.0.0") if fam == "v4" else (socket.AF_INET6, "::")
            socks[fam] = _side_socket(family, host, None, res)
        try:
            _both_get_theirs(socks["v4"], socks["v6"], res.start)
            for _round in range(5):
                socks[replaced].close()
                family, host = (socket.AF_INET, "0.0.0.0") if replaced == "v4" else (socket.AF_INET6, "::")
                socks[replaced] = _side_socket(family, host, None, res)
                _both_get_theirs(socks["v4"], socks["v6"], res.start)
        finally:
            for s in socks.values():
                s.close()
