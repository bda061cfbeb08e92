"""A plain connect(), sendto() or bind((host, 0)) of an associated, unbound
socket never silently takes a port outside the block (issue 13): where the
kernel has IP_LOCAL_PORT_RANGE (6.3) portres narrows the socket's automatic
port choice to the block, and since every port of the block is held that
choice fails loudly.  portres.connect() keeps working beside it."""

import errno
import socket
import struct

import pytest

import portres
from tests.support import LINUX, loopback_usable

pytestmark = pytest.mark.skipif(not LINUX, reason="Linux backend behaviour (docs/platforms.md row 21)")

IP_LOCAL_PORT_RANGE = 51  # include/uapi/linux/in.h


def _kernel_has_local_port_range():
    with socket.socket() as s:
        try:
            s.setsockopt(socket.IPPROTO_IP, IP_LOCAL_PORT_RANGE, struct.pack("I", 0))
            return True
        except OSError as exc:
            assert exc.errno == errno.ENOPROTOOPT, exc
            return False


needs_range = pytest.mark.skipif(
    LINUX and not _kernel_has_local_port_range(), reason="kernel before 6.3: no IP_LOCAL_PORT_RANGE (platforms.md)"
)
FAMILIES = {"ipv4": (socket.AF_INET, "127.0.0.1"), "ipv6": (socket.AF_INET6, "::1")}


def _loopback(fam):
    """(family, loopback host) of FAM, or skip where this machine has none."""
    family, host = FAMILIES[fam]
    if not loopback_usable(family, host):
        pytest.skip(f"no {fam} loopback")
    return family, host


def _assert_in_block_or_loud(res, sock, call, loud):
    try:
        call()
    except OSError as exc:
        assert exc.errno in loud, exc
        port = sock.getsockname()[1]
        assert port == 0 or port in res.ports  # nothing bound outside the block
        return "loud"
    port = sock.getsockname()[1]
    assert port in res.ports, f"local port {port} outside the block {res.ports}"
    return "in block"


def _server(family, host, kind):
    srv = socket.socket(family, kind)
    srv.bind((host, 0))
    if kind == socket.SOCK_STREAM:
        srv.listen()
    return srv


@needs_range
@pytest.mark.parametrize("fam", list(FAMILIES))
def test_plain_connect_of_an_associated_socket_never_leaves_the_block(fam):
    family, host = _loopback(fam)
    with portres.acquire(4) as res, _server(family, host, socket.SOCK_STREAM) as srv:
        for _ in range(20):  # the kernel's choice is random: try it often
            with socket.socket(family) as s:
                portres.associate(s, res.token)
                s.settimeout(5)
                _assert_in_block_or_loud(res, s, lambda: s.connect(srv.getsockname()), {errno.EADDRNOTAVAIL})


@needs_range
@pytest.mark.parametrize("fam", list(FAMILIES))
def test_plain_udp_sendto_of_an_associated_socket_never_leaves_the_block(fam):
    family, host = _loopback(fam)
    with portres.acquire(4, protocol="udp") as res, _server(family, host, socket.SOCK_DGRAM) as srv:
        srv.settimeout(0.5)
        sent = 0
        for _ in range(20):
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                portres.associate(s, res.token)
                how = _assert_in_block_or_loud(
                    res, s, lambda: s.sendto(b"x", srv.getsockname()), {errno.EAGAIN, errno.EADDRINUSE}
                )
                sent += how == "in block"
        for _ in range(sent):  # what arrived came from the block
            assert srv.recvfrom(8)[1][1] in res.ports
        with pytest.raises(socket.timeout):  # and nothing else arrived, from any port
            srv.recvfrom(8)


@needs_range
@pytest.mark.parametrize("kind", [socket.SOCK_STREAM, socket.SOCK_DGRAM])
@pytest.mark.parametrize("fam", list(FAMILIES))
def test_plain_bind_to_port_zero_of_an_associated_socket_never_leaves_the_block(fam, kind):
    family, host = _loopback(fam)
    protocol = "tcp" if kind == socket.SOCK_STREAM else "udp"
    with portres.acquire(4, protocol=protocol) as res:
        for bind_host in ("", host):
            with socket.socket(family, kind) as s:
                portres.associate(s, res.token)
                _assert_in_block_or_loud(res, s, lambda h=bind_host: s.bind((h, 0)), {errno.EADDRINUSE})


@needs_range
def test_the_range_is_the_blocks_and_portres_connect_still_works():
    with portres.acquire(3) as res, _server(socket.AF_INET, "127.0.0.1", socket.SOCK_STREAM) as srv:
        with socket.socket() as s:
            portres.associate(s, res.token)
            lo_hi = struct.unpack("I", s.getsockopt(socket.IPPROTO_IP, IP_LOCAL_PORT_RANGE, 4))[0]
            assert (lo_hi & 0xFFFF, lo_hi >> 16) == (res.start, res.start + 2)
            portres.connect(s, srv.getsockname())
            assert s.getsockname()[1] in res.ports
            srv.accept()[0].close()
