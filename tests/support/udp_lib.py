"""UDP delivery helpers shared by tests/contract/test_udp_delivery.py and
tests/linux/test_udp_delivery_linux.py: the everyday bind forms, binding one
from a reservation, and counting the datagrams a socket gets."""

import socket
import time

# (name, family, host, IPV6_V6ONLY, destinations the socket must get)
FORMS = [
    ("v4-any", socket.AF_INET, "0.0.0.0", None, ["127.0.0.1"]),
    ("v4-loopback", socket.AF_INET, "127.0.0.1", None, ["127.0.0.1"]),
    ("v6-any-dualstack", socket.AF_INET6, "::", 0, ["127.0.0.1", "::1"]),
    ("v6-any-v6only", socket.AF_INET6, "::", 1, ["::1"]),
    ("v6-loopback", socket.AF_INET6, "::1", 1, ["::1"]),
]
N = 200


def count_received(sock, expected, deadline=2.0, timeout=0.2):
    """Receive on SOCK (waiting TIMEOUT seconds at most for each datagram)
    until EXPECTED datagrams came or DEADLINE seconds passed; how many came."""
    sock.settimeout(timeout)
    got, end = 0, time.monotonic() + deadline
    while got < expected and time.monotonic() < end:
        try:
            sock.recv(64)
            got += 1
        except socket.timeout:
            pass
    return got


def send_and_count(sock, port, destinations):
    """Send N datagrams to PORT at each destination, asserting that SOCK gets
    every one of them; returns how many were sent."""
    sent = 0
    for dest in destinations:
        family = socket.AF_INET6 if ":" in dest else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as tx:
            for i in range(N):
                tx.sendto(b"%d" % i, (dest, port))
                sent += 1
                if i % 50 == 49:  # stay well inside the receive buffer
                    assert count_received(sock, 50) == 50, f"lost datagrams to {dest}"
    return sent


def bind_form(res, family, host, v6only):
    """A new UDP socket of one form, bound from the reservation RES."""
    s = socket.socket(family, socket.SOCK_DGRAM)
    if v6only is not None:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
    port = res.bind(s, host)
    return s, port
