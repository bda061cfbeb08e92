"""Persistent, system-wide reservations (administrator/root only).

Windows: Create/Delete/LookupPersistent{Tcp,Udp}PortReservation (iphlpapi).
Linux: net.ipv4.ip_local_reserved_ports, with portres's bookkeeping of
protocols and tokens (see _persistent_linux)."""

from __future__ import annotations

import sys
from typing import List, Tuple

from . import _errors, _portres
from . import _validate as check

WINDOWS = sys.platform == "win32"

# The branches test sys.platform itself so that mypy checks each platform's
# calls of _portres against that platform's stubs.
if sys.platform != "win32":
    from . import _persistent_linux as _linux

# Win32 errors of the persistent functions, in the user's terms.
_WIN_DETAIL = {
    5: "persistent reservations need elevation: run as administrator "
       "(or give the program a requireAdministrator manifest)",          # ERROR_ACCESS_DENIED
    32: "the block overlaps an existing persistent reservation or ports in use",  # ERROR_SHARING_VIOLATION
    1168: "no persistent reservation has exactly this start and count",   # ERROR_NOT_FOUND
    87: "invalid parameter: start must be 1..65535 and the block must not pass 65535",  # ERROR_INVALID_PARAMETER
}


def _win_error(exc: OSError, what: str) -> OSError:
    return _errors.explain(exc, what, _WIN_DETAIL.get(getattr(exc, "winerror", None) or 0))


def create_persistent(start: int, count: int, *, protocol: str = "tcp", boot: bool = False) -> int:
    """Reserve ports START..START+COUNT-1 system-wide; return the token.
    Needs administrator rights (Windows) or root (Linux).  On Linux,
    boot=True also keeps the block across reboots (a sysctl.d file); on
    Windows persistent reservations always survive reboots."""
    protocol = check.protocol(protocol)
    start, count = check.persistent_block(start, count)
    if not isinstance(boot, bool):
        raise TypeError(f"boot must be a bool, not {type(boot).__name__}")
    if sys.platform == "win32":
        try:
            return int(_portres.create_persistent_port_reservation(
                check.PROTOCOLS[protocol], start, count))
        except OSError as exc:
            raise _win_error(exc, f"CreatePersistent{protocol.capitalize()}PortReservation") from None
    return _linux.create(protocol, start, count, boot)


def lookup_persistent(start: int, count: int, *, protocol: str = "tcp") -> int:
    """The token of the persistent reservation with exactly this block."""
    protocol = check.protocol(protocol)
    start, count = check.persistent_block(start, count)
    if sys.platform == "win32":
        try:
            return int(_portres.lookup_persistent_port_reservation(
                check.PROTOCOLS[protocol], start, count))
        except OSError as exc:
            raise _win_error(exc, f"LookupPersistent{protocol.capitalize()}PortReservation") from None
    return _linux.lookup(protocol, start, count)


def delete_persistent(start: int, count: int, *, protocol: str = "tcp") -> None:
    """Delete the persistent reservation with exactly this block."""
    protocol = check.protocol(protocol)
    start, count = check.persistent_block(start, count)
    if sys.platform == "win32":
        try:
            _portres.delete_persistent_port_reservation(check.PROTOCOLS[protocol], start, count)
            return
        except OSError as exc:
            raise _win_error(exc, f"DeletePersistent{protocol.capitalize()}PortReservation") from None
    token = _linux.delete(protocol, start, count)
    _portres.unregister_persistent_token(token)  # sockets of this process forget it too


def list_persistent(*, protocol: str = "tcp") -> List[Tuple[int, int]]:
    """Persistently reserved blocks that apply to PROTOCOL, as (start, count)."""
    protocol = check.protocol(protocol)
    if sys.platform == "win32":
        try:
            return [(start, count) for start, count in _portres.list_persistent_port_reservations(
                check.PROTOCOLS[protocol])]
        except OSError as exc:
            raise _win_error(exc, "listing persistent reservations") from None
    return _linux.blocks(protocol)
