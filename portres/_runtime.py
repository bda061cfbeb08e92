"""`portres.list_runtime()` and `portres list --runtime`: the runtime
reservations held on this machine, as the kernel holds them.

The backend finds them (portres._linux: a per-process memfd marker checked
against the kernel's sockets; portres._windows: this process's own blocks,
all that Windows exposes)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from . import _validate as check
from ._platform import backend


class RuntimeReservation:
    """One runtime reservation: who holds it and which of its ports have a
    socket bound from the block now (`in_use`)."""

    __slots__ = ("pid", "process", "protocol", "start", "count", "in_use")

    def __init__(self, pid: int, process: str, protocol: str, start: int, count: int,
                 in_use: Tuple[int, ...]) -> None:
        self.pid = pid
        self.process = process
        self.protocol = protocol
        self.start = start
        self.count = count
        self.in_use = in_use

    @property
    def ports(self) -> range:
        return range(self.start, self.start + self.count)

    def _key(self) -> Tuple[int, str, str, int, int, Tuple[int, ...]]:
        return (self.pid, self.process, self.protocol, self.start, self.count, self.in_use)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RuntimeReservation) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (f"<portres.RuntimeReservation {self.protocol} {self.start}-"
                f"{self.start + self.count - 1} pid={self.pid} ({self.process}) "
                f"in_use={list(self.in_use)}>")


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
