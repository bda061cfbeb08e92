"""A given port of a block (res.socket(port=N), portres.bind of an associated
socket to a port of the block) and IPv4 + IPv6 sockets on the same port of
a block: an AF_INET socket and an AF_INET6 IPV6_V6ONLY one, as a server
listening on 0.0.0.0:p and [::]:p does (issue 13)."""

import errno
import socket
import time

import pytest

import portres
from tests.support import KINDS, LINUX, needs_ipv6, needs_root, other_uid_binds

pytestmark = pytest.mark.skipif(not LINUX, reason="Linux backend behaviour (docs/platforms.md rows 33-34)")


def _v6only(kind):
    s = socket.socket(socket.AF_INET6, kind)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    return s


# ------------------------------------------------------------ port=N


@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_socket_binds_the_port_asked_for(protocol):
    with portres.acquire(4, protocol=protocol) as res:
        for port in (res.start + 2, res.start, res.start + 3):
            with res.socket(port=port) as s:
                assert s.getsockname()[1] == port
                assert s.type == KINDS[protocol]


def test_socket_port_outside_the_block_is_a_value_error_naming_the_block_once():
    with portres.acquire(2) as res:
        with pytest.raises(ValueError) as info:
            res.socket(port=res.start + 2)
        msg = str(info.value)
        assert msg == f"port {res.start + 2} is outside the reserved block {res.start}-{res.start + 1}"
        with pytest.raises(ValueError, match="0..65535"):
            res.socket(port=70000)
        with pytest.raises(TypeError):
            res.socket(port="80")
        # nothing was taken: both ports are still free
        with res.socket() as a, res.socket() as b:
            assert {a.getsockname()[1], b.getsockname()[1]} == set(res.ports)


def test_socket_port_handed_out_already_is_eaddrinuse_with_a_true_message():
    with portres.acquire(2) as res:
        with res.socket(port=res.start) as s:
            with pytest.raises(OSError) as info:
                res.socket(port=res.start)
            exc = info.value
            assert exc.errno == errno.EADDRINUSE and exc.filename == "Reservation.socket"  # handed out: no bind() made
            assert (
                f"port {res.start} of the reserved block {res.start}-{res.start + 1} is already bound by another socket"
                in str(exc)
            )
            assert str(exc).count("reserved block") == 1  # the block named once
            # the other port is untouched, and the first comes back once closed
            with res.socket(port=res.start + 1):
                pass
        s.close()
        with res.socket(port=res.start) as again:
            assert again.getsockname()[1] == res.start


def test_socket_port_on_a_host():
    with portres.acquire(3) as res, res.socket(host="127.0.0.1", port=res.start + 1) as s:
        assert s.getsockname() == ("127.0.0.1", res.start + 1)


def test_associated_bind_to_a_port_of_the_block_says_which_port_is_taken():
    with portres.acquire(2) as res, res.socket(port=res.start):
        with socket.socket() as s:
            portres.associate(s, res.token)
            with pytest.raises(OSError) as info:
                portres.bind(s, ("", res.start))
            assert info.value.errno == errno.EADDRINUSE
            assert f"port {res.start} of the reserved block the socket is associated with is already bound" in str(
                info.value
            )


# ------------------------------------------------------- IPv4 + IPv6


@needs_ipv6
@pytest.mark.parametrize("protocol", ["tcp", "udp"])
@pytest.mark.parametrize("first", ["v4", "v6"])
def test_ipv4_and_ipv6_v6only_sockets_share_a_port_of_the_block(protocol, first):
    kind = KINDS[protocol]
    with portres.acquire(2, protocol=protocol) as res:
        port = res.start + 1
        s6 = _v6only(kind)
        portres.associate(s6, res.token)
        if first == "v4":
            s4 = res.socket(socket.AF_INET, port=port)
            portres.bind(s6, ("::", port))
        else:
            portres.bind(s6, ("::", port))
            s4 = res.socket(socket.AF_INET, port=port)
        with s4, s6:
            assert s4.getsockname()[1] == s6.getsockname()[1] == port
            if protocol == "tcp":
                s4.listen()
                s6.listen()
                with socket.create_connection(("127.0.0.1", port), timeout=5) as c4:
                    a4, _ = s4.accept()
                    a4.close()
                with socket.create_connection(("::1", port), timeout=5) as c6:
                    a6, _ = s6.accept()
                    a6.close()
                del c4, c6
            # a third socket of either family is refused on that port
            with pytest.raises(OSError) as info:
                res.socket(socket.AF_INET, port=port)
            assert info.value.errno == errno.EADDRINUSE
            with pytest.raises(OSError) as info:
                res.socket(socket.AF_INET6, port=port)
            assert info.value.errno == errno.EADDRINUSE
            # the other port of the block still goes to a port-0 request
            with res.socket() as other:
                assert other.getsockname()[1] == res.start


@needs_ipv6
def test_a_fresh_ipv6_socket_next_to_an_ipv4_one_is_v6only():
    """res.socket(AF_INET6, port=p) beside a live AF_INET socket on p: the IPv4
    side is taken, so the new socket is IPV6_V6ONLY (a dual-stack one would
    take IPv4 traffic too)."""
    with portres.acquire(1) as res, res.socket(socket.AF_INET, port=res.start) as s4:
        with res.socket(socket.AF_INET6, port=res.start) as s6:
            assert s6.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
            assert s6.getsockname()[1] == s4.getsockname()[1]
        with res.socket(socket.AF_INET6) as again:  # once closed, the port's IPv6 side is free again
            assert again.getsockname()[1] == res.start


@needs_ipv6
@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_dual_stack_ipv6_and_ipv4_do_not_share_a_port(protocol):
    """A dual-stack [::] socket takes IPv4 too: an AF_INET socket on its port
    is refused, and the other way round."""
    kind = KINDS[protocol]
    with portres.acquire(1, protocol=protocol) as res:
        with res.socket(socket.AF_INET6, port=res.start) as s6:
            assert s6.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
            with pytest.raises(OSError) as info:
                res.socket(socket.AF_INET, port=res.start)
            assert info.value.errno == errno.EADDRINUSE
        with res.socket(socket.AF_INET, port=res.start):
            with socket.socket(socket.AF_INET6, kind) as d:
                d.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                portres.associate(d, res.token)
                with pytest.raises(OSError) as info:
                    portres.bind(d, ("::", res.start))
                assert info.value.errno == errno.EADDRINUSE


@needs_ipv6
@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_each_family_of_a_shared_port_comes_back_when_its_socket_closes(protocol):
    kind = KINDS[protocol]
    with portres.acquire(1, protocol=protocol) as res:
        s4 = res.socket(socket.AF_INET, port=res.start)
        s6 = _v6only(kind)
        portres.associate(s6, res.token)
        portres.bind(s6, ("::", res.start))  # the port's IPv6 side
        assert s6.getsockname()[1] == res.start
        s4.close()
        deadline = time.monotonic() + 5
        while True:  # the IPv4 side is free once s4 is off the port
            try:
                s4 = res.socket(socket.AF_INET, port=res.start)
                break
            except OSError as exc:
                assert exc.errno == errno.EADDRINUSE and time.monotonic() < deadline
                time.sleep(0.01)
        with pytest.raises(OSError):  # the IPv6 side is still s6's
            res.socket(socket.AF_INET6, port=res.start)
        s6.close()
        s4.close()
        with res.socket(socket.AF_INET6, port=res.start) as d:  # both free: dual-stack fits
            assert d.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0


@needs_root
@needs_ipv6
@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_a_shared_port_stays_held_against_other_uids(protocol):
    with portres.acquire(1, protocol=protocol) as res:
        s4 = res.socket(socket.AF_INET, port=res.start)
        s6 = res.socket(socket.AF_INET6, port=res.start)
        try:
            assert "ok" not in other_uid_binds(res.ports, KINDS[protocol]).values()
            s4.close()  # the IPv4 side free in the block, still held by the placeholders
            assert "ok" not in other_uid_binds(res.ports, KINDS[protocol]).values()
        finally:
            s4.close()
            s6.close()


@needs_ipv6
@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_an_ipv6_socket_on_an_ipv6_address_takes_the_ipv6_side_only(protocol):
    """The kernel makes an AF_INET6 socket bound to an IPv6 address (::1)
    IPV6_V6ONLY: the port's IPv4 side stays free for an AF_INET socket."""
    with portres.acquire(1, protocol=protocol) as res, res.socket(socket.AF_INET6, "::1") as s6:
        assert s6.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
        with res.socket(socket.AF_INET) as s4:
            assert s4.getsockname()[1] == s6.getsockname()[1] == res.start
        with pytest.raises(OSError) as info:  # its IPv6 side is taken
            res.socket(socket.AF_INET6)
        assert info.value.errno == errno.EADDRINUSE


@needs_ipv6
@pytest.mark.parametrize("how", ["Reservation.bind", "res.socket(AF_INET)"])
def test_a_reclaim_that_frees_a_side_of_no_use_goes_on_to_the_closing_port(how):
    """A reclaim gives back what the block's destroy listener already has
    and stops there; the request must not stop with it.  Port A: a live
    AF_INET socket and a V6ONLY one, closed (its message comes at once).
    Port B: a dual-stack socket, connected and closed first, its FIN stuck
    behind data a peer does not read (FIN_WAIT1: no destroy message for
    minutes; a dump shows it takes no new traffic).  A request that needs B (a
    dual-stack socket: both sides; or an AF_INET one, which the wholly
    free port comes first for) gets B.  Before: the reclaim freed A's IPv6
    side, which neither request can use, and the block said "no free port"."""
    with portres.acquire(2) as res, socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        first = [res.socket(), res.socket()]
        for x in first:
            x.close()
        res.socket().close()  # a reclaim: the block's destroy listener has joined
        a4 = res.socket(socket.AF_INET)
        port_a = a4.getsockname()[1]
        a6 = res.socket(socket.AF_INET6, port=port_a)
        assert a6.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
        b = res.socket(socket.AF_INET6)
        port_b = b.getsockname()[1]
        assert port_b != port_a
        b.connect(("::ffff:127.0.0.1", listener.getsockname()[1]))
        peer, _ = listener.accept()
        try:
            # The peer reads nothing: once its window is shut, b's FIN waits
            # behind unsent data (FIN_WAIT1, orphaned, freed minutes later).
            b.setblocking(False)
            try:
                while True:
                    b.send(b"x" * 65536)
            except BlockingIOError:
                pass
            b.close()
            a6.close()
            time.sleep(0.2)  # A's IPv6 side: its message is in by now
            if how == "Reservation.bind":
                s = socket.socket(socket.AF_INET6)  # dual-stack: needs both sides of a port
                got = res.bind(s)
            else:
                s = res.socket(socket.AF_INET)
                got = s.getsockname()[1]
            with s:
                assert got == port_b
        finally:
            peer.close()
            a4.close()
