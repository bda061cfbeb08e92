"""Scenarios of tests/linux/test_netns.py."""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import threading
import time
from typing import Any, Dict, List

import portres
from tests.support import import_all_portres

from . import sysctl


def autobind_of_another_uid() -> Dict[str, Any]:
    sysctl("net.ipv4.ip_local_port_range", "40000 40019")
    res = portres.acquire(10)
    udp = portres.acquire(10, protocol="udp")
    r, w = os.pipe()
    if os.fork() == 0:
        import_all_portres()  # before the uid switch (lazy imports)
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
        got: Dict[str, List[Any]] = {"tcp_bind0": [], "tcp_connect": [], "udp_bind0": [], "exhausted": []}
        keep = []
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(64)
        keep.append(srv)
        for kind in ("tcp_bind0", "tcp_connect", "udp_bind0"):
            for _ in range(12):
                try:
                    if kind == "udp_bind0":
                        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
                        s.bind(("::", 0))
                    elif kind == "tcp_bind0":
                        s = socket.socket(socket.AF_INET6)
                        s.bind(("::", 0))
                    else:
                        s = socket.socket()
                        s.connect(srv.getsockname())
                    keep.append(s)
                    got[kind].append(s.getsockname()[1])
                except OSError as e:
                    got["exhausted"].append(kind + ":" + errno.errorcode[e.errno or 0])
                    break
            if kind != "tcp_connect":
                for s in keep[1:]:
                    s.close()
                keep = keep[:1]
        os.write(w, json.dumps(got).encode())
        os._exit(0)
    os.close(w)
    out = json.loads(os.read(r, 65536).decode())
    os.wait()
    out["tcp_block"] = [res.start, res.count]
    out["udp_block"] = [udp.start, udp.count]
    return out


def wildcard_slides_past_taken_ports() -> Dict[str, Any]:
    sysctl("net.ipv4.ip_local_port_range", "41000 41099")
    taken = []
    for p in range(41000, 41100, 7):  # every 7th port taken: no gap of 7
        s = socket.socket()
        s.bind(("0.0.0.0", p))
        taken.append(s)
    res = portres.acquire(6)
    ok = [res.start, res.count]
    try:
        portres.acquire(7)
        big = "acquired"
    except OSError as e:
        big = str(e)
    return {"block": ok, "big": big, "taken": [s.getsockname()[1] for s in taken]}


def wildcard_skips_reserved_ports() -> Dict[str, Any]:
    sysctl("net.ipv4.ip_local_port_range", "42000 42009")
    sysctl("net.ipv4.ip_local_reserved_ports", "42000-42004")
    res = portres.acquire(5)
    return {"start": res.start}


IPV6_JOIN_ANYCAST = 27


def closing_listener_port_reused(rounds: int = 20) -> Dict[str, Any]:
    sysctl("net.ipv6.conf.all.forwarding", 1)
    lo = socket.if_nametoindex("lo")
    failures = []
    res = portres.acquire(1)
    for _ in range(rounds):
        old = res.socket(socket.AF_INET6)
        old.listen()
        for g in range(2000):  # fewer if net.core.optmem_max runs out
            mreq = socket.inet_pton(socket.AF_INET6, "2001:db8::%x" % (g + 1)) + lo.to_bytes(4, sys.byteorder)
            try:
                old.setsockopt(socket.IPPROTO_IPV6, IPV6_JOIN_ANYCAST, mreq)
            except OSError:
                if g == 0:
                    raise
                break
        outcome: List[str] = []

        def bind_next(outcome: List[str] = outcome) -> None:
            deadline = time.monotonic() + 10
            while True:
                try:
                    new = res.socket(socket.AF_INET6)
                    break
                except OSError as exc:
                    if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                        outcome.append(repr(exc))
                        return
            try:
                new.listen()
                with socket.create_connection(("::1", new.getsockname()[1]), timeout=2):
                    new.settimeout(2)
                    new.accept()[0].close()
                outcome.append("ok")
            except OSError as exc:
                outcome.append(repr(exc))
            finally:
                new.close()

        t = threading.Thread(target=bind_next)
        t.start()
        time.sleep(0.001)
        old.close()
        t.join()
        if outcome != ["ok"]:
            failures.append(outcome)
    res.close()
    return {"rounds": rounds, "failures": failures}
