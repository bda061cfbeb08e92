"""The public API over the C module: runtime reservations, association,
bind and release.  Policy lives here: validation, defaults, messages."""

from __future__ import annotations

import os
import socket
import warnings
from typing import Any, Optional, Tuple

from . import _connect, _portres
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


def _socket_uid(fd: int) -> int:
    """The uid owning the socket FD (the one SO_REUSEPORT compares)."""
    try:
        return os.fstat(fd).st_uid
    except OSError:
        return os.geteuid()


def _bind_error(exc: OSError, what: str, res: "Optional[Reservation]", port: int = 0,
                fd: int = -1, sock_uid: Optional[int] = None) -> OSError:
    # issue 14: each detail is the cause detected, and names the block once.
    blk = (f"the reserved block {res.start}-{res.start + res.count - 1}" if res is not None
           else "the reserved block the socket is associated with")
    system = None
    owner = getattr(res._res, "_owner", -1) if res is not None else -1   # Linux only
    if is_code(exc, "EPERM") and owner >= 0 and sock_uid is not None and sock_uid != owner:
        detail = (f"the reservation's placeholder sockets belong to uid {owner} and this socket "
                  f"to uid {sock_uid}, and a port is shared only between sockets of one uid "
                  f"(the process changed its uid after acquire()); pass owner={sock_uid} to "
                  f"portres.acquire() before dropping privileges, or acquire after the drop")
    elif is_code(exc, "EADDRINUSE") and res is None and not port and exc.filename == "bind":
        # the kernel's own bind(port 0): the socket is associated with no live block
        detail = ("the system found no free port for it: every port of the socket's local port "
                  "range is taken (the ephemeral range, or the range IP_LOCAL_PORT_RANGE confines "
                  "it to; an association with a reservation that is closed since leaves that "
                  "range on the socket)")
    elif is_code(exc, "EADDRINUSE"):
        detail = (f"port {port} of {blk} is already bound by another socket from the block "
                  f"(each side of a port, IPv4 and IPv6, is handed to one socket at a time; a "
                  f"dual-stack socket takes both)" if port
                  else _no_free_port(res, blk))
    elif is_code(exc, "EISCONN"):
        detail = _already_bound(fd, "associate it with the reservation before bind()")
    elif is_code(exc, "EPROTOTYPE"):
        proto = res.protocol if res is not None else "its"
        detail = f"the socket's type does not match the reservation's protocol ({proto})"
    elif is_code(exc, "EADDRNOTAVAIL") and port:
        detail = f"port {port} is outside {blk}"
    elif is_code(exc, "EOPNOTSUPP"):
        detail = _not_tcp_udp(fd)
    elif is_code(exc, "ENOTSOCK"):
        detail = f"descriptor {fd} is not a socket" if fd >= 0 else "not a socket"
    elif is_code(exc, "EAFNOSUPPORT"):
        detail = "the address family does not match the socket's"
    elif is_code(exc, "EBADF") and res is not None and res.closed:
        detail = "the reservation is closed"
    elif is_code(exc, "EBADF"):
        detail = f"the socket's descriptor {fd} is not open" if fd >= 0 else "the socket is not open"
    elif is_code(exc, "ENOENT") and res is None:
        detail = ("the persistent reservation the socket was associated with is gone: the system no "
                  "longer reserves all of its ports")
    else:
        detail = None
    return explain(exc, what, detail, system)


# TCP states (Linux numbering, as port_sockets gives them on both platforms)
# of a connection that is closing: it holds its port until it ends.
_CLOSING = {4: "FIN_WAIT1", 5: "FIN_WAIT2", 6: "TIME_WAIT", 9: "LAST_ACK", 11: "CLOSING"}


def _no_free_port(res: "Optional[Reservation]", blk: str) -> str:
    generic = f"no free port left in {blk}; close a socket bound from it or acquire a larger block"
    if res is None or res.protocol != "tcp":
        return generic
    try:
        rows = _portres.port_sockets(_portres.TCP, res.start, res.start + res.count - 1)
    except OSError:
        return generic
    closing: "dict[int, str]" = {}
    for _family, state, port, _owner, _inode in rows:
        if state in _CLOSING:
            closing.setdefault(port, _CLOSING[state])
    if not closing:
        return generic
    states = ", ".join(sorted(set(closing.values())))
    lasts = " (TIME_WAIT lasts up to 60 s)" if "TIME_WAIT" in closing.values() else ""
    if len(closing) >= res.count:
        return (f"no free port left in {blk}: every port still has a closing connection in the "
                f"kernel ({states}), which holds it until it ends{lasts}; wait, or acquire a "
                f"larger block")
    return (f"no free port left in {blk}: {len(closing)} of its {res.count} ports still have a "
            f"closing connection in the kernel ({states}) and the others have a socket bound "
            f"from the block; close one, or acquire a larger block")


def _not_tcp_udp(fd: int) -> str:
    """Why a socket cannot take a port of a reservation (EOPNOTSUPP): its
    family or type, as the kernel reports them."""
    try:
        family, sock_type, _bound = _portres.socket_info(fd)
    except OSError:
        return "not a TCP or UDP socket over IPv4 or IPv6"
    if family in check.FAMILIES and sock_type in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        # Both are right: the refusal is the system's (a Windows provider
        # that lacks the IOCTL), not a rule of ours.
        return "the socket's provider does not support port reservations"
    if family not in check.FAMILIES:
        return (f"not an IPv4 or IPv6 socket (family {family}); only AF_INET and AF_INET6 "
                f"sockets take a port of a reservation")
    return (f"not a TCP or UDP socket (socket type {sock_type}); only stream and datagram "
            f"sockets take a port of a reservation")


def _already_bound(fd: int, hint: str = "associate it before bind()") -> str:
    """Why a socket cannot be associated or bound from a block (EISCONN)."""
    try:
        _family, sock_type, bound = _portres.socket_info(fd)
    except OSError:
        return f"the socket is already bound; {hint}"
    if sock_type not in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        return (f"not a TCP or UDP socket (socket type {sock_type}); only stream and datagram "
                f"sockets bind from a reservation")
    try:
        with socket.socket(fileno=os.dup(fd)) as probe:
            probe.getpeername()
        return (f"the socket is already connected (connect() bound it to port {bound}, of the "
                f"kernel's choosing); associate it with the reservation before connect() or bind()")
    except OSError:
        pass
    return f"the socket is already bound; {hint} (it is bound to port {bound})"


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
        backend.runtime_opened(self)  # issue 14: what `portres list --runtime` finds

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
                uid = None
                if sock is not None:
                    uid = _socket_uid(sock.fileno())
                    sock.close()
                elif exc.filename is None:
                    exc.filename = "socket"   # Python's own call: name it, as C does
                if res.closed:
                    raise ValueError(f"{self!r} is closed") from None
                raise _bind_error(exc, "binding a new socket from the reservation", self,
                                  sock_uid=uid) from None
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
            uid = _socket_uid(-1) if is_code(exc, "EPERM") else None   # the new socket's: ours
            raise _bind_error(exc, "binding a new socket from the reservation", self, port,
                              sock_uid=uid) from None
        return socket.socket(family, self._type, 0, fd)

    def _port_of_block(self, port: Any) -> int:
        """PORT checked: 0 (any free port) or a port of this block."""
        number = check.port(port)
        if number and number not in self.ports:
            raise ValueError(f"port {number} is outside the reserved block "
                             f"{self.start}-{self.start + self.count - 1}")
        return number

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
            uid = _socket_uid(fd) if is_code(exc, "EPERM") else None
            raise _bind_error(exc, "binding the socket from the reservation", self, 0, fd,
                              sock_uid=uid) from None

    def connect(self, address: Any, *, host: str = "",
                timeout: Optional[float] = None) -> "_Socket":
        """A new socket bound from the block on HOST, connected to ADDRESS
        (TCP) or with ADDRESS as its default peer (UDP)."""
        return _connect.reservation_connect(self, address, host=host, timeout=timeout)

    def close(self) -> None:
        """Release the reservation.  Idempotent."""
        try:
            self._res.close()
        except OSError as exc:
            raise explain(exc, "releasing the reservation") from None
        backend.runtime_closed(self)  # issue 14

    def __enter__(self) -> "Reservation":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        res = getattr(self, "_res", None)
        if res is not None and not res.closed:
            warnings.warn(f"unclosed {self!r}", ResourceWarning, stacklevel=2, source=self)
            res.close()
            backend.runtime_closed(self)  # issue 14

    def __repr__(self) -> str:
        state = "closed" if self._res.closed else "held"
        return (f"<portres.Reservation {self.protocol} {self.start}-{self.start + self.count - 1} "
                f"({self.count} ports) token={self.token:#x} {state}>")


def acquire(count: int, *, protocol: str = "tcp", start: int = 0,
            owner: Optional[int] = None) -> Reservation:
    """Reserve COUNT consecutive ports for this process (start 0: any free
    block of the ephemeral range).

    OWNER (Linux): the uid the process will drop to before it binds from the
    block (reserve as root, drop, bind); the block's placeholder sockets are
    given to it, which needs CAP_CHOWN.  See docs/platforms.md."""
    if owner is not None:
        return _acquire_for(owner, count, protocol, start)
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


def _acquire_for(owner: Any, count: int, protocol: str, start: int) -> Reservation:
    """acquire(..., owner=OWNER): the block, its placeholders given to OWNER."""
    if owner.__class__ is not int:
        raise TypeError(f"owner must be an int uid, not {type(owner).__name__}")
    if not 0 <= owner <= 0xFFFFFFFE:
        raise ValueError(f"owner must be a uid in 0..4294967294, not {owner}")
    if not _HAS_BIND_NEW:   # the Windows module: reservations belong to a process, not a uid
        raise ValueError("owner= is a Linux uid; on Windows a runtime reservation belongs to "
                         "the process that acquired it")
    res = acquire(count, protocol=protocol, start=start)
    try:
        res._res._set_owner(owner)
    except OSError as exc:
        res.close()
        detail = (f"giving the placeholder sockets to uid {owner} (fchown) needs CAP_CHOWN"
                  if is_code(exc, "EPERM") else None)
        raise explain(exc, f"reserving {count} {protocol.upper()} ports for uid {owner}",
                      detail) from None
    return res


def _acquire_error(exc: OSError, protocol: str, start: int, count: int) -> OSError:
    what = f"reserving {count} {protocol.upper()} port{'s' if count > 1 else ''}"
    detail = None
    conflict = getattr(exc, "conflict_port", 0)
    if is_code(exc, "EADDRINUSE"):
        if start and conflict:   # the backend knows which port (Linux)
            detail = (f"port {conflict} of the block {start}-{start + count - 1} is already bound "
                      f"by another socket (`portres check {conflict}` names it)")
        elif start:   # the system does not say which port, nor why (Windows)
            detail = (f"a port of the block {start}-{start + count - 1} is in use or reserved "
                      f"(the system does not say which)")
        else:
            detail = "no free block of that size in the ephemeral port range"
            from ._timewait import time_wait_note
            note = time_wait_note(protocol)
            if note:
                detail += "; " + note
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
        try:   # a persistent token: the backend resolves it and hands over the block
            backend.associate_persistent(exc, fd, token)
        except OSError as exc2:
            raise _associate_error(exc2, token, fd) from None


def associate_nowait(sock: Any, token: int) -> Overlapped:
    """Start the association in overlapped mode; return the Overlapped."""
    fd = check.fileno(sock)
    token = check.token(token)
    backend.check_build()
    try:
        op = _portres.associate_port_reservation(fd, token, True, sock)
    except OSError as exc:
        try:   # a persistent token: the backend resolves it and hands over the block
            op = backend.associate_persistent_nowait(exc, fd, token, sock)
        except OSError as exc2:
            raise _associate_error(exc2, token, fd) from None
    return Overlapped(op, lambda exc: _associate_error(exc, token, fd))


async def associate_async(sock: Any, token: int) -> None:
    """Associate without blocking the event loop: asyncio (proactor or
    selector loop), trio, or anyio on either.  Cancelling the task cancels
    the I/O."""
    from ._async import wait_any
    await wait_any(associate_nowait(sock, token))


def _associate_error(exc: OSError, token: int, fd: int = -1) -> OSError:
    what = "associating the socket with the reservation"
    if is_code(exc, "EISCONN"):
        return explain(exc, what, _already_bound(fd))
    if is_code(exc, "ENOENT"):
        # Not a file: the strerror of ENOENT would say "No such file or directory".
        return explain(exc, what, f"no reservation with token {token:#x} is held by this process, "
                       f"nor is it a persistent reservation's that the system still holds",
                       "ENOENT: no such reservation")
    if is_code(exc, "EPROTOTYPE"):
        return explain(exc, what, "the socket's type does not match the reservation's protocol")
    if is_code(exc, "EACCES") and backend.ASSOCIATE_DENIED:
        return explain(exc, what, backend.ASSOCIATE_DENIED)
    if is_code(exc, "EOPNOTSUPP"):
        return explain(exc, what, _not_tcp_udp(fd))
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
        raise _bind_error(exc, f"bind to {address!r}", None, port, fd) from None


def connect(sock: Any, address: Any) -> None:
    """Connect SOCK to ADDRESS with a local port from its reservation.

    SOCK must be associated with a reservation (``portres.associate``) and
    may be unbound, or already bound from the block (``Reservation.bind``).
    An unbound socket is first bound to the wildcard of its family with
    port 0, which takes a free port of the block; then ``connect()`` runs
    (TCP: the handshake, honouring the socket's timeout; UDP: sets the
    default peer).  A socket that is not associated binds like any socket,
    to a port the kernel picks: associate it first."""
    fd = check.fileno(sock)
    family, sock_type, bound = _socket_info(fd)
    if family not in check.FAMILIES:
        raise ValueError(f"sock must be an AF_INET or AF_INET6 socket, not family {family}")
    if not bound:
        bind(sock, (_WILDCARD[family], 0))
    _connect.connect_socket(sock, fd, family, sock_type, address)


def release(sock: Any, token: int) -> None:
    """End the runtime reservation TOKEN of this process
    (SIO_RELEASE_PORT_RESERVATION, issued on SOCK)."""
    fd = check.fileno(sock)
    token = check.token(token)
    try:
        _portres.release_port_reservation(fd, token)
    except OSError as exc:
        unknown = is_code(exc, "ENOENT")
        detail = (f"no reservation with token {token:#x} is held by this process" if unknown
                  else f"descriptor {fd} is not a socket" if is_code(exc, "ENOTSOCK") else None)
        raise explain(exc, "releasing the reservation", detail,
                      "ENOENT: no such reservation" if unknown else None) from None
