"""The public API over the C module: runtime reservations, association,
bind and release.  Policy lives here: validation, defaults, messages."""

from __future__ import annotations

import socket
import warnings
from typing import Any, Optional, Tuple

from . import _portres
from . import _validate as check
from ._errors import explain, is_code
from ._overlapped import Overlapped
from ._platform import backend

_WILDCARD: dict[int, str] = {socket.AF_INET: "", socket.AF_INET6: ""}

# Fast paths: exact types only (bool, float and other look-alikes take the
# checked path and get its errors).
_Socket = socket.socket
_AF_INET, _AF_INET6 = socket.AF_INET, socket.AF_INET6     # the enum members
_INET, _INET6 = int(socket.AF_INET), int(socket.AF_INET6)  # small ints: one object each
_HAS_BIND_NEW = hasattr(_portres.PortReservation, "_bind_new")
_associate = _portres.associate_port_reservation
_PROTOCOLS = check.PROTOCOLS
_valid_block = check.valid_block
_FAST = backend.FAST_PATHS    # whether the C calls may be made directly


def _numeric_host(family: int, host: str) -> Tuple[str, int, int]:
    """An IP literal for HOST in FAMILY ("" stays the wildcard), with the
    flowinfo and scope id a name lookup may supply."""
    if host == "" or host == _WILDCARD.get(family):
        return "", 0, 0
    try:
        socket.inet_pton(family, host)
        return host, 0, 0
    except (OSError, ValueError):
        pass
    try:
        infos = socket.getaddrinfo(host, None, family, 0, 0, socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:  # UnicodeError: not a valid IDNA name
        raise ValueError(f"cannot resolve host {check.show(host)} for "
                         f"{socket.AddressFamily(family).name}: {exc}") from None
    addr: Any = infos[0][4]   # (host, port) or (host, port, flowinfo, scope_id)
    if family == socket.AF_INET6:
        return addr[0].split("%", 1)[0], addr[2], addr[3]
    return addr[0], 0, 0


def _socket_info(fd: int) -> Tuple[int, int, int]:
    try:
        return _portres.socket_info(fd)
    except OSError as exc:
        raise explain(exc, "inspecting the socket",
                      "not a usable socket" if is_code(exc, "ENOTSOCK")
                      else None) from None


def _bind_error(exc: OSError, what: str, res: "Optional[Reservation]", port: int = 0) -> OSError:
    blk = f"{res.start}-{res.start + res.count - 1}" if res is not None else "the reserved block"
    if is_code(exc, "EADDRINUSE"):
        of = f"of the block {blk}" if res is not None else "of its reserved block"
        detail = (f"port {port} {of} is already handed out" if port else
                  f"no free port left in the reserved block {blk}; close a socket bound "
                  f"from it or acquire a larger block")
    elif is_code(exc, "EISCONN"):
        detail = "the socket is already bound; associate it with the reservation before bind()"
    elif is_code(exc, "EPROTOTYPE"):
        proto = res.protocol if res is not None else "its"
        detail = f"the socket's type does not match the reservation's protocol ({proto})"
    elif is_code(exc, "EADDRNOTAVAIL") and port:
        detail = f"port {port} is outside the reserved block {blk}"
    elif is_code(exc, "EAFNOSUPPORT"):
        detail = "the address family does not match the socket's"
    elif is_code(exc, "EBADF") and res is not None:
        detail = "the reservation is closed"
    elif is_code(exc, "EACCES"):
        detail = None
    else:
        detail = None
    return explain(exc, what, detail)


class Reservation:
    """A block of ports held by this process (a runtime reservation).

    Sockets bound from it take its ports; no other program can bind them.
    It ends when closed (also by ``with``), when collected, or at exit.
    """

    __slots__ = ("_res", "start", "count", "token", "protocol", "ports", "_type", "__weakref__")

    def __init__(self, res: Any, protocol: str) -> None:
        self._res = res
        self.start: int = res.start
        self.count: int = res.count
        self.token: int = res.token
        self.protocol: str = protocol
        self.ports: range = range(self.start, self.start + self.count)
        self._type = check.SOCK_TYPES[protocol]

    @property
    def closed(self) -> bool:
        return bool(self._res.closed)

    def socket(self, family: int = socket.AF_INET, host: str = "", port: int = 0) -> socket.socket:
        """A new socket of this reservation's protocol, bound to a free port
        of the block on HOST ("" = all addresses of FAMILY), or to PORT when
        it is not 0 (a port of the block)."""
        # Fast path (Linux): the socket is made here exactly as
        # socket.socket() makes it, then bound in the block by C with no
        # check (it is new) and no getsockname() to wrap a descriptor.
        if port.__class__ is int and port == 0 and _HAS_BIND_NEW and host.__class__ is str and \
                (family is _AF_INET or family is _AF_INET6 or family is _INET or family is _INET6):
            res = self._res
            sock = None
            try:
                sock = _Socket(family, self._type)
                res._bind_new(sock.fileno(), family, host)
            except OSError as exc:   # EMFILE from socket() too: say what failed
                if sock is not None:
                    sock.close()
                elif exc.filename is None:
                    exc.filename = "socket"   # Python's own call: name it, as C does
                if res.closed:
                    raise ValueError(f"{self!r} is closed") from None
                raise _bind_error(exc, "binding a new socket from the reservation", self) from None
            except ValueError:   # not an IP literal: resolved below
                if sock is not None:
                    sock.close()
            else:
                return sock
        if self._res.closed:
            raise ValueError(f"{self!r} is closed")
        family = check.family(family)
        port = self._port_of_block(port)
        h, flowinfo, scope_id = _numeric_host(family, check.host(host))
        try:
            fd, _port = self._res.socket(family, h, port, flowinfo, scope_id)
        except OSError as exc:
            raise _bind_error(exc, "binding a new socket from the reservation", self, port) from None
        return socket.socket(family, self._type, 0, fd)

    def _port_of_block(self, port: Any) -> int:
        """PORT checked: 0 (any free port) or a port of this block."""
        port = check.port(port)
        if port and port not in self.ports:
            raise ValueError(f"port {port} is outside the reserved block "
                             f"{self.start}-{self.start + self.count - 1}")
        return port

    def bind(self, sock: Any, host: str = "") -> int:
        """Bind the unbound SOCK to a free port of the block on HOST and
        return the port (associate + bind)."""
        if self._res.closed:
            raise ValueError(f"{self!r} is closed")
        fd = check.fileno(sock)
        h = check.host(host)
        family = getattr(sock, "family", None)
        if not isinstance(family, int):
            family = _socket_info(fd)[0]
        if family not in check.FAMILIES:
            raise ValueError(f"sock must be an AF_INET or AF_INET6 socket, not family {family}")
        h, flowinfo, scope_id = _numeric_host(family, h)
        try:
            return int(self._res.bind(fd, family, h, 0, flowinfo, scope_id))
        except OSError as exc:
            raise _bind_error(exc, "binding the socket from the reservation", self) from None

    # --- r10-feat: outbound (portres/_connect.py) ---
    def connect(self, address: Any, *, host: str = "",
                timeout: Optional[float] = None) -> "_Socket":
        """A new socket bound from the block on HOST, connected to ADDRESS
        (TCP) or with ADDRESS as its default peer (UDP)."""
        from ._connect import reservation_connect
        return reservation_connect(self, address, host=host, timeout=timeout)
    # --- end r10-feat ---

    def close(self) -> None:
        """Release the reservation.  Idempotent."""
        try:
            self._res.close()
        except OSError as exc:
            raise explain(exc, "releasing the reservation") from None

    def __enter__(self) -> "Reservation":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        res = getattr(self, "_res", None)
        if res is not None and not res.closed:
            warnings.warn(f"unclosed {self!r}", ResourceWarning, stacklevel=2, source=self)
            res.close()

    def __repr__(self) -> str:
        state = "closed" if self._res.closed else "held"
        return (f"<portres.Reservation {self.protocol} {self.start}-{self.start + self.count - 1} "
                f"({self.count} ports) token={self.token:#x} {state}>")


def acquire(count: int, *, protocol: str = "tcp", start: int = 0) -> Reservation:
    """Reserve COUNT consecutive ports for this process (start 0: any free
    block of the ephemeral range)."""
    proto = _PROTOCOLS.get(protocol) if protocol.__class__ is str else None
    if (proto is None or count.__class__ is not int or start.__class__ is not int
            or not _valid_block(start, count) or not _FAST):
        protocol = check.protocol(protocol)    # the checked path, and its errors
        start, count = check.block(start, count)
        backend.check_build()
        proto = check.PROTOCOLS[protocol]
    try:
        res = _portres.acquire_port_reservation(proto, start, count)
    except OSError as exc:
        raise _acquire_error(exc, protocol, start, count) from None
    return Reservation(res, protocol)


def _acquire_error(exc: OSError, protocol: str, start: int, count: int) -> OSError:
    what = f"reserving {count} {protocol.upper()} port{'s' if count > 1 else ''}"
    detail = None
    conflict = getattr(exc, "conflict_port", 0)
    if is_code(exc, "EADDRINUSE"):
        if start:
            at = f"port {conflict}" if conflict else "a port"
            detail = f"{at} of the block {start}-{start + count - 1} is in use or reserved"
        else:
            detail = "no free block of that size in the ephemeral port range"
            # --- r10-feat: name the TIME_WAIT sockets that crowd the range ---
            from ._timewait import time_wait_note
            note = time_wait_note(protocol)
            if note:
                detail += "; " + note
            # --- end r10-feat ---
    elif is_code(exc, "EMFILE"):
        detail = ("the process cannot open one socket per port: raise the hard "
                  "RLIMIT_NOFILE (ulimit -Hn) or reserve fewer ports")
    elif is_code(exc, "EACCES"):
        detail = backend.acquire_denied_detail(start, count)
    return explain(exc, what, detail)


def associate(sock: Any, token: int, *, timeout: Optional[float] = None) -> None:
    """Associate the unbound SOCK with the reservation TOKEN: its next bind
    to port 0 takes a port of the block (SIO_ASSOCIATE_PORT_RESERVATION).

    Blocks until the kernel is done, with the GIL released; TIMEOUT (seconds)
    bounds the wait: the operation is then cancelled and reaped and
    TimeoutError raised.  Ctrl+C cancels it too."""
    if (sock.__class__ is _Socket and token.__class__ is int and timeout is None
            and 0 < token <= check.TOKEN_MAX and _FAST):
        fd = sock.fileno()
        if fd >= 0:
            try:
                _associate(fd, token)   # completes at once on Linux
                return
            except OSError:
                pass                    # the full path below explains it
    fd = check.fileno(sock)
    token = check.token(token)
    timeout = check.timeout(timeout)
    backend.check_build()
    try:
        backend.associate(fd, token, sock, timeout)
    except TimeoutError:
        raise
    except OSError as exc:
        if not backend.knows_persistent(exc, token):
            raise _associate_error(exc, token) from None
        try:
            _portres.associate_port_reservation(fd, token)
        except OSError as exc2:
            raise _associate_error(exc2, token) from None


def associate_nowait(sock: Any, token: int) -> Overlapped:
    """Start the association in overlapped mode; return the Overlapped."""
    fd = check.fileno(sock)
    token = check.token(token)
    backend.check_build()
    try:
        op = _portres.associate_port_reservation(fd, token, True, sock)
    except OSError as exc:
        if not backend.knows_persistent(exc, token):
            raise _associate_error(exc, token) from None
        try:
            op = _portres.associate_port_reservation(fd, token, True, sock)
        except OSError as exc2:
            raise _associate_error(exc2, token) from None
    return Overlapped(op, lambda exc: _associate_error(exc, token))


async def associate_async(sock: Any, token: int) -> None:
    """Associate without blocking the event loop: asyncio (proactor or
    selector loop), trio, or anyio on either.  Cancelling the task cancels
    the I/O."""
    # --- r10-feat: any event loop (portres/_async.py) ---
    from ._async import wait_any
    await wait_any(associate_nowait(sock, token))
    # --- end r10-feat ---


def _associate_error(exc: OSError, token: int) -> OSError:
    what = "associating the socket with the reservation"
    if is_code(exc, "EISCONN"):
        return explain(exc, what, "the socket is already bound; associate it before bind()")
    if is_code(exc, "ENOENT"):
        return explain(exc, what, f"no reservation with token {token:#x} is held by this process")
    if is_code(exc, "EPROTOTYPE"):
        return explain(exc, what, "the socket's type does not match the reservation's protocol")
    if is_code(exc, "EOPNOTSUPP"):
        return explain(exc, what, "not a TCP/UDP socket (AF_INET or AF_INET6, stream or "
                       "datagram), or the provider lacks support")
    return explain(exc, what)


def bind(sock: Any, address: Any) -> int:
    """Bind SOCK to ADDRESS like ``sock.bind``, from its reservation when it
    is associated (port 0 takes a free port of the block).  Returns the port."""
    fd = check.fileno(sock)
    family = getattr(sock, "family", None)
    if not isinstance(family, int):
        family = _socket_info(fd)[0]
    if family not in check.FAMILIES:
        raise ValueError(f"sock must be an AF_INET or AF_INET6 socket, not family {family}")
    h, port, flowinfo, scope_id = check.address(family, address)
    h, fi, sc = _numeric_host(family, h)
    try:
        return int(_portres.bind(fd, family, h, port, flowinfo or fi, scope_id or sc))
    except OSError as exc:
        raise _bind_error(exc, f"bind to {address!r}", None, port) from None


def release(sock: Any, token: int) -> None:
    """End the runtime reservation TOKEN of this process
    (SIO_RELEASE_PORT_RESERVATION, issued on SOCK)."""
    fd = check.fileno(sock)
    token = check.token(token)
    try:
        _portres.release_port_reservation(fd, token)
    except OSError as exc:
        detail = (f"no reservation with token {token:#x} is held by this process"
                  if is_code(exc, "ENOENT") else None)
        raise explain(exc, "releasing the reservation", detail) from None
