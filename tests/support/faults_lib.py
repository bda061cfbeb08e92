"""Fault injection shared by tests/linux/test_faults.py and stress/faults.py.

persistent_kill_storm(): worker processes create and delete persistent
reservations as fast as they can while the parent SIGKILLs one at a random
moment every few milliseconds (and starts a new one).  Each worker tells the
parent, through a pipe, what it is about to do and what it did.  Afterwards
the parent checks, through portres's own lock:

  * the lock is never left held: every kill is followed by more edits;
  * the bookkeeping and the kernel agree: the sysctl holds exactly the
    foreign entries plus the ports of portres's entries;
  * no entry is lost: a block whose create returned (and that nobody was
    deleting since) is there with the same token; a block whose delete
    returned (and that nobody re-created since) is gone;
  * no two entries of a protocol overlap; foreign entries survive.

Must run in a private network namespace with PORTRES_STATE_DIR etc. in a
temp dir (the caller's job).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import random
import signal
import sys
import time
from typing import Dict, Tuple

RESERVED = "/proc/sys/net/ipv4/ip_local_reserved_ports"
FOREIGN = "1000-1002,30995,31500"


def _worker(slot: int, seed: int, w: int) -> None:
    """Loop forever on blocks of slot SLOT: 30000 + 100*slot ... (+99)."""
    import portres

    rnd = random.Random(seed)
    base = 30000 + 100 * slot

    def learn() -> Dict[Tuple[str, int, int], int]:
        """The entries of this slot, made by this worker or the ones before it."""
        from portres import _persistent_linux as pl

        return {
            (e["protocol"], e["start"], e["count"]): e["token"]
            for e in pl.entries()
            if e["source"] == "portres" and base <= e["start"] < base + 100
        }

    mine = learn()

    def say(*fields):
        os.write(w, (json.dumps(fields) + "\n").encode())

    # Count the journals left by killed writers that this worker repaired
    # (observation only: the outcome is checked from the final state).
    from portres import _persistent_linux as pl

    real_recover = getattr(pl, "_recover", None)
    if real_recover is not None:

        def recover(store, *args):
            op = (store.journal or {}).get("op")
            changed = real_recover(store, *args)
            if changed:
                say("recovered", op or "?", "", 0, 0)
            return changed

        pl._recover = recover

    while True:
        proto = rnd.choice(["tcp", "udp"])
        start = base + 5 * rnd.randrange(20)
        count = rnd.randrange(1, 5)
        key = (proto, start, count)
        if key in mine or (mine and rnd.random() < 0.5):
            key = rnd.choice(sorted(mine)) if key not in mine else key
            say("intent", "delete", *key)
            try:
                portres.delete_persistent(key[1], key[2], protocol=key[0])
                say("done", "delete", *key, mine.pop(key))
            except OSError as exc:
                say("error", "delete", *key, exc.errno)
                mine.pop(key, None)
        else:
            say("intent", "create", *key)
            try:
                token = portres.create_persistent(start, count, protocol=proto)
                mine[key] = token
                say("done", "create", *key, token)
            except OSError as exc:
                say("error", "create", *key, exc.errno)
                mine = learn()  # it overlaps one: delete that next


def _spawn(slot: int, seed: int) -> Tuple[int, int]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            _worker(slot, seed, w)
        finally:
            os._exit(0)
    os.close(w)
    os.set_blocking(r, False)
    return pid, r


def _lock_path() -> Tuple[str, str]:
    from portres import _persistent_linux as pl

    return pl._paths()


def persistent_kill_storm(
    seconds: float,
    workers: int = 6,
    seed: int = 1,
    min_ms: float = 2,
    max_ms: float = 40,
    min_mid_edit: int = 3,
    max_seconds: float = 60,
) -> dict:
    """Kill for SECONDS, and on until MIN_MID_EDIT kills have hit a writer
    inside its edit (a journal left behind), up to MAX_SECONDS."""
    import portres
    from portres import _persistent_linux as pl

    with open(RESERVED, "w") as f:
        f.write(FOREIGN)
    rnd = random.Random(seed)
    procs: Dict[int, Tuple[int, int]] = {}
    buffers: Dict[int, bytes] = {}
    # per block: the last completed operation and whether an edit of it was
    # in flight when its worker died (then either outcome is right)
    last: Dict[Tuple[str, int, int], Tuple[str, int]] = {}
    uncertain: Dict[Tuple[str, int, int], bool] = {}
    kills = killed_mid_edit = events = errors = 0
    recovered: Dict[str, int] = {}
    error_kinds: Dict[str, int] = {}
    before_intent: Dict[Tuple[str, int, int], bool] = {}
    for slot in range(workers):
        procs[slot] = _spawn(slot, rnd.randrange(1 << 30))
        buffers[slot] = b""

    def drain(slot: int) -> None:
        nonlocal events, errors
        pid, r = procs[slot]
        while True:
            try:
                chunk = os.read(r, 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                break
            buffers[slot] += chunk
        *lines, buffers[slot] = buffers[slot].split(b"\n")
        for line in lines:
            kind, op, proto, start, count, *rest = json.loads(line)
            key = (proto, start, count)
            events += 1
            if kind == "recovered":
                recovered[op] = recovered.get(op, 0) + 1
                continue
            if kind == "intent":
                before_intent[key] = uncertain.get(key, False)
                uncertain[key] = True
            elif kind == "done":
                last[key] = (op, rest[0])
                uncertain[key] = False
            else:
                errors += 1
                name = errno.errorcode.get(rest[0], str(rest[0]))
                error_kinds[name] = error_kinds.get(name, 0) + 1
                if op == "delete" and name == "ENOENT":  # known absent now
                    last[key] = ("delete", 0)
                    uncertain[key] = False
                elif op == "create" and name == "EADDRINUSE":  # refused: nothing changed
                    uncertain[key] = before_intent.get(key, True)
                else:
                    uncertain[key] = True

    state_path, lock_path = _lock_path()
    t_start = time.monotonic()

    def more() -> bool:
        t = time.monotonic() - t_start
        return t < seconds or (t < max_seconds and killed_mid_edit + sum(recovered.values()) < min_mid_edit)

    while more():
        time.sleep(rnd.uniform(min_ms, max_ms) / 1000)
        slot = rnd.randrange(workers)
        pid, r = procs[slot]
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        kills += 1
        drain(slot)
        os.close(r)
        # Did it die mid-edit?  Peek at the journal under the lock (the
        # lock must be free again: the kernel drops a dead holder's flock).
        try:
            fd = os.open(lock_path, os.O_RDONLY)
        except FileNotFoundError:
            fd = None
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_SH)
            try:
                with open(state_path) as f:
                    if json.load(f).get("journal"):
                        killed_mid_edit += 1
            except (OSError, ValueError):
                pass
            finally:
                os.close(fd)
        procs[slot] = _spawn(slot, rnd.randrange(1 << 30))
        buffers[slot] = b""
        for s in procs:
            drain(s)
    for slot, (pid, r) in procs.items():
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        drain(slot)
        os.close(r)

    # One more write, through the lock: recovers whatever the last kill left.
    t0 = time.monotonic()
    portres.create_persistent(29000, 1)
    portres.delete_persistent(29000, 1)
    recover_s = time.monotonic() - t0

    entries = [e for e in pl.entries() if e["source"] == "portres"]
    kernel = pl.read_reserved()
    ours = set()
    for e in entries:
        ours |= set(range(e["start"], e["start"] + e["count"]))
    foreign = pl.parse_ports(FOREIGN)
    have = {(e["protocol"], e["start"], e["count"]): e["token"] for e in entries}
    lost, resurrected, wrong_token = [], [], []
    for key, (op, token) in last.items():
        if uncertain.get(key):
            continue
        if op == "create":
            if key not in have:
                lost.append(key)
            elif have[key] != token:
                wrong_token.append(key)
        elif key in have:
            resurrected.append(key)
    overlaps = []
    for proto in ("tcp", "udp"):
        seen: Dict[int, Tuple] = {}
        for p, s, c in have:
            if p != proto:
                continue
            for port in range(s, s + c):
                if port in seen:
                    overlaps.append([seen[port], (p, s, c)])
                seen[port] = (p, s, c)
    leftovers = [n for n in os.listdir(os.path.dirname(state_path)) if n.endswith(".tmp")]
    return {
        "seconds": round(time.monotonic() - t_start, 2),
        "workers": workers,
        "kills": kills,
        "worker_error_kinds": error_kinds,
        "killed_mid_edit": killed_mid_edit + sum(recovered.values()),
        "journals_recovered": recovered,
        "events": events,
        "worker_errors": errors,
        "entries": len(entries),
        "checked_blocks": sum(1 for k in last if not uncertain.get(k)),
        "kernel_matches": kernel == foreign | ours,
        "foreign_kept": foreign <= kernel,
        "extra_in_kernel": pl.format_ports(kernel - foreign - ours),
        "missing_in_kernel": pl.format_ports((foreign | ours) - kernel),
        "lost": lost,
        "resurrected": resurrected,
        "wrong_token": wrong_token,
        "overlaps": overlaps,
        "recover_s": recover_s,
        "tmp_leftovers": len(leftovers),
    }


def runtime_kill_storm(kills: int, count: int = 200, seed: int = 1) -> dict:
    """A child acquires and releases a block of COUNT ports (and binds
    sockets from it) in a loop; SIGKILL it at a random moment, KILLS times.
    After each kill, every port of the block must be free again, for TCP and
    UDP: checked by a plain dual-stack bind, the strictest there is (run it
    in a private network namespace: the block is a fixed one)."""
    import socket
    import subprocess

    code = r"""
import os, socket, sys, portres
start, count = int(sys.argv[1]), int(sys.argv[2])
os.write(1, b"r")
while True:
    res = portres.acquire(count, start=start, protocol="udp" if os.getpid() % 2 else "tcp")
    socks = [res.socket(socket.AF_INET6 if i % 2 else socket.AF_INET) for i in range(min(count, 8))]
    for s in socks: s.close()
    res.close()
"""
    rnd = random.Random(seed)
    start = 20000 + rnd.randrange(5000)
    still_held = []
    for k in range(kills):
        p = subprocess.Popen([sys.executable, "-c", code, str(start), str(count)], stdout=subprocess.PIPE)
        assert p.stdout is not None and p.stdout.read(1) == b"r"
        time.sleep(rnd.uniform(0, 0.05))
        p.kill()
        p.wait()
        busy = []
        for port in range(start, start + count):
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                s = socket.socket(socket.AF_INET6, kind)
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                try:
                    s.bind(("::", port))
                except OSError:
                    busy.append(port)
                finally:
                    s.close()
        if busy:
            still_held.append([k, busy[:10]])
    return {"kills": kills, "block": [start, count], "still_held_after_kill": still_held}
