"""Scenarios of tests/linux/test_faults.py (the storms are
tests/support/faults_lib.py's)."""

from __future__ import annotations

import errno
import glob
import os
import random
import resource
import socket
import time
from typing import Any, Dict, List

import portres
from portres import _persistent_linux as pl
from tests.support import faults_lib, import_all_portres

from . import kernel_text, simulate_reboot, sysctl


def runtime_kill_storm(kills: int) -> Dict[str, Any]:
    return faults_lib.runtime_kill_storm(kills, count=200)


def persistent_kill_storm(seconds: float, workers: int, seed: int) -> Dict[str, Any]:
    return faults_lib.persistent_kill_storm(seconds, workers=workers, seed=seed)


def killed_writer_temp_files() -> List[str]:
    pid = os.fork()
    if pid == 0:
        real = os.replace

        def die(src: Any, dst: Any) -> None:
            if str(src).endswith(".tmp"):
                os._exit(9)  # killed between writing the new state and renaming it
            real(src, dst)

        os.replace = die  # type: ignore[assignment]
        portres.create_persistent(47000, 2)
        os._exit(0)
    os.waitpid(pid, 0)
    portres.create_persistent(47100, 2)  # the next writer takes the lock
    return sorted(os.path.basename(p) for p in glob.glob(os.environ["PORTRES_STATE_DIR"] + "/*.tmp"))


def boot_kill() -> Dict[str, Any]:
    assert hasattr(pl, "_write_boot_files"), "test needs updating: no _write_boot_files"
    sysctl("net.ipv4.ip_local_reserved_ports", "7000")
    portres.create_persistent(46000, 4, boot=True)  # a boot entry that is kept
    pid = os.fork()
    if pid == 0:
        # killed after the edit is committed, before the boot files are written
        pl._write_boot_files = lambda store, blocks=None: os._exit(9)  # type: ignore[assignment,misc]  # a test double
        portres.create_persistent(46100, 4, boot=True)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    token = portres.lookup_persistent(46100, 4)  # committed: the create happened
    portres.create_persistent(46200, 4)  # later edits (not boot) run
    conf = simulate_reboot()
    try:
        portres.lookup_persistent(46100, 4)
        kept = True
    except OSError:
        kept = False
    return dict(status=os.WEXITSTATUS(status), token=token, conf=conf, kept=kept)


def _fill_descriptors() -> List[int]:
    fill = []
    try:
        while True:
            fill.append(os.open("/dev/null", os.O_RDONLY))
    except OSError as exc:
        assert exc.errno == errno.EMFILE, exc
    return fill


def emfile_wildcard() -> Dict[str, int]:
    sysctl("net.ipv4.ip_local_port_range", "42000 42009")
    sysctl("net.ipv4.ip_local_reserved_ports", "42000-42004")
    normal = portres.acquire(5)
    first = normal.start
    normal.close()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, max(hard, 1024)))
    fill = _fill_descriptors()
    res = portres.acquire(5)  # needs the soft limit raised: allowed
    del fill
    return {"normal": first, "at_limit": res.start}


def long_reserved() -> Dict[str, Any]:
    foreign = ",".join(str(p) for p in range(20000, 23000, 2))  # > 8 KiB of text
    sysctl("net.ipv4.ip_local_reserved_ports", foreign + ",42000-42004")
    text = sysctl("net.ipv4.ip_local_reserved_ports")
    sysctl("net.ipv4.ip_local_port_range", "42000 42009")
    starts = set()
    for _ in range(20):
        res = portres.acquire(5)
        starts.add(res.start)
        res.close()
    return {"text_len": len(text), "starts": sorted(starts)}


def long_foreign() -> Dict[str, Any]:
    path = "/proc/sys/net/ipv4/ip_local_reserved_ports"
    foreign = ",".join(str(p) for p in range(20000, 23000, 2)) + ",42000-42004"  # 9011 characters
    with open(path, "w") as f:
        f.write(foreign)
    held = kernel_text(path)
    try:
        portres.create_persistent(50000, 1)
        created = "ok"
    except OSError as e:
        created = str(e)
    after = kernel_text(path)
    return dict(
        held=len(held),
        created=created,
        kept_tail="42000-42004" in after,
        lost=len(set(held.split(",")) - set(after.split(","))),
    )


def nearly_full(span: int, seed: int) -> Dict[str, Any]:
    lo, hi = 40000, 40000 + span - 1
    sysctl("net.ipv4.ip_local_port_range", f"{lo} {hi}")
    gap = random.Random(seed).randrange(lo, hi - 8)
    # another uid takes every port of the range but a gap of 8 (TCP), half of
    # them listening, some with TIME_WAIT left behind
    r, w = os.pipe()
    r2, w2 = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            import_all_portres()  # before the uid switch (lazy imports)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            keep = []
            for p in range(lo, hi + 1):
                if gap <= p < gap + 8:
                    continue
                s = socket.socket()
                s.bind(("0.0.0.0", p))
                if p % 2:
                    s.listen()
                keep.append(s)
            os.write(w, b"x")
            os.read(r2, 1)
        finally:
            os._exit(0)
    os.close(w)
    assert os.read(r, 1) == b"x", "the other uid could not fill the range"

    def fds() -> int:
        from tests.support import open_fds  # leaves out the runtime marker (made once, kept)

        return open_fds()

    before = fds()
    t0 = time.perf_counter()
    res = portres.acquire(8)
    found_ms = (time.perf_counter() - t0) * 1000
    found = res.start
    res.close()
    t0 = time.perf_counter()
    big: Any
    try:
        portres.acquire(9)
        big = "acquired"
    except OSError as e:
        big = [errno.errorcode[e.errno or 0], str(e)]
    fail_ms = (time.perf_counter() - t0) * 1000
    hog = socket.socket()
    hog.bind(("0.0.0.0", gap + 3))  # now no gap of 8 at all
    full: Any
    try:
        portres.acquire(8, protocol="tcp")
        full = "acquired"
    except OSError as e:
        full = [errno.errorcode[e.errno or 0], str(e)]
    hog.close()
    after = fds()
    os.write(w2, b"x")
    os.waitpid(pid, 0)
    return dict(gap=gap, found=found, big=big, full=full, found_ms=found_ms, fail_ms=fail_ms, leaked=after - before)
