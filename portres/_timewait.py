"""Why a wildcard acquire found no free block: TCP sockets in TIME_WAIT.

A TCP connection's side that closes first keeps its local port in TIME_WAIT
for a minute (Linux: 60 s), with no process to show for it.  A test suite
that opens many short connections fills the ephemeral range with them, and
a later ``acquire(N)`` finds no N consecutive free ports.  The acquire error
path calls ``time_wait_note`` to say so.
"""

from __future__ import annotations

from typing import Optional, Tuple

from . import _portres
from ._platform import backend

TCP_TIME_WAIT = 6   # Linux's numbering (include/net/tcp_states.h), used by port_sockets too


def ephemeral_range() -> Optional[Tuple[int, int]]:
    """The ephemeral port range as the backend knows it."""
    return backend.ephemeral_range()


def count_time_wait(lo: int, hi: int) -> int:
    """TCP sockets in TIME_WAIT on local ports lo..hi, IPv4 and IPv6 (one
    sock_diag dump of this network namespace; GetExtendedTcpTable on
    Windows, whose states port_sockets gives in Linux's numbering)."""
    return sum(1 for _family, state, _port, _uid, _ino in _portres.port_sockets(_portres.TCP, lo, hi)
               if state == TCP_TIME_WAIT)


def time_wait_note(protocol: str) -> Optional[str]:
    """A sentence for the "no free block" error when TIME_WAIT sockets crowd
    the ephemeral range, or None (UDP, no range known, none found, or the
    count itself failed: the original error matters more)."""
    if protocol != "tcp":
        return None
    rng = ephemeral_range()
    if rng is None:
        return None
    lo, hi = rng
    where = backend.EPHEMERAL_RANGE_NAME.format(lo=lo, hi=hi)
    try:
        n = count_time_wait(lo, hi)
    except OSError:
        return None
    if not n:
        return None
    widen = backend.EPHEMERAL_RANGE_SETTING
    return (f"{n} socket{'s' if n != 1 else ''} in TIME_WAIT in {where}; a closed "
            f"connection keeps its port there for a while (Linux: 60 s) after the side "
            f"that closed first: wait, reserve fewer ports, reuse one reservation across "
            f"tests, or widen {widen}")
