"""Scenarios of tests/linux/test_persistent_truth.py (issue 12: persistent
reservations on Linux follow what the kernel enforces), run in private
network namespaces with portres's state in the temp dirs the test names."""

from __future__ import annotations

import glob
import json
import os
import socket
import subprocess
import sys
from typing import Any, Callable, Dict, List

import portres
from portres import _persistent_linux as pl
from portres import _portres
from tests.support import race_lib

from . import sysctl

RESERVED = "net.ipv4.ip_local_reserved_ports"


def outcome(fn: Callable[..., Any], *args: Any, **kw: Any) -> List[Any]:
    """["ok", result] or [exception type, errno, message, filename]."""
    try:
        return ["ok", fn(*args, **kw)]
    except Exception as e:
        return [type(e).__name__, getattr(e, "errno", None), str(e), getattr(e, "filename", None)]


def cli(*args: str) -> List[Any]:
    p = subprocess.run([sys.executable, "-m", "portres", *args], capture_output=True, text=True)
    return [p.returncode, p.stdout + p.stderr]


def _ino() -> List[int]:
    st = os.stat("/proc/self/ns/net")
    return [st.st_dev, st.st_ino]


# ------------------------------------------------- 1. namespace identity


def ghost_create() -> Dict[str, Any]:
    return dict(ino=_ino(), token=portres.create_persistent(50000, 10))


def ghost_probe(token: int) -> Dict[str, Any]:
    kernel = sysctl(RESERVED)
    listed = outcome(portres.list_persistent)
    looked = outcome(portres.lookup_persistent, 50000, 10)
    s = socket.socket()

    def assoc_bind() -> int:
        portres.associate(s, token)
        return portres.bind(s, ("127.0.0.1", 0))

    bound = outcome(assoc_bind)
    created = outcome(portres.create_persistent, 50000, 10)
    return dict(ino=_ino(), kernel=kernel, listed=listed, looked=looked, bound=bound, created=created)


def cookie_fallback() -> Dict[str, str]:
    cookie = pl.netns_id()
    pl.SO_NETNS_COOKIE = 0x7FFF  # an option no kernel knows: as before Linux 5.14
    fallback = pl.netns_id()
    st = os.stat("/proc/self/ns/net")
    return dict(cookie=cookie, fallback=fallback, ino=f"ino-{st.st_dev:x}-{st.st_ino}")


# ------------------------------------------- 2. the administrator's edit


def admin_clears() -> Dict[str, Any]:
    token = portres.create_persistent(50000, 10)
    sysctl(RESERVED, "\n")  # the administrator clears it
    listed = outcome(portres.list_persistent)
    looked = outcome(portres.lookup_persistent, 50000, 10)
    s = socket.socket()
    assoc = outcome(portres.associate, s, token)
    check = subprocess.run(
        [sys.executable, "-m", "portres", "check", "50003", "--json"], capture_output=True, text=True
    )
    again = outcome(portres.create_persistent, 50000, 10)
    return dict(
        listed=listed, looked=looked, assoc=assoc, check=json.loads(check.stdout), again=again, kernel=sysctl(RESERVED)
    )


def admin_removes_one_port() -> Dict[str, Any]:
    token = portres.create_persistent(50000, 10, protocol="udp")
    sysctl(RESERVED, "50000-50004,50006-50009")  # 50005 removed
    listed = outcome(portres.list_persistent, protocol="udp")
    looked = outcome(portres.lookup_persistent, 50000, 10, protocol="udp")
    s = socket.socket(type=socket.SOCK_DGRAM)
    assoc = outcome(portres.associate, s, token)
    deleted = outcome(portres.delete_persistent, 50000, 10, protocol="udp")
    after = sysctl(RESERVED)
    again = outcome(portres.create_persistent, 50000, 10, protocol="udp")
    rm = outcome(portres.delete_persistent, 50000, 10, protocol="udp")
    return dict(
        listed=listed,
        looked=looked,
        assoc=assoc,
        deleted=deleted,
        after=after,
        again=again,
        rm=rm,
        end=sysctl(RESERVED),
    )


def removed_between_associate_and_bind() -> Dict[str, Any]:
    token = portres.create_persistent(50000, 4)
    s = socket.socket()
    portres.associate(s, token)
    sysctl(RESERVED, "50000-50002")  # 50003 removed meanwhile
    refused = outcome(portres.bind, s, ("127.0.0.1", 0))
    name = s.getsockname()
    sysctl(RESERVED, "50000-50003")  # and back: the block is the kernel's again
    t = socket.socket()
    portres.associate(t, token)
    port = portres.bind(t, ("127.0.0.1", 0))
    return dict(refused=refused, name=name, port=port)


# ---------------------------------------------------- 3. foreign writers


def foreign_race(trials: int, seed: int) -> Dict[str, Any]:
    return race_lib.foreign_writer_race(trials, seed=seed)


def stale_writes() -> Dict[str, str]:
    """Another program writes a whole list right after portres's next write."""
    path = "/proc/sys/net/ipv4/ip_local_reserved_ports"
    real_or, real_swap = pl._pwrite_all, pl._swap  # portres's adds, and its removes

    def once_after_our_write(text: str) -> None:
        def stale() -> None:
            pl._pwrite_all, pl._swap = real_or, real_swap
            with open(path, "w") as f:
                f.write(text)

        def pwrite_all(fd: int, data: bytes, offset: int) -> None:
            real_or(fd, data, offset)
            stale()

        def swap(rfd: int, fd: int, raw: bytes, new: bytes) -> bool:
            done = real_swap(rfd, fd, raw, new)
            if done:
                stale()
            return done

        pl._pwrite_all = pwrite_all  # type: ignore[assignment,misc]  # a test double
        pl._swap = swap  # type: ignore[assignment,misc]  # a test double

    r = {}
    sysctl(RESERVED, "1000,2000")
    once_after_our_write("1000,2000")  # a copy read before the create
    portres.create_persistent(40000, 4)
    r["create_stale"] = sysctl(RESERVED)
    once_after_our_write("1000,2000,3000,40000-40003")  # a copy read before the delete, plus its 3000
    portres.delete_persistent(40000, 4)
    r["delete_stale"] = sysctl(RESERVED)
    portres.create_persistent(40000, 4)
    once_after_our_write("1000,2000,3000,40002")  # someone reserves 40002 as soon as it is free
    portres.delete_persistent(40000, 4)
    r["delete_new_entry"] = sysctl(RESERVED)
    portres.create_persistent(41000, 4)
    once_after_our_write("1000,3000,40002,41000-41003")  # 2000 vanishes during portres's edit
    portres.delete_persistent(41000, 4)
    r["vanished"] = sysctl(RESERVED)
    return r


# ----------------------------------------------------- 4. schema checks


def malformed(cases: Dict[str, str]) -> Dict[str, Any]:
    """CASES: name -> the bytes of a state file (latin-1 text)."""
    results = {}
    for name, text in cases.items():
        state, lock = pl._paths()
        os.makedirs(os.path.dirname(state), exist_ok=True)
        with open(state, "wb") as f:
            f.write(text.encode("latin-1"))
        open(lock, "a").close()
        s = socket.socket()
        r: Dict[str, Any] = dict(
            lookup=outcome(portres.lookup_persistent, 50000, 2),
            list=outcome(portres.list_persistent),
            create=outcome(portres.create_persistent, 50000, 2),
            delete=outcome(portres.delete_persistent, 50000, 2),
            associate=outcome(portres.associate, s, 12345),
            state=state,
        )
        s.close()
        for cmd in (
            ["list"],
            ["lookup", "50000", "2"],
            ["add", "50000", "2"],
            ["delete", "50000", "2"],
            ["check", "50000"],
            ["list", "--json"],
        ):
            r["cli " + " ".join(cmd)] = cli(*cmd)
        results[name] = r
    return results


# ---------------------------------------------------------- 5. --boot


def boot_needs_a_target(target: str) -> Dict[str, Any]:
    """In a private mount namespace too: /etc/sysctl.d becomes a tmpfs."""
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/etc/sysctl.d"], check=True)
    refused_api = outcome(portres.create_persistent, 46000, 4, boot=True)
    refused_cli = cli("add", "46000", "4", "--boot")
    written = sorted(os.listdir("/etc/sysctl.d"))
    kernel = sysctl(RESERVED)
    explicit = cli("add", "46000", "4", "--boot-file", target)
    with open(target) as f:
        conf = f.read()
    return dict(
        refused_api=refused_api, refused_cli=refused_cli, written=written, kernel=kernel, explicit=explicit, conf=conf
    )


def boot_file_contents() -> Dict[str, Any]:
    sysctl(RESERVED, "7000,8000-8001")  # 7000: runtime only
    portres.create_persistent(46000, 4, boot=True)
    portres.create_persistent(46100, 4)  # not kept at boot
    with open(os.environ["PORTRES_SYSCTL_D_FILE"]) as f:
        conf = f.read()
    portres.delete_persistent(46000, 4)
    left = sorted(os.listdir(os.path.dirname(os.environ["PORTRES_SYSCTL_D_FILE"])))
    return dict(conf=conf, left=left)


def boot_tokens_after_reboot() -> List[int]:
    portres.create_persistent(46000, 4, boot=True)
    for f in glob.glob(os.environ["PORTRES_STATE_DIR"] + "/*"):
        os.remove(f)  # reboot: /run is empty, the kernel keeps the ports
    tokens = [portres.lookup_persistent(46000, 4)]
    for _ in range(2):
        p = subprocess.run(
            [sys.executable, "-m", "portres", "lookup", "46000", "4", "--json"], capture_output=True, text=True
        )
        tokens.append(json.loads(p.stdout)["token"])
    portres.create_persistent(47000, 1)  # a writer saves the state
    tokens.append(portres.lookup_persistent(46000, 4))
    return tokens


# ------------------------------------- 6. a token outlives its deletion


def token_deleted_elsewhere() -> Dict[str, Any]:
    token = portres.create_persistent(50000, 4)
    s = socket.socket()
    portres.associate(s, token)  # known to this process now
    first = portres.bind(s, ("127.0.0.1", 0))
    rc = cli("delete", "50000", "4")[0]
    t = socket.socket()
    again = outcome(portres.associate, t, token)
    u = socket.socket()

    def nowait() -> None:
        portres.associate_nowait(u, token).result(1)

    return dict(first=first, rc=rc, again=again, again_nowait=outcome(nowait))


def c_layer_range() -> Dict[str, Any]:
    sysctl(RESERVED, "51000-51003")
    r: Dict[str, Any] = {
        "no_cache": [hasattr(_portres, n) for n in ("register_persistent_token", "unregister_persistent_token")]
    }
    s = socket.socket()
    _portres.associate_range(s.fileno(), 0, 51000, 4)
    r["bound"] = portres.bind(s, ("127.0.0.1", 0))
    u = socket.socket(type=socket.SOCK_DGRAM)
    op = _portres.associate_range(u.fileno(), 1, 51000, 4, True, u)
    r["overlapped"] = [op.done(), op.result(0)]
    r["udp_bound"] = portres.bind(u, ("127.0.0.1", 0))
    t = socket.socket()  # TCP, for a UDP block
    r["wrong_type"] = outcome(_portres.associate_range, t.fileno(), 1, 51000, 4)
    r["bad_block"] = [outcome(_portres.associate_range, t.fileno(), 0, a, b) for a, b in ((0, 1), (65535, 2), (1, 0))]
    b = socket.socket()
    b.bind(("127.0.0.1", 0))
    r["bound_already"] = outcome(_portres.associate_range, b.fileno(), 0, 51000, 4)
    return r


def mixed_associations() -> Dict[str, Any]:
    """Sockets associated with runtime blocks and the persistent block
    51000-51003 in turn (each association replacing the one before), then
    some runtime blocks closed: each socket binds where its last association
    says, and a closed block takes only its own associations with it."""
    import random

    sysctl(RESERVED, "51000-51003")
    rnd = random.Random(5)
    blocks = [portres.acquire(2) for _ in range(40)]
    socks = []
    for _ in range(400):
        s = socket.socket()
        last: Any = None  # "persistent", or the index of a runtime block
        for _ in range(rnd.randrange(1, 4)):
            if rnd.random() < 0.4:
                _portres.associate_range(s.fileno(), 0, 51000, 4)
                last = "persistent"
            else:
                last = rnd.randrange(len(blocks))
                portres.associate(s, blocks[last].token)
        socks.append((s, last))
    closed = set(rnd.sample(range(len(blocks)), 15))
    for k in closed:
        blocks[k].close()
    for _ in range(200):  # churn the token table and the block lists meanwhile
        portres.acquire(1).close()
    r: Dict[str, Any] = {"persistent": 0, "runtime": 0, "wrong": [], "plain": 0}
    for s, last in socks:
        try:  # never full: each socket is closed once bound, freeing its port
            port = portres.bind(s, ("127.0.0.1", 0))
        except OSError as e:
            s.close()
            r["wrong"].append([repr(last), repr(e)])
            continue
        if last == "persistent":
            r["persistent"] += 1
            if not 51000 <= port <= 51003:
                r["wrong"].append(["persistent", port])
        elif last in closed:
            r["plain"] += 1
            if 51000 <= port <= 51003 or any(port in b.ports for k, b in enumerate(blocks) if k not in closed):
                r["wrong"].append(["closed block", port])
        else:
            r["runtime"] += 1
            if port not in blocks[last].ports:
                r["wrong"].append([last, port, blocks[last].ports])
        s.close()
    for k, b in enumerate(blocks):
        if k not in closed:
            b.close()
    return r
