"""pytest fixtures for ports that belong to the test (registered through the
``pytest11`` entry point when portres is installed; ``-p no:portres``
turns it off).

    def test_server(port_reservation):
        srv = port_reservation.socket()        # bound in the block, no race
        srv.listen()

``port_reservation``        a Reservation of 4 TCP ports, held for the test
``port_reservation_factory`` call it with count=, protocol= (and start=);
                            everything it made is closed at teardown
``reserved_listener``       a listening TCP socket bound from a reservation,
                            inheritable, for a server subprocess to take
                            (pass_fds=[sock.fileno()])

Safe under pytest-xdist: a runtime reservation is a block no other process
can take, so workers never share a port (nor does anything else running on
the machine, unlike a port that was merely free when it was picked).
"""

from __future__ import annotations

import socket
from typing import Any, Callable, Iterator, List

import pytest

import portres

DEFAULT_COUNT = 4


@pytest.fixture
def port_reservation_factory() -> Iterator[Callable[..., portres.Reservation]]:
    """Make reservations for the test: ``factory(count=1, protocol="tcp",
    start=0)``.  All are released at teardown."""
    made: List[portres.Reservation] = []

    def factory(count: int = 1, *, protocol: str = "tcp", start: int = 0) -> portres.Reservation:
        res = portres.acquire(count, protocol=protocol, start=start)
        made.append(res)
        return res

    yield factory
    for res in made:
        res.close()


@pytest.fixture
def port_reservation(port_reservation_factory: Callable[..., portres.Reservation]) -> portres.Reservation:
    """A Reservation of 4 TCP ports, held for the test."""
    return port_reservation_factory(DEFAULT_COUNT)


@pytest.fixture
def reserved_listener(port_reservation_factory: Callable[..., Any]) -> Iterator[socket.socket]:
    """A listening TCP socket on 127.0.0.1 bound from a 1-port reservation,
    inheritable so that a server subprocess can take it:

        proc = subprocess.Popen([..., "--fd", str(sock.fileno())],
                                pass_fds=[sock.fileno()])

    The block stays held for the test, so nothing else can take the port
    even after the server closes it.  The hand-off is POSIX (pass_fds); on
    Windows a runtime reservation is usable only by its own process."""
    res = port_reservation_factory(1)
    sock = res.socket(socket.AF_INET, host="127.0.0.1")
    sock.listen()
    sock.set_inheritable(True)
    try:
        yield sock
    finally:
        sock.close()
