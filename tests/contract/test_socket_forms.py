"""Reservation.socket() (the public contract on every platform): a plain
socket of the block's protocol for each address family and host form, each
port of the block once, then EADDRINUSE; a host of the wrong family is a
ValueError; a closed reservation makes none.  (The Linux fast paths behind
it: tests/linux/test_fastpaths.py.)"""

import errno
import socket

import pytest

import portres

PROTOCOLS = {"tcp": socket.SOCK_STREAM, "udp": socket.SOCK_DGRAM}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_res_socket_returns_plain_sockets_for_every_host_form(protocol):
    with portres.acquire(6, protocol=protocol) as res:
        forms = [
            (socket.AF_INET, ""),
            (socket.AF_INET, "127.0.0.1"),
            (socket.AF_INET6, ""),
            (socket.AF_INET6, "::1"),
            (2, "localhost"),
            (socket.AF_INET6, "::"),
        ]
        socks = [res.socket(family, host) for family, host in forms]
        for s, (family, host) in zip(socks, forms):
            assert type(s) is socket.socket
            assert s.family == family and s.type == PROTOCOLS[protocol]
            assert not s.get_inheritable()
            assert s.getsockname()[1] in res.ports
            if host in ("127.0.0.1", "::1"):
                assert s.getsockname()[0] == host
        assert sorted(s.getsockname()[1] for s in socks) == list(res.ports)
        # Every port has a socket: a dual-stack one, which needs a port's IPv4
        # and IPv6 sides both, finds none (on Linux the IPv4 side of the "::1"
        # socket's port, which the kernel makes V6ONLY, is still free for an
        # AF_INET one: docs/platforms.md row 33).
        with socket.socket(socket.AF_INET6, PROTOCOLS[protocol]) as dual:
            dual.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            with pytest.raises(OSError) as info:
                res.bind(dual)
            assert info.value.errno == errno.EADDRINUSE
        with pytest.raises(ValueError, match="not an IPv4 address|cannot resolve"):
            res.socket(socket.AF_INET, "::1")
        for s in socks:
            s.close()
    with pytest.raises(ValueError, match="is closed"):
        res.socket()
