"""Runtime reservations on Linux, as the kernel holds them.

Each process that holds a block keeps one marker: a memfd named "portres"
(close-on-exec), one fixed-width line per live block ("tcp 41000     4").
The C registry writes it (src/linux/marker.c): the memfd is made with the
first block and then kept, mapped MAP_SHARED, so a line costs plain stores
under the registry's lock and no system call; a forked child unmaps and
closes its copy.  The kernel ties the memfd to the process: it is in
/proc/<pid>/fd while the process lives and is gone with it, so no entry
outlives its process.

This module is the reader.  What a marker says is never trusted alone: a
block is listed only when the kernel shows a socket of that very process on
every port of the block (NETLINK_SOCK_DIAG for the sockets, /proc/<pid>/fd
for whose they are); a torn or stale line is dropped by that check.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

from . import _portres
from . import _validate as check

MARKER = "portres"
_LINK = f"/memfd:{MARKER} (deleted)"
WIDTH = 24  # bytes per line, "\n" included (marker.c's MARKER_LINE)


def line(protocol: str, start: int, count: int) -> bytes:
    """A marker line as marker.c writes it."""
    return f"{protocol} {start:5d} {count:5d}".ljust(WIDTH - 1).encode() + b"\n"


# ------------------------------------------------------------------ reading


def _process_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def _scan() -> Tuple[Dict[int, Tuple[int, int]], Dict[int, List[Tuple[str, int, int]]]]:
    """inode -> (pid, fd) of every socket we may see, and pid -> the blocks
    its marker lists."""
    inodes: Dict[int, Tuple[int, int]] = {}
    marked: Dict[int, List[Tuple[str, int, int]]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue  # not ours to see, or gone
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.setdefault(int(link[8:-1]), (pid, int(fd)))
            elif link == _LINK:
                blocks = _read_marker(pid, fd)
                if blocks:
                    marked.setdefault(pid, []).extend(blocks)
    return inodes, marked


def _read_marker(pid: int, fd: str) -> List[Tuple[str, int, int]]:
    try:
        with open(f"/proc/{pid}/fd/{fd}", "rb") as f:
            data = f.read()
    except OSError:
        return []
    out = []
    for raw in data.split(b"\n"):
        parts = raw.split()
        if len(parts) != 3 or parts[0] not in (b"tcp", b"udp"):
            continue
        try:
            start, count = int(parts[1]), int(parts[2])
        except ValueError:
            continue
        if check.valid_block(start, count) and start:
            out.append((parts[0].decode(), start, count))
    return out


def runtime_reservations(protocol: Optional[str]) -> List[Dict[str, Any]]:
    """Every block held now that this process may see: dicts with pid,
    process, protocol, start, count, in_use (ports with a socket bound from
    the block) and sockets (per port: the sockets on it)."""
    inodes, marked = _scan()
    out: List[Dict[str, Any]] = []
    for pid, blocks in sorted(marked.items()):
        for proto, start, count in sorted(set(blocks)):
            if protocol is not None and proto != protocol:
                continue
            entry = _verify(pid, proto, start, count, inodes)
            if entry is not None:
                out.append(entry)
    return out


def _verify(pid: int, protocol: str, start: int, count: int,
            inodes: Dict[int, Tuple[int, int]]) -> Optional[Dict[str, Any]]:
    """The block as the kernel holds it, or None when some port of it has
    no socket of PID (released, or the marker is stale)."""
    try:
        rows = _portres.port_sockets(check.PROTOCOLS[protocol], start, start + count - 1)
    except OSError:
        return None
    per_port: Dict[int, List[int]] = {}
    for _family, _state, port, _uid, inode in rows:
        if inode:  # TIME_WAIT and not-yet-accepted connections have none
            per_port.setdefault(port, []).append(inode)
    handed = _handed_out(pid)
    in_use: List[int] = []
    for port in range(start, start + count):
        mine = [i for i in per_port.get(port, ()) if inodes.get(i, (0, 0))[0] == pid]
        if not mine:
            return None
        # Handed out: a socket on the port that the block tracks (by this
        # process or one it passed it to).  Counting sockets cannot tell:
        # a port may be held by one placeholder or two (UDP, after a V6ONLY
        # socket), and share two sockets (IPv4 and IPv6).
        if any(i in handed for i in per_port[port]):
            in_use.append(port)
    return {"pid": pid, "process": _process_name(pid), "protocol": protocol, "start": start,
            "count": count, "end": start + count - 1, "in_use": in_use}


def _handed_out(pid: int) -> Set[int]:
    """The inodes of the sockets PID's blocks have handed out and that are
    still open somewhere: the block tracks each one by an item in its epoll
    instance (src/linux/reclaim.c), which /proc/PID/fdinfo of that epoll
    lists with the socket's inode ("tfd: ... ino:<hex>") until the socket's
    file is released, in any process.  A placeholder is never in one.  Other
    epoll instances of PID list sockets too, but only the caller's own: a
    socket of theirs on a port of the block was bound from it."""
    out: Set[int] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:[eventpoll]":
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                info = f.read()
        except OSError:
            continue  # closed meanwhile
        for line in info.splitlines():
            if line.startswith("tfd:"):
                for word in line.split():
                    if word.startswith("ino:"):
                        out.add(int(word[4:], 16))
    return out


def holders(protocol: str, port: int) -> Iterable[Dict[str, Any]]:
    """The runtime reservations whose block contains PORT."""
    return [r for r in runtime_reservations(protocol) if r["start"] <= port <= r["end"]]


def inode_owners() -> Dict[int, Tuple[int, int]]:
    return _scan()[0]


__all__: List[str] = ["holders", "inode_owners", "line", "runtime_reservations"]
