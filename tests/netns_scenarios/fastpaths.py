"""Scenarios of tests/linux/test_fastpaths.py."""

from __future__ import annotations

import socket
from typing import Any, Dict, Set

import portres
from tests.support import open_fds  # leaves out the runtime marker (made once, kept)

from . import sysctl


def crowded(lo: int, hi: int, w: int, b: int, tries: int) -> Dict[str, Any]:
    """Everything of the range taken but one window of B ports at W (and a
    few single ports); acquire(B) TRIES times."""
    sysctl("net.ipv4.ip_local_port_range", f"{lo} {hi}")
    window = range(w, w + b)
    held = []
    for p in range(lo, hi + 1):
        if p in window or (p % 5 == 0 and p - 1 not in window and p + 1 not in window):
            continue
        s = socket.socket(socket.AF_INET6)
        s.bind(("::", p))
        held.append(s)
    before = open_fds()
    starts = set()
    for _ in range(tries):
        res = portres.acquire(b)
        starts.add(res.start)
        res.close()
    singles = portres.acquire(1)
    one = singles.start
    singles.close()
    big: Any
    try:
        portres.acquire(b + 1)
        big = "acquired"
    except OSError as e:
        big = e.errno
    return {"starts": sorted(starts), "one": one, "big": big, "leaked": open_fds() - before}


def one_port() -> Dict[str, Any]:
    sysctl("net.ipv4.ip_local_port_range", "42000 42009")
    sysctl("net.ipv4.ip_local_reserved_ports", "42000-42007")
    taken = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    taken.bind(("::", 42009))
    got: Dict[str, Set[int]] = {"tcp": set(), "udp": set()}
    for _ in range(40):
        for proto in got:
            res = portres.acquire(1, protocol=proto)
            got[proto].add(res.start)
            res.close()
    blocks = [portres.acquire(1, protocol="udp")]
    full: Any
    try:
        portres.acquire(1, protocol="udp")
        full = "acquired"
    except OSError as e:
        full = [e.errno, str(e)]
    blocks.clear()  # held until here
    return {"tcp": sorted(got["tcp"]), "udp": sorted(got["udp"]), "full": full}
