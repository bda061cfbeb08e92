"""Type stubs for the C module portres._portres (src/_*.c; backends in src/linux/, src/windows/).

One function per Win32 call; the portres package validates arguments and
explains errors on top.  Sockets are passed as descriptors (Windows SOCKET
values as ints), tokens as non-zero unsigned 64-bit ints, ports in host order.
"""

import sys
from typing import Final, Literal, final, overload

TCP: Final[int]
UDP: Final[int]
SIO_ACQUIRE_PORT_RESERVATION: Final[int]
SIO_RELEASE_PORT_RESERVATION: Final[int]
SIO_ASSOCIATE_PORT_RESERVATION: Final[int]
BACKEND: Final[str]  # "windows" or "linux"

@final
class PortReservation:
    """A runtime port reservation held by this process (not instantiable)."""

    @property
    def start(self) -> int: ...
    @property
    def count(self) -> int: ...
    @property
    def token(self) -> int: ...
    @property
    def protocol(self) -> int: ...
    @property
    def closed(self) -> bool: ...
    def bind(
        self,
        socket: int,
        family: int,
        host: str,
        port: int = 0,
        flowinfo: int = 0,
        scope_id: int = 0,
    ) -> int: ...
    def socket(
        self,
        family: int,
        host: str,
        port: int = 0,
        flowinfo: int = 0,
        scope_id: int = 0,
    ) -> tuple[int, int]: ...
    def close(self) -> None: ...
    if sys.platform == "linux":
        # Reservation.socket()'s fast path: bind a socket the package has
        # just created (unbound, no option set) in the block.
        def _bind_new(self, fd: int, family: int, host: str, /) -> int: ...
        # Privilege drop: give the placeholders to a uid; the uid owning them.
        def _set_owner(self, uid: int, /) -> None: ...
        @property
        def _owner(self) -> int: ...

@final
class Overlapped:
    """An IOCTL in flight in overlapped mode (not instantiable)."""

    @property
    def event(self) -> int: ...
    @property
    def pending(self) -> bool: ...
    def done(self) -> bool: ...
    def wait(self, timeout: float | None = None) -> bool: ...
    def result(self, timeout: float | None = None) -> PortReservation | None: ...
    def cancel(self) -> None: ...

@overload
def acquire_port_reservation(
    protocol: int, start: int, count: int, overlapped: Literal[False] = False
) -> PortReservation: ...
@overload
def acquire_port_reservation(
    protocol: int, start: int, count: int, overlapped: Literal[True]
) -> Overlapped: ...
@overload
def acquire_port_reservation(
    protocol: int, start: int, count: int, overlapped: bool
) -> PortReservation | Overlapped: ...
@overload
def associate_port_reservation(
    socket: int, token: int, overlapped: Literal[False] = False, owner: object = None
) -> None: ...
@overload
def associate_port_reservation(
    socket: int, token: int, overlapped: Literal[True], owner: object = None
) -> Overlapped: ...
@overload
def associate_port_reservation(
    socket: int, token: int, overlapped: bool, owner: object = None
) -> Overlapped | None: ...
@overload
def release_port_reservation(
    socket: int, token: int, overlapped: Literal[False] = False, owner: object = None
) -> None: ...
@overload
def release_port_reservation(
    socket: int, token: int, overlapped: Literal[True], owner: object = None
) -> Overlapped: ...
@overload
def release_port_reservation(
    socket: int, token: int, overlapped: bool, owner: object = None
) -> Overlapped | None: ...
def _pending_overlapped(on_cancel: int | None = None) -> Overlapped: ...
def bind(
    socket: int,
    family: int,
    host: str,
    port: int = 0,
    flowinfo: int = 0,
    scope_id: int = 0,
) -> int: ...
def socket_info(socket: int, /) -> tuple[int, int, int]:
    """(family, type, bound port or 0)."""

@overload
def port_sockets(protocol: int, lo: int, hi: int, /) -> list[tuple[int, int, int, int, int]]:
    """(family, TCP state in Linux's numbering, port, uid (Linux) or pid
    (Windows), inode (Linux) or 0) of every socket on a port in [lo, hi]."""
@overload
def port_sockets(
    protocol: int, lo: int, hi: int, detail: Literal[False], /
) -> list[tuple[int, int, int, int, int]]: ...
@overload
def port_sockets(
    protocol: int, lo: int, hi: int, detail: Literal[True], /
) -> list[tuple[int, int, int, int, int, bytes, bytes, int]]:
    """Also the local and remote address (network order) and the remote port."""

if sys.platform == "win32":
    # A MIB_TCP_STATE with no Linux counterpart comes as MIB_STATE_OTHER + its value.
    MIB_STATE_OTHER: Final[int]
    def process_name(pid: int, /) -> str | None: ...
    def windows_build() -> tuple[int, int, int]:
        """(major, minor, build) of the running system (RtlGetVersion)."""
    def create_persistent_port_reservation(protocol: int, start: int, count: int, /) -> int: ...
    def lookup_persistent_port_reservation(protocol: int, start: int, count: int, /) -> int: ...
    def delete_persistent_port_reservation(protocol: int, start: int, count: int, /) -> None: ...
    def list_persistent_port_reservations(protocol: int, /) -> list[tuple[int, int]]: ...

if sys.platform == "linux":
    # A persistent block, resolved from its token by the package (the C
    # layer keeps no persistent tokens): the socket's next bind() through
    # this module takes a port of [start, start+count) if the kernel's
    # ip_local_reserved_ports still holds all of it (else ENOENT).
    @overload
    def associate_range(
        socket: int, protocol: int, start: int, count: int,
        overlapped: Literal[False] = False, owner: object = None,
    ) -> None: ...
    @overload
    def associate_range(
        socket: int, protocol: int, start: int, count: int,
        overlapped: Literal[True], owner: object = None,
    ) -> Overlapped: ...
    def reserved_ports() -> list[tuple[int, int]]:
        """net.ipv4.ip_local_reserved_ports as sorted (first, last) runs,
        inclusive; [] where the kernel has no such sysctl."""
