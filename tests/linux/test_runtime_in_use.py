"""list_runtime()'s in_use (and `portres check`'s "handed out") is what the
block has handed out now: a port whose socket closed reads free again, on
whatever layout of placeholders holds it (a UDP port that served a V6ONLY
socket is held by two of them), and a port shared by an AF_INET and a V6ONLY
socket reads handed out while either is open."""

import os
import socket

import pytest

import portres
from tests.support import KINDS, LINUX, needs_ipv6

pytestmark = pytest.mark.skipif(not LINUX, reason="the runtime marker and the block's tracking are Linux's")


def _in_use(res):
    found = [r for r in portres.list_runtime(protocol=res.protocol) if r.pid == os.getpid() and r.start == res.start]
    assert len(found) == 1, found
    return found[0].in_use


def _v6only(res):
    """A V6ONLY socket bound from RES, and its port."""
    s = socket.socket(socket.AF_INET6, KINDS[res.protocol])
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    return s, res.bind(s, "::")


@needs_ipv6
@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_a_port_that_served_a_v6only_socket_reads_free_once_it_closed(protocol):
    with portres.acquire(2, protocol=protocol) as res:
        s, port = _v6only(res)
        assert _in_use(res) == (port,)
        s.close()
        assert _in_use(res) == ()
        with res.socket(port=port):  # and handed out again, it reads so
            assert _in_use(res) == (port,)
        assert _in_use(res) == ()


@needs_ipv6
@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_a_shared_port_reads_handed_out_while_either_side_is(protocol):
    with portres.acquire(2, protocol=protocol) as res:
        s6, port = _v6only(res)
        s4 = res.socket(socket.AF_INET, port=port)
        assert _in_use(res) == (port,)
        s4.close()
        assert _in_use(res) == (port,)
        s4 = res.socket(socket.AF_INET, port=port)
        s6.close()
        assert _in_use(res) == (port,)
        s4.close()
        assert _in_use(res) == ()


def test_a_socket_passed_on_keeps_its_port_handed_out():
    """The socket's copy in another process (here a forked child, the
    parent's closed) still holds the port: it reads handed out."""
    with portres.acquire(1) as res:
        s = res.socket()
        r, w = os.pipe()
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child keeps s until told to go
            os.close(w)
            os.close(ready_r)
            os.write(ready_w, b"1")  # it has run: its fork handler closed its copies of the block
            os.read(r, 1)
            os._exit(0)
        os.close(r)
        os.close(ready_w)
        try:
            # Until the child first runs it still holds copies of the
            # placeholder and the marker (Linux has no close-on-fork), and a
            # reader then sees the block in two processes: wait for it.
            assert os.read(ready_r, 1) == b"1"
            os.close(ready_r)
            s.close()
            assert _in_use(res) == (res.start,)
        finally:
            os.close(w)
            os.waitpid(pid, 0)
        assert _in_use(res) == ()
