"""The Linux fast paths (issue 7) keep every guarantee:

- res.socket() makes the socket in Python and binds it in C without checks;
- a port handed out comes back when its socket's file is released and the
  socket is gone (the block's epoll instance, the kernel's sock_diag destroy
  message): a dup() or a forked child keeps the port (tests/linux/
  test_reclaim.py races the rest);
- wildcard acquire probes with one reusable socket, far end of each window
  first, and never maps the range with a sock_diag dump;
- UDP placeholders share one eBPF "drop" program where the process may load
  one (root here), the per-socket cBPF form otherwise; the programs are
  loaded once per process.
"""

import errno
import os
import socket

import pytest

import portres
from tests.support import LINUX, ROOT, as_uid, linux_only, needs_netns, open_fds, run_in_netns

PROTOCOLS = {"tcp": socket.SOCK_STREAM, "udp": socket.SOCK_DGRAM}


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


@linux_only
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_port_comes_back_only_once_its_socket_is_gone_everywhere(protocol):
    # Every round: the block's epoll item says the copies hold the port, the
    # destroy message says when the socket is gone.
    with portres.acquire(1, protocol=protocol) as res:
        for _round in range(4):
            s = res.socket()
            assert s.getsockname()[1] == res.start
            copy = s.dup()
            s.close()
            with pytest.raises(OSError) as info:  # the dup still holds it
                res.socket()
            assert info.value.errno == errno.EADDRINUSE
            pid, w = _hold_in_child(copy)
            copy.close()
            with pytest.raises(OSError) as info:  # so does the child
                res.socket()
            assert info.value.errno == errno.EADDRINUSE
            os.close(w)
            os.waitpid(pid, 0)
            t = res.socket()  # gone everywhere: back
            assert t.getsockname()[1] == res.start
            t.close()


@linux_only
def test_a_reclaim_gives_back_only_the_ports_whose_socket_is_gone():
    with portres.acquire(2) as res:
        a, b = res.socket(), res.socket()
        port_a, port_b = a.getsockname()[1], b.getsockname()[1]
        b.close()
        c = res.socket()  # b's destroy message gives its port back
        assert c.getsockname()[1] == port_b
        with pytest.raises(OSError):
            res.socket()  # a is alive: its epoll item is there
        a.close()
        d = res.socket()  # a's release, then its destroy message
        assert d.getsockname()[1] == port_a
        c.close()
        d.close()


@linux_only
def test_res_bind_and_associated_sockets_are_tracked_as_well():
    with portres.acquire(1, protocol="udp") as res:
        for rounds in range(3):
            s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            if rounds % 2:
                assert res.bind(s, "::1") == res.start
            else:
                portres.associate(s, res.token)
                assert portres.bind(s, ("::1", 0)) == res.start
            copy = s.dup()
            s.close()
            # the port's IPv6 side is still the copy's (on "::1" the kernel
            # makes s V6ONLY: the IPv4 side was never taken)
            with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe, pytest.raises(OSError):
                res.bind(probe, "::1")
            copy.close()


@linux_only
def test_a_listening_socket_from_the_block_serves_and_gives_its_port_back():
    with portres.acquire(1) as res:
        for _round in range(3):
            srv = res.socket(socket.AF_INET, "127.0.0.1")
            srv.listen()
            cli = socket.create_connection(("127.0.0.1", res.start))
            conn, _ = srv.accept()
            cli.sendall(b"x")
            assert conn.recv(1) == b"x"
            for x in (conn, cli, srv):
                x.close()
            with res.socket() as again:  # the port is back
                assert again.getsockname()[1] == res.start


@needs_netns
@pytest.mark.parametrize(
    "lo,hi,w,b",
    [
        (40000, 40063, 40020, 8),  # a few failed binds
        (40000, 41999, 41500, 16),  # probing alone: about one failed bind per 16 ports
        (40000, 42999, 42500, 2),  # over a thousand failed binds (once mapped by a sock_diag dump)
    ],
)
def test_wildcard_acquire_finds_the_only_window_from_any_random_start(lo, hi, w, b):
    # A start inside the window once marked the window's first port taken
    # (a failed bind recorded at the wrong index) and missed the window.
    out = run_in_netns("fastpaths.crowded", lo, hi, w, b, 60)
    assert out["starts"] == [w], out
    assert lo <= out["one"] <= hi
    assert out["big"] == errno.EADDRINUSE
    assert out["leaked"] == 0


@linux_only
def test_udp_programs_are_loaded_once_per_process():
    # At most two descriptors (the "return 0" and "return 1" programs) stay
    # after the first UDP blocks; later ones load nothing and leave nothing.
    def round_of_blocks():
        blocks = [portres.acquire(4, protocol="udp") for _ in range(3)]
        s = blocks[0].socket(socket.AF_INET6)  # steered: the "return 1" program too
        s.close()
        for blk in blocks:
            blk.close()

    before = open_fds()
    round_of_blocks()
    loaded = open_fds()
    assert 0 <= loaded - before <= 2
    for _ in range(3):
        round_of_blocks()
    assert open_fds() == loaded


def _udp_delivery_unprivileged():
    # Without CAP_BPF, eBPF cannot be loaded: the per-socket cBPF forms.
    out = []
    with portres.acquire(2, protocol="udp") as res:
        for family, host, dest in ((socket.AF_INET, "", "127.0.0.1"), (socket.AF_INET6, "", "::1")):
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


@linux_only
@pytest.mark.skipif(not LINUX or not ROOT, reason="switching to another uid needs root")
def test_udp_placeholders_drop_and_steer_without_ebpf_too():
    assert as_uid(65534, _udp_delivery_unprivileged) == [50, 50]


@needs_netns
def test_a_wildcard_single_port_is_the_kernels_choice_in_range_and_not_reserved():
    # acquire(1) binds port 0: the kernel picks, with the range and the
    # reserved ports applied, and nothing read from /proc.
    out = run_in_netns("fastpaths.one_port")
    assert out["tcp"] and set(out["tcp"]) <= {42008, 42009}, out  # bind() favours odd ports
    assert out["udp"] == [42008], out
    code, msg = out["full"]
    assert code == errno.EADDRINUSE and "no free block of that size in the ephemeral port range" in msg
