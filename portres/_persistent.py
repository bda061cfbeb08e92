"""Persistent, system-wide reservations (administrator/root only).

The shared policy: argument checks and error messages.  The backend does
the work: Windows, Create/Delete/LookupPersistent{Tcp,Udp}PortReservation
(iphlpapi); Linux, net.ipv4.ip_local_reserved_ports with portres's
bookkeeping of protocols and tokens (portres._persistent_linux)."""

from __future__ import annotations

from typing import Any, Dict, List, NoReturn, Tuple

from . import _validate as check
from ._errors import explain
from ._platform import backend


def _fail(exc: OSError, call: str) -> NoReturn:
    """Raise the backend's error EXC of CALL, explained unless it is final."""
    how = backend.persistent_explanation(exc, call)
    if how is None:
        raise exc
    raise explain(exc, *how) from None


def _call(verb: str, protocol: str) -> str:
    return f"{verb}Persistent{protocol.capitalize()}PortReservation"


def create_persistent(start: int, count: int, *, protocol: str = "tcp", boot: bool = False) -> int:
    """Reserve ports START..START+COUNT-1 system-wide; return the token.
    Needs administrator rights (Windows) or root (Linux).  On Linux,
    boot=True also keeps the block across reboots (a sysctl.d file); on
    Windows persistent reservations always survive reboots."""
    protocol = check.protocol(protocol)
    start, count = check.persistent_block(start, count)
    if not isinstance(boot, bool):
        raise TypeError(f"boot must be a bool, not {type(boot).__name__}")
    try:
        return backend.create_persistent(protocol, start, count, boot)
    except OSError as exc:
        _fail(exc, _call("Create", protocol))


def lookup_persistent(start: int, count: int, *, protocol: str = "tcp") -> int:
    """The token of the persistent reservation with exactly this block."""
    protocol = check.protocol(protocol)
    start, count = check.persistent_block(start, count)
    try:
        return backend.lookup_persistent(protocol, start, count)
    except OSError as exc:
        _fail(exc, _call("Lookup", protocol))


def delete_persistent(start: int, count: int, *, protocol: str = "tcp") -> None:
    """Delete the persistent reservation with exactly this block."""
    protocol = check.protocol(protocol)
    start, count = check.persistent_block(start, count)
    try:
        backend.delete_persistent(protocol, start, count)
    except OSError as exc:
        _fail(exc, _call("Delete", protocol))


def list_persistent(*, protocol: str = "tcp") -> List[Tuple[int, int]]:
    """Persistently reserved blocks that apply to PROTOCOL, as (start, count)."""
    protocol = check.protocol(protocol)
    try:
        return backend.list_persistent(protocol)
    except OSError as exc:
        _fail(exc, "listing persistent reservations")


def persistent_entries(protocol: str) -> List[Dict[str, Any]]:
    """The persistent blocks that apply to PROTOCOL as dicts: protocol,
    start, count, and on Linux token, boot and source ("portres", or
    "other" for the kernel's other entries, protocol "any").  For
    `portres list` and `portres check`."""
    protocol = check.protocol(protocol)
    try:
        return backend.persistent_entries(protocol)
    except OSError as exc:
        _fail(exc, "listing persistent reservations")
