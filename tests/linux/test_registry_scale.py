"""The process-wide registry under many blocks (src/linux/registry.c): live
blocks found by token in an open-addressing table with backward-shift
deletion, associations in a hash table and on their block's list, each
block's marker line remembered by the block.  These tests drive every one
of those through churn (thousands of blocks opened and closed in random
order, associations replaced, blocks closed under their associations) and
check each answer against a plain model.  The cost side (flat with 8000
blocks held) is `bench/run.py --only held`."""

from __future__ import annotations

import random
import socket

import pytest

from tests.support import LINUX, in_child, marker_lines

pytestmark = pytest.mark.skipif(not LINUX, reason="the C registry tested here is the Linux backend's")

if LINUX:
    import portres
    from portres import _runtime_linux


def _private_netns() -> None:
    """In the forked child, as root: a network namespace of its own, so that
    no other program's sockets on the host take the ports it counts on."""
    import ctypes
    import os

    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x40000000) != 0:  # CLONE_NEWNET
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")


def _raise_nofile(need: int) -> None:
    import resource

    _private_netns()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))


def _associate_fails(token: int) -> bool:
    with socket.socket() as s:
        try:
            portres.associate(s, token)
        except FileNotFoundError:
            return True
    return False


def _churn(seed: int, rounds: int) -> dict:
    """Open and close blocks in random order; after each round every live
    token must be found, every closed one not, and the marker must list
    exactly the live blocks."""
    _raise_nofile(4 * rounds + 512)
    rnd = random.Random(seed)
    live: dict = {}
    closed: list = []
    problems: list = []
    for i in range(rounds):
        if live and rnd.random() < 0.45:
            token = rnd.choice(list(live))
            live.pop(token).close()
            closed.append(token)
        else:
            res = portres.acquire(1, protocol=rnd.choice(("tcp", "udp")))
            live[res.token] = res
        if i % 97 == 0 or i == rounds - 1:
            for token, res in live.items():
                with socket.socket(type=socket.SOCK_DGRAM if res.protocol == "udp" else socket.SOCK_STREAM) as s:
                    portres.associate(s, token)
                    port = portres.bind(s, ("127.0.0.1", 0))
                    if port != res.start:
                        problems.append(f"token {token:#x} bound {port}, not {res.start}")
            for token in rnd.sample(closed, min(len(closed), 50)):
                if not _associate_fails(token):
                    problems.append(f"closed token {token:#x} still found")
            want = sorted(
                _runtime_linux.line(r.protocol, r.start, r.count).decode().rstrip("\n") for r in live.values()
            )
            if marker_lines() != want:
                problems.append(f"round {i}: the marker lists {len(marker_lines())} lines, {len(want)} live")
    for res in live.values():
        res.close()
    return {"problems": problems[:10], "live": len(live), "closed": len(closed), "left": marker_lines()}


def test_tokens_and_marker_lines_survive_churn():
    out = in_child(_churn, 20261202, 3000)
    assert out["problems"] == []
    assert out["live"] > 200 and out["closed"] > 1000  # the table grew, and shifted on many deletions
    assert out["left"] == []


def _associations() -> dict:
    _raise_nofile(8192)
    rnd = random.Random(11)
    blocks = [portres.acquire(2) for _ in range(300)]
    socks = []
    for _ in range(2000):
        s = socket.socket()
        target = rnd.randrange(len(blocks))
        portres.associate(s, blocks[target].token)
        if rnd.random() < 0.3:  # re-associated: it moves to the other block's list
            target = rnd.randrange(len(blocks))
            portres.associate(s, blocks[target].token)
        socks.append((s, target))
    closed = set(rnd.sample(range(len(blocks)), 100))
    for k in closed:
        blocks[k].close()  # drops its own associations, and only those
    wrong_in_block = 0
    plain_in_closed = 0
    bound_in_live = 0
    for s, target in socks:
        if target in closed:
            # its association went with the block: a plain bind, outside every live block
            port = portres.bind(s, ("127.0.0.1", 0))
            if any(port in b.ports for k, b in enumerate(blocks) if k not in closed):
                plain_in_closed += 1
        else:
            try:
                port = portres.bind(s, ("127.0.0.1", 0))
            except OSError:  # both ports of the block taken by its earlier sockets
                continue
            bound_in_live += 1
            if port not in blocks[target].ports:
                wrong_in_block += 1
        s.close()
    for k, b in enumerate(blocks):
        if k not in closed:
            b.close()
    return {"wrong": wrong_in_block, "plain_in_live_block": plain_in_closed, "bound": bound_in_live}


def test_associations_follow_their_block_and_go_with_it():
    out = in_child(_associations)
    assert out["wrong"] == 0
    assert out["plain_in_live_block"] == 0
    assert out["bound"] >= 300  # at least one bind per live block landed in it


def _prune_keeps_live() -> dict:
    """Many associated sockets closed unbound (stale entries, pruned from
    time to time against /proc/self/fd) while a few live ones wait: the
    live ones still bind in their block."""
    _raise_nofile(8192)
    res = portres.acquire(8)
    extra = [socket.socket() for _ in range(3000)]  # descriptors a prune pass reads
    keep = []
    for i in range(5000):
        s = socket.socket()
        portres.associate(s, res.token)
        if i % 1000 == 0:
            keep.append(s)
        else:
            s.close()
    ports = [portres.bind(s, ("127.0.0.1", 0)) for s in keep]
    for s in keep + extra:
        s.close()
    res.close()
    return {"ports": ports, "block": [res.start, res.count]}


def test_pruning_stale_associations_keeps_the_live_ones():
    out = in_child(_prune_keeps_live)
    start, count = out["block"]
    assert len(out["ports"]) == 5
    assert all(start <= p < start + count for p in out["ports"])
    assert len(set(out["ports"])) == 5


def _bind_after_the_block_closed() -> dict:
    """A socket associated with a block that then closes: its association
    goes, and a bind to port 0 is the system's.  The association's
    IP_LOCAL_PORT_RANGE stays on the socket (portres cannot reach a socket
    it only knows by inode), so with that range taken the system refuses,
    and the message must say so, not blame a reserved block."""
    _raise_nofile(256)
    res = portres.acquire(2)
    s = socket.socket()
    portres.associate(s, res.token)
    ports = list(res.ports)
    res.close()
    holders = []
    for p in ports:
        h = socket.socket()
        h.bind(("127.0.0.1", p))
        holders.append(h)
    out: dict = {"error": None}
    try:
        portres.bind(s, ("127.0.0.1", 0))
    except OSError as exc:
        out = {"error": str(exc), "errno": exc.errno}
    for h in holders + [s]:
        h.close()
    return out


def test_a_bind_refused_by_the_system_after_the_block_closed_says_so():
    out = in_child(_bind_after_the_block_closed)
    import errno

    if out["error"] is None:
        pytest.skip("this kernel has no IP_LOCAL_PORT_RANGE (before 6.3): the bind took another port")
    assert out["errno"] == errno.EADDRINUSE
    assert "the system found no free port" in out["error"], out["error"]
    assert "reserved block" not in out["error"], out["error"]
