"""Runtime reservations against the real kernel: what a held block refuses,
what it hands out, and that it ends when released."""

import gc
import socket
import subprocess
import sys
import warnings

import pytest

import portres
from tests.support import (
    in_child,
    linux_only,
    needs_root,
    netns_available,
    open_fds,
    other_uid_binds,
    run_in_netns,
    try_all_binds,
)

PROTOCOLS = {"tcp": socket.SOCK_STREAM, "udp": socket.SOCK_DGRAM}


@linux_only
@needs_root
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_held_block_refuses_every_bind_form_of_another_uid(protocol):
    with portres.acquire(3, protocol=protocol) as res:
        # one port already handed to our socket, one handed and closed, one never
        ours = res.socket()
        gone = res.socket(socket.AF_INET6)
        gone.close()
        results = other_uid_binds(res.ports, PROTOCOLS[protocol])
        assert set(results.values()) == {"EADDRINUSE"}, {k: v for k, v in results.items() if v != "EADDRINUSE"}
        ours.close()


@linux_only
@needs_root
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_released_and_collected_blocks_free_their_ports(protocol):
    res = portres.acquire(2, protocol=protocol)
    ports = list(res.ports)
    res.close()
    assert set(other_uid_binds(ports, PROTOCOLS[protocol]).values()) == {"ok"}

    res = portres.acquire(2, protocol=protocol, start=ports[0])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del res
        gc.collect()
    assert any(issubclass(w.category, ResourceWarning) for w in caught)
    assert set(other_uid_binds(ports, PROTOCOLS[protocol]).values()) == {"ok"}


@linux_only
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_same_uid_binds_without_reuseport_are_refused(protocol):
    # Another program of our own uid binding normally: refused.
    with portres.acquire(2, protocol=protocol) as res:
        results = try_all_binds(res.ports, PROTOCOLS[protocol])
        plain = {k: v for k, v in results.items() if "SO_REUSEPORT" not in k and "/both" not in k}
        assert set(plain.values()) == {"EADDRINUSE"}, plain


@linux_only
@needs_root
def test_exhausted_block_stays_held():
    with portres.acquire(2) as res:
        socks = [res.socket(), res.socket()]
        with pytest.raises(OSError):
            res.socket()
        assert set(other_uid_binds(res.ports, socket.SOCK_STREAM).values()) == {"EADDRINUSE"}
        for s in socks:
            s.close()


@linux_only
def test_acquire_close_cycles_leak_no_descriptor():
    before = open_fds()
    for i in range(1000):
        res = portres.acquire(2, protocol="udp" if i % 2 else "tcp")
        if i % 10 == 0:
            res.socket().close()
        res.close()
    assert open_fds() == before


@linux_only
def test_large_block_raises_the_soft_fd_limit():
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard < 4096:
        pytest.skip(f"hard RLIMIT_NOFILE {hard} too low for this test")
    # 2000 consecutive free ports: in a private network namespace where one
    # can be made, since other programs' sockets may leave no such window in
    # the host's ephemeral range (seen: a test suite in another checkout
    # holding a thousand scattered one-port blocks).
    if netns_available():
        out = run_in_netns("platform.large_block_raises_the_soft_fd_limit")
    else:
        from tests.netns_scenarios import platform

        out = in_child(platform.large_block_raises_the_soft_fd_limit)
    assert out["count"] == 2000
    assert out["soft_after"] > 1024


@linux_only
def test_block_too_large_for_the_hard_fd_limit_fails_cleanly():
    # In a child process: a lowered hard limit cannot be raised again.
    code = """
import errno, os, resource, portres
resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
before = len(os.listdir('/proc/self/fd'))
try:
    portres.acquire(1000)
except OSError as e:
    assert e.errno == errno.EMFILE, e
    assert 'RLIMIT_NOFILE' in str(e), e
    after = len(os.listdir('/proc/self/fd'))
    assert after == before, (before, after)
    print('clean')
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "clean", out.stdout + out.stderr
