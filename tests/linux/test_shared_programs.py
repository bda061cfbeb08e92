"""The process-wide state the Linux backend keeps between blocks, attacked
from the program that imports it: the two shared UDP steering programs
(src/linux/bpf.c) and the token sequence (src/linux/registry.c)."""

from __future__ import annotations

import json
import os
import socket

import pytest

import portres
from tests.support import LINUX

pytestmark = pytest.mark.skipif(not LINUX, reason="the Linux backend's own state")


def _program_fds() -> list[int]:
    fds = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == "anon_inode:bpf-prog":
                fds.append(int(name))
        except OSError:
            continue
    return sorted(fds)


def _delivered(res: portres.Reservation, n: int) -> int:
    """Datagrams sent to 127.0.0.1 that reach a dual-stack socket from RES
    (its port's group is steered to it)."""
    with res.socket(socket.AF_INET6) as s, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        s.settimeout(0.5)
        port = s.getsockname()[1]
        for i in range(n):
            tx.sendto(b"%d" % i, ("127.0.0.1", port))
        got = 0
        try:
            while got < n:
                s.recv(64)
                got += 1
        except socket.timeout:
            pass
        return got


def test_the_shared_programs_swapped_behind_portres_are_not_attached():
    """A program that moves descriptors it does not know (dup2) can put the
    "return 1" selector where the "return 0" drop filter was, and the other
    way round.  Attached that way, the placeholder would keep (one byte of)
    every datagram and the selector would pick it: the caller gets nothing.
    The check made at each acquire tells the programs apart and loads them
    again."""
    with portres.acquire(1, protocol="udp") as res:
        assert _delivered(res, 5) == 5  # both programs loaded, steering works
    fds = _program_fds()
    if len(fds) != 2:
        pytest.skip("this process may not load eBPF (no shared programs: per-socket cBPF)")
    drop, select = fds  # loaded in that order: the lower number is the drop filter
    spare = os.dup(drop)
    try:
        os.dup2(select, drop)
        os.dup2(spare, select)
    finally:
        os.close(spare)
    with portres.acquire(1, protocol="udp") as res:
        assert _delivered(res, 20) == 20
    with portres.acquire(1, protocol="udp") as res:  # and with the reloaded ones
        assert _delivered(res, 20) == 20
    for fd in fds:  # portres no longer refers to them (it never closes what is not its own)
        os.close(fd)


def test_the_shared_program_descriptor_reused_for_another_file_is_not_attached():
    with portres.acquire(1, protocol="udp") as res:
        assert _delivered(res, 5) == 5
    fds = _program_fds()
    if len(fds) != 2:
        pytest.skip("this process may not load eBPF (no shared programs: per-socket cBPF)")
    r, w = os.pipe()
    try:
        for fd in fds:  # closed and reused by the program for a file of its own
            os.dup2(r, fd)
        with portres.acquire(1, protocol="udp") as res:
            assert _delivered(res, 20) == 20
    finally:
        os.close(r)
        os.close(w)
        for fd in fds:
            os.close(fd)


def _tokens(n: int) -> list[int]:
    out = []
    for _ in range(n):
        with portres.acquire(1) as res:
            out.append(res.token)
    return out


def test_tokens_never_repeat_in_a_process():
    tokens = _tokens(3000)
    assert len(set(tokens)) == len(tokens) and 0 not in tokens


def test_a_forked_child_does_not_repeat_its_parent_tokens():
    """The sequence is keyed per process: after fork() the child's tokens
    owe nothing to the parent's, which go on from the same point."""
    _tokens(3)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.write(w, json.dumps(_tokens(200)).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    assert os.waitpid(pid, 0)[1] == 0
    child = set(json.loads(data))
    parent = set(_tokens(200))
    assert len(child) == 200 and not (child & parent)
