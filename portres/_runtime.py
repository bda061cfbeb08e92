"""`portres.list_runtime()` and `portres list --runtime`: the runtime
reservations held on this machine, as the kernel holds them.

The backend finds them (portres._linux: a per-process memfd marker checked
against the kernel's sockets; portres._windows: this process's own blocks,
all that Windows exposes)."""

from __future__ import annotations

from typing import Any, Dict, List, NamedTuple, Optional, Tuple

from . import _validate as check
from ._platform import backend


class RuntimeReservation(NamedTuple):
    """One runtime reservation: who holds it and which of its ports have a
    socket bound from the block now (`in_use`)."""

    pid: int
    process: str
    protocol: str
    start: int
    count: int
    in_use: Tuple[int, ...]

    @property
    def ports(self) -> range:
        return range(self.start, self.start + self.count)


def entries(protocol: Optional[str] = None) -> List[Dict[str, Any]]:
    """The reservations as dicts (the CLI's JSON)."""
    if protocol is not None:
        protocol = check.protocol(protocol)
    return backend.runtime_reservations(protocol)


def list_runtime(*, protocol: Optional[str] = None) -> List[RuntimeReservation]:
    """Every runtime reservation this process may see (see RUNTIME_SCOPE),
    by pid then block; never one whose process or sockets are gone."""
    return [RuntimeReservation(e["pid"], e["process"], e["protocol"], e["start"], e["count"],
                               tuple(e["in_use"])) for e in entries(protocol)]


def scope() -> str:
    return str(backend.RUNTIME_SCOPE)
