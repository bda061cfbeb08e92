"""The Linux fast paths (issue 7) keep every guarantee:

- res.socket() makes the socket in Python and binds it in C without checks;
- a port handed out comes back when its socket's file is released, told by
  the block's epoll instance once the block has been exhausted once (a
  sock_diag dump before that): a dup() or a forked child keeps the port;
- wildcard acquire probes with one reusable socket, far end of each window
  first, and maps the range with sock_diag only after many failed binds;
- UDP placeholders share one eBPF "drop" program where the process may load
  one (root here), the per-socket cBPF form otherwise, and no descriptor of
  it outlives the UDP reservations.
"""

import errno
import os
import socket

import pytest

import portres
from tests.support import LINUX, ROOT, as_uid, linux_only, needs_netns, open_fds, run_in_netns

PROTOCOLS = {"tcp": socket.SOCK_STREAM, "udp": socket.SOCK_DGRAM}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_res_socket_returns_plain_sockets_for_every_host_form(protocol):
    with portres.acquire(6, protocol=protocol) as res:
        forms = [(socket.AF_INET, ""), (socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, ""),
                 (socket.AF_INET6, "::1"), (2, "localhost"), (socket.AF_INET6, "::")]
        socks = [res.socket(family, host) for family, host in forms]
        for s, (family, host) in zip(socks, forms):
            assert type(s) is socket.socket
            assert s.family == family and s.type == PROTOCOLS[protocol]
            assert not s.get_inheritable()
            assert s.getsockname()[1] in res.ports
            if host in ("127.0.0.1", "::1"):
                assert s.getsockname()[0] == host
        assert sorted(s.getsockname()[1] for s in socks) == list(res.ports)
        with pytest.raises(OSError) as info:
            res.socket()
        assert info.value.errno == errno.EADDRINUSE
        with pytest.raises(ValueError, match="not an IPv4 address|cannot resolve"):
            res.socket(socket.AF_INET, "::1")
        for s in socks:
            s.close()
    with pytest.raises(ValueError, match="is closed"):
        res.socket()


def _hold_in_child(sock):
    """Fork a child that keeps SOCK open until the returned fd is closed."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(w)
        os.read(r, 1)
        os._exit(0)
    os.close(r)
    return pid, w


CROWDED = """
import portres
lo, hi = {lo}, {hi}
sysctl("net.ipv4.ip_local_port_range", f"{{lo}} {{hi}}")
window = range({w}, {w} + {b})
held = []
for p in range(lo, hi + 1):          # everything taken but one window (and a few singles)
    if p in window or (p % 5 == 0 and p - 1 not in window and p + 1 not in window):
        continue
    s = socket.socket(socket.AF_INET6); s.bind(("::", p)); held.append(s)
before = len(os.listdir("/proc/self/fd"))
starts = set()
for _ in range({tries}):
    res = portres.acquire({b})
    starts.add(res.start)
    res.close()
singles = portres.acquire(1); one = singles.start; singles.close()
try:
    portres.acquire({b} + 1); big = "acquired"
except OSError as e:
    big = e.errno
print(json.dumps({{"starts": sorted(starts), "one": one, "big": big,
                  "leaked": len(os.listdir("/proc/self/fd")) - before}}))
"""


def _udp_delivery_unprivileged():
    # Without CAP_BPF, eBPF cannot be loaded: the per-socket cBPF forms.
    out = []
    with portres.acquire(2, protocol="udp") as res:
        for family, host, dest in ((socket.AF_INET, "", "127.0.0.1"),
                                   (socket.AF_INET6, "", "::1")):
            s = res.socket(family, host)
            port = s.getsockname()[1]
            s.settimeout(2)
            fam = socket.AF_INET6 if ":" in dest else socket.AF_INET
            with socket.socket(fam, socket.SOCK_DGRAM) as tx:
                for i in range(50):
                    tx.sendto(b"%d" % i, (dest, port))
            got = 0
            try:
                while got < 50:
                    s.recv(16)
                    got += 1
            except OSError:
                pass
            out.append(got)
            s.close()
    return out


ONE_PORT = """
import errno, portres
sysctl("net.ipv4.ip_local_port_range", "42000 42009")
sysctl("net.ipv4.ip_local_reserved_ports", "42000-42007")
taken = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); taken.bind(("::", 42009))
got = {"tcp": set(), "udp": set()}
for _ in range(40):
    for proto in got:
        res = portres.acquire(1, protocol=proto); got[proto].add(res.start); res.close()
blocks = [portres.acquire(1, protocol="udp")]
try:
    portres.acquire(1, protocol="udp"); full = "acquired"
except OSError as e:
    full = [e.errno, str(e)]
print(json.dumps({"tcp": sorted(got["tcp"]), "udp": sorted(got["udp"]), "full": full}))
"""


