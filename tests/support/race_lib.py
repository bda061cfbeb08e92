"""A foreign writer racing portres's edits of ip_local_reserved_ports.

foreign_writer_race(): per trial, a forked process ("another program")
waits for the go, spins for a random delay, then adds its own port the
way other programs do -- read the list, add, write it back -- while
portres creates and deletes a block.  The delay is uniform over 1.2 times
a calibrated create + delete, so the foreign write lands anywhere in
portres's edits (and sometimes after).  After each trial the foreign port
and the entries that were there before must be in the kernel's list.

Also counted: trials where the foreign write, made from a list read
before portres's create, took portres's block away (its delete then finds
no such reservation), and trials where a list read before portres's
delete brought the block's ports back (left as the kernel's own entries).
Both are the foreign writer's doing: nothing can stop a program that
writes the whole list.

Used by tests/linux/test_persistent_truth.py (through
tests/netns_scenarios/persistent_truth.py) and stress/persistent_race.py; must
run in a private network namespace with PORTRES_STATE_DIR in a temp dir.
"""

from __future__ import annotations

import errno
import os
import random
import time
from typing import Any, Dict, List

RESERVED = "/proc/sys/net/ipv4/ip_local_reserved_ports"
BEFORE = "1000,2000-2001"


def _foreign(port: int, delay: float, go_r: int, done_w: int) -> None:
    try:
        os.read(go_r, 1)
        end = time.perf_counter() + delay
        while time.perf_counter() < end:
            pass
        with open(RESERVED) as f:
            text = f.read().strip()
        with open(RESERVED, "w") as f:
            f.write((text + "," if text else "") + str(port))
        os.write(done_w, b"x")
    finally:
        os._exit(0)


def _set(text: str) -> None:
    with open(RESERVED, "w") as f:
        f.write(text + "\n")


def _get() -> str:
    with open(RESERVED) as f:
        return f.read().strip()


def foreign_writer_race(trials: int, seed: int = 1, start: int = 40000, count: int = 8) -> Dict[str, Any]:
    import portres

    rnd = random.Random(seed)
    _set(BEFORE)
    t0 = time.perf_counter()
    for _ in range(20):
        portres.create_persistent(start, count)
        portres.delete_persistent(start, count)
    span = (time.perf_counter() - t0) / 20
    block = f"{start}-{start + count - 1}"
    lost: List[List[Any]] = []
    ours_gone = resurrected = 0
    for trial in range(trials):
        _set(BEFORE)
        port = 30000 + trial % 5000
        go_r, go_w = os.pipe()
        done_r, done_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            _foreign(port, rnd.uniform(0, span * 1.2), go_r, done_w)
        os.write(go_w, b"x")
        try:
            portres.create_persistent(start, count)
            portres.delete_persistent(start, count)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
            ours_gone += 1
        os.read(done_r, 1)
        os.waitpid(pid, 0)
        for fd in (go_r, go_w, done_r, done_w):
            os.close(fd)
        have = set(_get().split(","))
        if str(port) not in have or not set(BEFORE.split(",")) <= have:
            lost.append([trial, _get()])
        if block in have:
            resurrected += 1
    _set(BEFORE)
    return {
        "trials": trials,
        "lost": len(lost),
        "lost_examples": lost[:5],
        "span_ms": round(span * 1000, 3),
        "ours_gone": ours_gone,
        "resurrected": resurrected,
    }
