"""A UDP socket bound from a reservation receives every datagram sent to it:
the placeholders that keep holding its port never take a share."""

import socket

import pytest

import portres
from tests.support.udp_lib import FORMS, bind_form, send_and_count


@pytest.mark.parametrize("name,family,host,v6only,dests", FORMS, ids=[f[0] for f in FORMS])
def test_every_datagram_reaches_the_bound_socket(name, family, host, v6only, dests):
    with portres.acquire(1, protocol="udp") as res:
        s, port = bind_form(res, family, host, v6only)
        send_and_count(s, port, dests)
        s.close()


def test_same_port_rebound_in_every_form_in_turn():
    # One port, handed out again and again in each form and back: the
    # placeholder layout follows the caller's socket without losing a datagram.
    order = FORMS + FORMS[::-1] + [FORMS[3], FORMS[2], FORMS[3]]
    with portres.acquire(1, protocol="udp") as res:
        for _name, family, host, v6only, dests in order:
            s, port = bind_form(res, family, host, v6only)
            assert port == res.start
            send_and_count(s, port, dests)
            s.close()


def test_socket_from_reservation_gets_all_datagrams():
    with portres.acquire(4, protocol="udp") as res:
        socks = [res.socket(socket.AF_INET6) for _ in range(2)] + [res.socket() for _ in range(2)]
        for s in socks:
            port = s.getsockname()[1]
            dests = ["127.0.0.1", "::1"] if s.family == socket.AF_INET6 else ["127.0.0.1"]
            send_and_count(s, port, dests)
            s.close()
