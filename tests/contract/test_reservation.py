"""Runtime reservations against the real kernel: what a held block refuses,
what it hands out, and that it ends when released."""

import errno
import socket
import subprocess
import sys

import pytest

import portres
from tests.support import (
    LINUX,
    WINDOWS,
)

PROTOCOLS = {"tcp": socket.SOCK_STREAM, "udp": socket.SOCK_DGRAM}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_wildcard_block_is_in_the_ephemeral_range(protocol):
    lo, hi = 1, 65535
    if LINUX:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = map(int, f.read().split())
    with portres.acquire(16, protocol=protocol) as res:
        assert res.count == 16 and res.protocol == protocol
        assert res.ports == range(res.start, res.start + 16)
        assert lo <= res.start and res.start + 15 <= hi
        assert 0 < res.token < 2**64
        assert not res.closed
    assert res.closed


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_specific_block(protocol):
    with portres.acquire(4, protocol=protocol) as probe:
        start = probe.start
    with portres.acquire(4, protocol=protocol, start=start) as res:
        assert res.start == start and res.ports == range(start, start + 4)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_second_reservation_of_the_same_block_is_refused(protocol):
    with portres.acquire(3, protocol=protocol) as res:
        with pytest.raises(OSError) as info:
            portres.acquire(3, protocol=protocol, start=res.start)
        if WINDOWS:  # WSAEADDRINUSE, or ERROR_SHARING_VIOLATION for an overlapping reservation
            assert info.value.winerror in (10048, 32), info.value
        else:
            assert info.value.errno == errno.EADDRINUSE, info.value
        assert f"block {res.start}-{res.start + 2}" in str(info.value)
        # ... and from another process of the same uid
        code = (
            "import portres,sys\n"
            f"try: portres.acquire(1, protocol={protocol!r}, start={res.start + 1})\n"
            "except OSError as e: print('refused', e.errno); sys.exit(0)\n"
            "print('acquired'); sys.exit(1)\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "refused" in out.stdout


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_sockets_land_in_the_block_each_port_once(protocol, family):
    with portres.acquire(8, protocol=protocol) as res:
        socks = [res.socket(family) for _ in range(8)]
        ports = [s.getsockname()[1] for s in socks]
        assert sorted(ports) == list(res.ports)
        for s in socks:
            assert s.type == PROTOCOLS[protocol] and s.family == family
            assert not s.get_inheritable()
        with pytest.raises(OSError) as info:
            res.socket(family)
        assert info.value.errno == errno.EADDRINUSE
        assert "no free port left in the reserved block" in str(info.value)
        assert not res.closed  # exhaustion leaves the block held
        for s in socks:
            s.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_closed_socket_gives_its_port_back_to_the_block(protocol):
    with portres.acquire(2, protocol=protocol) as res:
        a, b = res.socket(), res.socket()
        port_a = a.getsockname()[1]
        a.close()
        c = res.socket()
        assert c.getsockname()[1] == port_a
        with pytest.raises(OSError):
            res.socket()
        b.close()
        c.close()


def test_bind_existing_socket_and_serve():
    with portres.acquire(4) as res:
        server = socket.socket()
        port = res.bind(server, "127.0.0.1")
        assert port in res.ports and server.getsockname() == ("127.0.0.1", port)
        server.listen()
        with socket.create_connection(("127.0.0.1", port)) as client:
            conn, _ = server.accept()
            client.sendall(b"ping")
            assert conn.recv(4) == b"ping"
            conn.close()
        server.close()


def test_bind_refuses_a_bound_socket_and_a_mismatched_type():
    with portres.acquire(2) as res:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            with pytest.raises(OSError, match="associate it with the reservation before bind"):
                res.bind(s)
        with socket.socket(type=socket.SOCK_DGRAM) as u:
            with pytest.raises(OSError, match="does not match the reservation's protocol"):
                res.bind(u)
            assert u.getsockname()[1] == 0  # left unbound


def test_associate_then_bind():
    with portres.acquire(3, protocol="udp") as res:
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        portres.associate(s, res.token)
        port = portres.bind(s, ("::1", 0))
        assert port in res.ports and s.getsockname()[1] == port
        # a specific port of the block
        t = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        portres.associate(t, res.token)
        want = next(p for p in res.ports if p != port)
        assert portres.bind(t, ("127.0.0.1", want)) == want
        # outside the block: refused, and nothing bound
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        portres.associate(u, res.token)
        with pytest.raises(OSError, match="outside the reserved block"):
            portres.bind(u, ("127.0.0.1", res.start - 1 if res.start > 1 else res.start + 3))
        # an unassociated socket binds normally
        v = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        got = portres.bind(v, ("127.0.0.1", 0))
        assert got == v.getsockname()[1] and got != 0
        assert got not in res.ports  # the kernel's choice never lands in a held block
        for x in (s, t, u, v):
            x.close()


def test_associate_errors():
    with portres.acquire(1) as res:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            with pytest.raises(OSError, match="already bound; associate it before bind"):
                portres.associate(s, res.token)
        with socket.socket(type=socket.SOCK_DGRAM) as u:
            with pytest.raises(OSError, match="does not match"):
                portres.associate(u, res.token)
    with socket.socket() as s:
        with pytest.raises(OSError, match="no reservation with token"):
            portres.associate(s, res.token)  # released


def test_release_by_token():
    res = portres.acquire(2)
    with socket.socket() as s:
        portres.release(s, res.token)
        assert res.closed
        with pytest.raises(OSError, match="no reservation with token"):
            portres.release(s, res.token)
    res.close()  # idempotent
