"""A UDP socket bound from a reservation receives every datagram sent to it:
the placeholders that keep holding its port never take a share."""

import socket
import time

import pytest

import portres

# (name, family, host, IPV6_V6ONLY, destinations the socket must get)
FORMS = [
    ("v4-any", socket.AF_INET, "0.0.0.0", None, ["127.0.0.1"]),
    ("v4-loopback", socket.AF_INET, "127.0.0.1", None, ["127.0.0.1"]),
    ("v6-any-dualstack", socket.AF_INET6, "::", 0, ["127.0.0.1", "::1"]),
    ("v6-any-v6only", socket.AF_INET6, "::", 1, ["::1"]),
    ("v6-loopback", socket.AF_INET6, "::1", 1, ["::1"]),
]
N = 200


def _count(sock, expected, deadline=2.0):
    sock.settimeout(0.2)
    got, end = 0, time.monotonic() + deadline
    while got < expected and time.monotonic() < end:
        try:
            sock.recv(64)
            got += 1
        except socket.timeout:
            pass
    return got


def _send_and_count(sock, port, destinations):
    sent = 0
    for dest in destinations:
        family = socket.AF_INET6 if ":" in dest else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as tx:
            for i in range(N):
                tx.sendto(b"%d" % i, (dest, port))
                sent += 1
                if i % 50 == 49:  # stay well inside the receive buffer
                    assert _count(sock, 50) == 50, f"lost datagrams to {dest}"
    return sent


def _bind_form(res, family, host, v6only):
    s = socket.socket(family, socket.SOCK_DGRAM)
    if v6only is not None:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
    port = res.bind(s, host)
    return s, port


@pytest.mark.parametrize("name,family,host,v6only,dests", FORMS, ids=[f[0] for f in FORMS])
def test_every_datagram_reaches_the_bound_socket(name, family, host, v6only, dests):
    with portres.acquire(1, protocol="udp") as res:
        s, port = _bind_form(res, family, host, v6only)
        _send_and_count(s, port, dests)
        s.close()


def test_same_port_rebound_in_every_form_in_turn():
    # One port, handed out again and again in each form and back: the
    # placeholder layout follows the caller's socket without losing a datagram.
    order = FORMS + FORMS[::-1] + [FORMS[3], FORMS[2], FORMS[3]]
    with portres.acquire(1, protocol="udp") as res:
        for _name, family, host, v6only, dests in order:
            s, port = _bind_form(res, family, host, v6only)
            assert port == res.start
            _send_and_count(s, port, dests)
            s.close()


def test_socket_from_reservation_gets_all_datagrams():
    with portres.acquire(4, protocol="udp") as res:
        socks = [res.socket(socket.AF_INET6) for _ in range(2)] + [res.socket() for _ in range(2)]
        for s in socks:
            port = s.getsockname()[1]
            dests = ["127.0.0.1", "::1"] if s.family == socket.AF_INET6 else ["127.0.0.1"]
            _send_and_count(s, port, dests)
            s.close()
