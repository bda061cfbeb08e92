"""Scenarios of tests/linux/test_sysctl_at_acquire.py: sysctls changed after
import shape nothing; the ones that shape a block are read at acquire."""

from __future__ import annotations

import errno
import json
import os
import select
import socket
from typing import Any, Dict, List

from . import sysctl

FORMS = [
    (socket.AF_INET, "0.0.0.0", None),
    (socket.AF_INET, "127.0.0.1", None),
    (socket.AF_INET6, "::", 0),
    (socket.AF_INET6, "::", 1),
    (socket.AF_INET6, "::1", None),
]
OPTS = [(), (socket.SO_REUSEADDR,), (socket.SO_REUSEPORT,), (socket.SO_REUSEADDR, socket.SO_REUSEPORT)]


def _foreign_binds(ports: List[int], kind: int) -> Dict[str, str]:
    """As another uid: every bind form on every port; "ok" or the errno name."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            got = {}
            for port in ports:
                for family, host, v6only in FORMS:
                    for opts in OPTS:
                        key = "%d/%s/%s/%s" % (port, host, v6only, "+".join(map(str, opts)) or "plain")
                        s = socket.socket(family, kind)
                        try:
                            if v6only is not None:
                                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
                            for o in opts:
                                s.setsockopt(socket.SOL_SOCKET, o, 1)
                            s.bind((host, port))
                            if kind == socket.SOCK_STREAM:
                                s.listen()
                            got[key] = "ok"
                        except OSError as e:
                            got[key] = errno.errorcode.get(e.errno or 0, str(e.errno))
                        finally:
                            s.close()
            os.write(w, json.dumps(got).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    data = b""
    while True:
        chunk = os.read(r, 1 << 16)
        if not chunk:
            break
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return json.loads(data.decode())


def _gets_ipv4(sock: socket.socket, kind: int) -> bool:
    """Whether SOCK (bound from a block) gets an IPv4 datagram / connection."""
    port = sock.getsockname()[1]
    if kind == socket.SOCK_DGRAM:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            tx.sendto(b"x", ("127.0.0.1", port))
        return bool(select.select([sock], [], [], 1.0)[0]) and sock.recv(8) == b"x"
    sock.listen()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as c:
        c.settimeout(1.0)
        try:
            c.connect(("127.0.0.1", port))
        except OSError:
            return False
    return bool(select.select([sock], [], [], 1.0)[0])


def bindv6only_changed_after_import(before: int, after: int) -> Dict[str, Any]:
    """The backend starts with bindv6only BEFORE, the blocks under test are
    made after it is set to AFTER.  portres is imported here, after BEFORE
    is set: the import must not fix anything either."""
    sysctl("net.ipv6.bindv6only", before)
    import portres

    portres.acquire(1).close()  # the backend is initialised now
    portres.acquire(1, protocol="udp").close()
    sysctl("net.ipv6.bindv6only", after)
    out: Dict[str, Any] = {"bindv6only": sysctl("net.ipv6.bindv6only")}
    for proto, kind in (("tcp", socket.SOCK_STREAM), ("udp", socket.SOCK_DGRAM)):
        res = portres.acquire(4, protocol=proto)
        fixed = portres.acquire(2, protocol=proto, start=res.start + 8) if res.start + 9 <= 65535 else None
        ports = list(res.ports) + (list(fixed.ports) if fixed else [])
        held = _foreign_binds(ports, kind)
        out[proto + "_foreign_ok"] = sorted(k for k, v in held.items() if v != "EADDRINUSE")
        s = res.socket(socket.AF_INET6)
        out[proto + "_socket_v6only"] = s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
        out[proto + "_socket_gets_ipv4"] = _gets_ipv4(s, kind)
        s.close()
        # a port handed out and given back stays held in every form
        s = res.socket(socket.AF_INET6)
        s.close()
        held = _foreign_binds(list(res.ports), kind)
        out[proto + "_foreign_ok_after_reuse"] = sorted(k for k, v in held.items() if v != "EADDRINUSE")
        res.close()
        if fixed:
            fixed.close()
    return out


def port_range_and_reserved_ports_read_at_each_acquire() -> Dict[str, Any]:
    import portres

    sysctl("net.ipv4.ip_local_port_range", "42000 42099")
    first = portres.acquire(8)
    a = [first.start, first.count]
    first.close()
    sysctl("net.ipv4.ip_local_port_range", "43000 43015")
    sysctl("net.ipv4.ip_local_reserved_ports", "43000-43007")
    blocks = []
    for _ in range(5):
        r = portres.acquire(8)
        blocks.append([r.start, r.count])
        r.close()
    try:
        portres.acquire(9)
        nine: Any = "acquired"
    except OSError as e:
        nine = e.errno
    return {"a": a, "blocks": blocks, "nine": nine}
