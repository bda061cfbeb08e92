"""Scenarios of tests/contract/test_connect.py and tests/linux/test_timewait.py."""

from __future__ import annotations

import socket
from typing import Any, Dict, Optional

import portres

from . import sysctl


def churn_without_tcp_timestamps() -> Dict[str, Any]:
    sysctl("net.ipv4.tcp_timestamps", 0)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    done, err = 0, None
    with portres.acquire(4) as res:
        for _ in range(8):
            try:
                c = res.connect(srv.getsockname(), timeout=5)
            except OSError as e:
                err = {"errno": e.errno, "msg": str(e)}
                break
            a, _ = srv.accept()
            c.close()
            a.recv(1)
            a.close()
            done += 1
    return {"done": done, "err": err}


def time_wait_crowds_the_range() -> Dict[str, Any]:
    from portres._timewait import count_time_wait

    sysctl("net.ipv4.ip_local_port_range", "42000 42019")
    srv = socket.socket()
    srv.bind(("127.0.0.1", 41999))  # outside the range
    srv.listen(64)
    before: Optional[str] = None
    try:
        portres.acquire(20).close()
        before = "ok"
    except OSError as e:
        before = str(e)
    # client closes first: each connection leaves its ephemeral port in TIME_WAIT
    for _ in range(12):
        c = socket.create_connection(srv.getsockname())
        a, _ = srv.accept()
        c.close()
        a.recv(1)
        a.close()
    after: Dict[str, Any]
    try:
        portres.acquire(10)
        after = {"acquired": True}
    except OSError as e:
        after = {"msg": str(e), "errno": e.errno}
    try:
        portres.acquire(10, protocol="udp").close()
        udp = "ok"
    except OSError as e:
        udp = str(e)
    return {"before": before, "after": after, "udp": udp, "counted": count_time_wait(42000, 42019)}


def no_time_wait_in_a_full_range() -> Dict[str, str]:
    sysctl("net.ipv4.ip_local_port_range", "43000 43009")
    held = [socket.socket() for _ in range(3)]
    for i, s in enumerate(held):
        s.bind(("0.0.0.0", 43000 + 3 * i + 1))
    try:
        portres.acquire(5)
        msg = "acquired"
    except OSError as e:
        msg = str(e)
    return {"msg": msg}
