"""Scenarios of tests/linux/test_platform_linux.py."""

from __future__ import annotations

import json
import os
import socket
from typing import Dict, List

import portres
from tests.support import import_all_portres

from . import sysctl


def persistent_ports_kept_from_autobind() -> Dict[str, List[int]]:
    sysctl("net.ipv4.ip_local_port_range", "43000 43009")
    portres.create_persistent(43000, 5)
    r, w = os.pipe()
    if os.fork() == 0:
        import_all_portres()  # before the uid switch (lazy imports)
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
        explicit = socket.socket()
        explicit.bind(("0.0.0.0", 43001))
        auto = [socket.socket() for _ in range(5)]
        for s in auto:
            s.bind(("0.0.0.0", 0))
        os.write(w, json.dumps([s.getsockname()[1] for s in auto]).encode())
        os._exit(0)
    os.close(w)
    got = json.loads(os.read(r, 4096))
    os.wait()
    return {"auto": got}


def large_block_raises_the_soft_fd_limit() -> Dict[str, int]:
    """acquire(2000) with a soft RLIMIT_NOFILE of 1024 raises the soft limit
    (the hard one allowing)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        with portres.acquire(2000) as res:
            count = res.count
        return {"count": count, "soft_after": resource.getrlimit(resource.RLIMIT_NOFILE)[0]}
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
