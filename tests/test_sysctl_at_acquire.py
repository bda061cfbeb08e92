"""Nothing a block does depends on sysctls as they were at import (issue 11,
defect 3): net.ipv6.bindv6only changed after import shapes neither the
placeholders (always dual-stack, IPV6_V6ONLY set explicitly) nor the sockets
portres makes (res.socket(AF_INET6) is dual-stack: the documented default,
docs/platforms.md), and ip_local_port_range / ip_local_reserved_ports are
read when a block is made.  Each runs in a private network namespace."""

import pytest

from conftest import needs_netns, run_in_netns

pytestmark = needs_netns

# Runs in the namespace: the import and a first block see BEFORE; the
# blocks under test are made after bindv6only is set to AFTER.
SCRIPT = """
import errno, select
sysctl("net.ipv6.bindv6only", BEFORE)
import portres
portres.acquire(1).close()                    # the backend is initialised now
portres.acquire(1, protocol="udp").close()
sysctl("net.ipv6.bindv6only", AFTER)
out = {"bindv6only": sysctl("net.ipv6.bindv6only")}

FORMS = [(socket.AF_INET, "0.0.0.0", None), (socket.AF_INET, "127.0.0.1", None),
         (socket.AF_INET6, "::", 0), (socket.AF_INET6, "::", 1), (socket.AF_INET6, "::1", None)]
OPTS = [(), (socket.SO_REUSEADDR,), (socket.SO_REUSEPORT,), (socket.SO_REUSEADDR, socket.SO_REUSEPORT)]

def foreign_binds(ports, kind):
    # As another uid: every bind form on every port; "ok" or the errno name.
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.setgroups([]); os.setgid(65534); os.setuid(65534)
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
                        got[key] = errno.errorcode.get(e.errno, str(e.errno))
                    finally:
                        s.close()
        os.write(w, json.dumps(got).encode()); os._exit(0)
    os.close(w)
    data = b""
    while True:
        chunk = os.read(r, 1 << 16)
        if not chunk:
            break
        data += chunk
    os.waitpid(pid, 0)
    return json.loads(data.decode())

def gets_ipv4(sock, kind):
    # Whether SOCK (bound from a block) gets an IPv4 datagram / connection.
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

for proto, kind in (("tcp", socket.SOCK_STREAM), ("udp", socket.SOCK_DGRAM)):
    res = portres.acquire(4, protocol=proto)
    fixed = portres.acquire(2, protocol=proto, start=res.start + 8) if res.start + 9 <= 65535 else None
    ports = list(res.ports) + (list(fixed.ports) if fixed else [])
    held = foreign_binds(ports, kind)
    out[proto + "_foreign_ok"] = sorted(k for k, v in held.items() if v != "EADDRINUSE")
    s = res.socket(socket.AF_INET6)
    out[proto + "_socket_v6only"] = s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
    out[proto + "_socket_gets_ipv4"] = gets_ipv4(s, kind)
    s.close()
    # a port handed out and given back stays held in every form
    s = res.socket(socket.AF_INET6); s.close()
    held = foreign_binds(list(res.ports), kind)
    out[proto + "_foreign_ok_after_reuse"] = sorted(k for k, v in held.items() if v != "EADDRINUSE")
    res.close()
    if fixed:
        fixed.close()
print(json.dumps(out))
"""


@pytest.mark.parametrize("before,after", [(0, 1), (1, 0)], ids=["0-then-1", "1-then-0"])
def test_bindv6only_changed_after_import_shapes_nothing(before, after):
    out = run_in_netns(SCRIPT.replace("BEFORE", str(before)).replace("AFTER", str(after)))
    assert out["bindv6only"] == str(after)
    for proto in ("tcp", "udp"):
        assert out[proto + "_foreign_ok"] == [], (
            f"{proto}: another uid binds a held port: {out[proto + '_foreign_ok'][:6]}")
        assert out[proto + "_foreign_ok_after_reuse"] == [], (
            f"{proto}: another uid binds a port given back: {out[proto + '_foreign_ok_after_reuse'][:6]}")
        assert out[proto + "_socket_v6only"] == 0, f"{proto}: res.socket(AF_INET6) is not dual-stack"
        assert out[proto + "_socket_gets_ipv4"] is True, f"{proto}: res.socket(AF_INET6) gets no IPv4"


def test_port_range_and_reserved_ports_read_at_each_acquire():
    out = run_in_netns(
        """
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
            nine = "acquired"
        except OSError as e:
            nine = e.errno
        print(json.dumps({"a": a, "blocks": blocks, "nine": nine}))
        """
    )
    start, count = out["a"]
    assert 42000 <= start and start + count - 1 <= 42099
    for start, count in out["blocks"]:
        assert (start, count) == (43008, 8), out["blocks"]
    assert out["nine"] == 98  # EADDRINUSE: 8 free ports left in the range
