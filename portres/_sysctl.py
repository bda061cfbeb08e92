"""The Linux sysctls the package reads itself (the C module makes every
other kernel call): net.ipv4.ip_local_reserved_ports, which the persistent
store edits and `check` reports, and the port ranges `check` explains.

This is the one Python parser of the reserved-ports list.  Both the Linux
backend (_linux) and the persistent store (_persistent_linux) use it; it
imports neither, so neither depends on the other through it.
"""

from __future__ import annotations

import os
from typing import List, Set, Tuple

RESERVED_PORTS = "/proc/sys/net/ipv4/ip_local_reserved_ports"
SYSCTL_KEY = "net.ipv4.ip_local_reserved_ports"
PORT_RANGE = "/proc/sys/net/ipv4/ip_local_port_range"
UNPRIVILEGED_PORT_START = "/proc/sys/net/ipv4/ip_unprivileged_port_start"


def parse_ports(text: str) -> Set[int]:
    """The ports of a reserved-ports list ("1,5-7", commas or newlines);
    ValueError if it is not one."""
    ports: Set[int] = set()
    for part in text.replace("\n", ",").split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        a, b = int(lo), int(hi or lo)
        if not 0 <= a <= b <= 65535:   # ValueError, as for what is not a number
            raise ValueError(f"not a port range: {part!r}")
        ports.update(range(a, b + 1))
    return ports


def format_ports(ports: Set[int]) -> str:
    return ",".join(f"{a}-{b}" if a != b else str(a) for a, b in to_blocks(ports))


def to_blocks(ports: Set[int]) -> List[Tuple[int, int]]:
    """Sorted (first, last) runs of consecutive ports."""
    runs: List[Tuple[int, int]] = []
    for p in sorted(ports):
        if runs and p == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], p)
        else:
            runs.append((p, p))
    return runs


def read_reserved() -> Set[int]:
    # A sysctl answers only the read at offset 0 (the next read is EOF), and
    # the list can pass 8 KiB: one pread, with a buffer large enough.
    fd = os.open(RESERVED_PORTS, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = 1 << 16
        while True:
            data = os.pread(fd, size, 0)
            if len(data) < size:
                return parse_ports(data.decode("ascii"))
            size *= 2
    finally:
        os.close(fd)


def read_int(path: str, default: int) -> int:
    """The first number of a sysctl, or DEFAULT if it cannot be read."""
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return default


def read_ints(path: str) -> List[int]:
    """Every number of a sysctl ([] if it cannot be read)."""
    try:
        with open(path) as f:
            return [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        return []
