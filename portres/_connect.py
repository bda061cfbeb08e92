"""Outbound connections from a reservation: the connecting half of
``portres.connect()`` (in _core, beside ``bind``) and ``Reservation.connect()``.

A plain ``connect()`` of an unbound socket lets the kernel pick the local
port from the ephemeral range, outside the block.  Both forms here bind
first, explicitly, so the local port is the reservation's on every
platform: on Linux the package's bind takes a port of the block; on Windows
an associated socket takes its port from the block "if and when it is
bound", and binding explicitly to the wildcard with port 0 makes that
happen before ``connect()`` (whether an implicit bind by ``connect()``
counts is not documented).
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any, Optional

from . import _errors  # below _core: it never imports _core
from . import _validate as check

if TYPE_CHECKING:
    from ._core import Reservation


def _family_of(address: Any) -> int:
    """The address family a connect to ADDRESS needs: AF_INET6 for a 4-tuple
    or an IPv6 literal, AF_INET for an IPv4 literal; a name is resolved."""
    if not isinstance(address, tuple) or len(address) not in (2, 4):
        raise TypeError(f"address must be a (host, port) or (host, port, flowinfo, scope_id) "
                        f"tuple, not {address!r}")
    if len(address) == 4:
        return int(socket.AF_INET6)
    host = address[0]
    if not isinstance(host, str):
        raise TypeError(f"address host must be a str, not {type(host).__name__}")
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host.split("%", 1)[0])
            return int(family)
        except (OSError, ValueError):
            pass
    try:
        infos = socket.getaddrinfo(host, address[1], 0, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ValueError(f"cannot resolve host {check.show(host)}: {exc}") from None
    return int(infos[0][0])


def connect_socket(sock: Any, fd: int, family: int, sock_type: int, address: Any) -> None:
    """Connect SOCK (a bound socket or an object with fileno() FD) to ADDRESS."""
    if isinstance(sock, socket.socket):
        _connect(sock, address)
    else:   # an object with fileno(): connect through a socket object on its descriptor
        s = socket.socket(family, sock_type, 0, fileno=fd)
        try:
            _connect(s, address)
        finally:
            s.detach()


def _connect(sock: socket.socket, address: Any) -> None:
    try:
        sock.connect(address)
    except OSError as exc:
        if not _errors.is_code(exc, "EADDRNOTAVAIL"):
            raise
        try:
            port = sock.getsockname()[1]
        except OSError:
            port = 0
        raise _errors.explain(
            exc, f"connecting from reserved port {port} to {address!r}",
            "that 4-tuple is still in use, most likely in TIME_WAIT from an earlier "
            "connection this side closed first (Linux reuses it only with "
            "net.ipv4.tcp_timestamps on); use a larger block, let the peer close first, "
            "or keep connections open") from None


def reservation_connect(res: "Reservation", address: Any, *, host: str = "",
                        timeout: Optional[float] = None) -> socket.socket:
    """``Reservation.connect``: a new socket of RES's protocol, bound from the
    block on HOST ("" = the wildcard), then connected to ADDRESS (TCP) or
    with ADDRESS as its default peer (UDP).  TIMEOUT bounds the connect (and
    stays the socket's timeout, as with ``socket.create_connection``)."""
    family = _family_of(address)
    if host:
        try:
            socket.inet_pton(socket.AF_INET6, host.split("%", 1)[0])
            family = int(socket.AF_INET6)
        except (OSError, ValueError):
            pass
    timeout = check.timeout(timeout)
    sock = res.socket(family, host=host)
    try:
        sock.settimeout(timeout)
        _connect(sock, address)
    except BaseException:
        sock.close()
        raise
    return sock
