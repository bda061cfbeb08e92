"""The runtime marker (src/linux/marker.c): one memfd named "portres" per
process, made with the first block and kept, written by the C registry with
plain stores into a MAP_SHARED mapping; a forked child unmaps and closes it.
What `portres list --runtime` reads in other processes (issue 14)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.support import LINUX, child_env, in_child

pytestmark = pytest.mark.skipif(not LINUX, reason="the memfd marker is the Linux backend's")

if LINUX:
    import portres
    from portres import _runtime_linux

LINK = "/memfd:portres (deleted)"


def marker_fds() -> list:
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == LINK:
                found.append(int(name))
        except OSError:  # the listing's own descriptor
            pass
    return found


def marker_lines(fd: int) -> list:
    with open(f"/proc/self/fd/{fd}", "rb") as f:
        data = f.read()
    return [raw for raw in data.rstrip(b"\0").split(b"\n") if raw.strip()]


def test_one_marker_made_with_the_first_block_and_kept():
    def run() -> dict:
        # A forked child starts with no marker: the first block makes it.
        none_before = marker_fds() == []
        a = portres.acquire(3)
        b = portres.acquire(2, protocol="udp")
        fds = marker_fds()
        held = marker_lines(fds[0])
        a.close()
        after_one = marker_lines(fds[0])
        b.close()
        after_both = marker_lines(fds[0])
        kept = marker_fds()
        c = portres.acquire(1)
        again = marker_lines(fds[0])
        c.close()
        return {
            "none_before": none_before,
            "fds": fds,
            "kept": kept,
            "held": [x.decode() for x in held],
            "after_one": [x.decode() for x in after_one],
            "after_both": [x.decode() for x in after_both],
            "again": [x.decode() for x in again],
            "a": [a.start, a.count],
            "b": [b.start, b.count],
            "c": [c.start, c.count],
        }

    out = in_child(run)
    line = lambda p, s, c: _runtime_linux.line(p, s, c).decode().rstrip("\n")  # noqa: E731
    assert out["none_before"]
    assert len(out["fds"]) == 1 and out["kept"] == out["fds"]
    assert out["held"] == [line("tcp", *out["a"]), line("udp", *out["b"])]
    assert out["after_one"] == [line("udp", *out["b"])]
    assert out["after_both"] == []
    assert out["again"] == [line("tcp", *out["c"])]  # a freed line is reused


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace counts the system calls")
def test_acquire_and_close_write_the_marker_without_a_system_call(tmp_path):
    # After the first block, 200 acquire(1) + close() cycles make no call on
    # the marker: no pwrite, no new memfd, no ftruncate (one page holds 170
    # lines, and a freed line is reused).
    script = tmp_path / "cycle.py"
    script.write_text(
        "import portres\n"
        "portres.acquire(1).close()\n"
        "for _ in range(200):\n"
        "    portres.acquire(1).close()\n"
        "with portres.acquire(2) as r, portres.acquire(2) as s:\n"
        "    pass\n"
    )
    log = tmp_path / "strace.log"
    out = subprocess.run(
        ["strace", "-f", "-qq", "-o", str(log), "-e", "trace=memfd_create,pwrite64,ftruncate,mremap",
         sys.executable, str(script)],
        capture_output=True, text=True, env=child_env(), timeout=120,
    )  # fmt: skip
    if out.returncode != 0 and "ptrace" in out.stderr:
        pytest.skip(f"strace cannot trace here: {out.stderr.strip()[:200]}")
    assert out.returncode == 0, out.stderr
    calls = [ln for ln in log.read_text().splitlines() if "(" in ln]
    assert [c for c in calls if 'memfd_create("portres"' in c and "MFD_CLOEXEC" in c] != []
    assert len([c for c in calls if "memfd_create(" in c]) == 1, calls
    assert len([c for c in calls if "ftruncate(" in c]) == 1, calls  # the first page
    assert [c for c in calls if "pwrite64(" in c or "mremap(" in c] == [], calls


def test_the_marker_grows_past_its_first_page():
    def run() -> dict:
        held = [portres.acquire(1, protocol="udp") for _ in range(400)]
        fd = marker_fds()[0]
        lines = marker_lines(fd)
        size = os.fstat(fd).st_size
        expect = [_runtime_linux.line("udp", r.start, 1).rstrip(b"\n").decode() for r in held]
        listed = sorted((r.start for r in portres.list_runtime(protocol="udp") if r.pid == os.getpid()))
        for r in held[::2]:
            r.close()
        left = [x.decode() for x in marker_lines(fd)]
        rest = [_runtime_linux.line("udp", r.start, 1).rstrip(b"\n").decode() for r in held[1::2]]
        for r in held[1::2]:
            r.close()
        return {
            "ok": [x.decode() for x in lines] == expect,
            "size": size,
            "listed": listed,
            "starts": sorted(r.start for r in held),
            "left_ok": left == rest,
        }

    out = in_child(run)
    assert out["ok"] and out["left_ok"]
    assert out["size"] >= 400 * _runtime_linux.WIDTH
    assert out["listed"] == out["starts"]


def test_a_forked_child_closes_the_marker_and_never_writes_the_parents():
    def run() -> dict:
        a = portres.acquire(2)
        fd = marker_fds()[0]
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: no marker of the parent's, its own blocks in its own
            os.close(r)
            inherited = marker_fds()
            b = portres.acquire(3)
            c = portres.acquire(1)
            b.close()
            mine = marker_fds()
            mine_lines = [x.decode() for x in marker_lines(mine[0])] if mine else []
            os.write(w, json.dumps({"inherited": inherited, "mine": mine_lines, "c": [c.start, c.count]}).encode())
            os._exit(0)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            child = json.loads(f.read().decode())
        os.waitpid(pid, 0)
        parent = [x.decode() for x in marker_lines(fd)]
        start = a.start
        a.close()
        return {"child": child, "parent": parent, "a": [start, 2]}

    out = in_child(run)
    line = lambda p, s, c: _runtime_linux.line(p, s, c).decode().rstrip("\n")  # noqa: E731
    assert out["child"]["inherited"] == []
    assert out["child"]["mine"] == [line("tcp", *out["child"]["c"])]
    assert out["parent"] == [line("tcp", *out["a"])]


def test_a_marker_descriptor_closed_by_the_program_is_never_truncated(tmp_path):
    # The program closes the marker's descriptor and the number is reused
    # for one of its files: growing the marker must not truncate that file.
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me\n")

    def run() -> dict:
        first = portres.acquire(1)
        fd = marker_fds()[0]
        other = os.open(str(victim), os.O_RDWR)
        os.dup2(other, fd)  # the number is now the program's file
        os.close(other)
        held = [portres.acquire(1) for _ in range(300)]  # past the first page
        for r in held:
            r.close()
        first.close()
        return {"size": os.fstat(fd).st_size}

    out = in_child(run)
    assert out["size"] == len(b"keep me\n")
    assert victim.read_bytes() == b"keep me\n"
