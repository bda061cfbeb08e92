"""The process-wide state the Linux backend keeps between blocks, attacked
from the program that imports it: the two shared UDP steering programs
(src/linux/bpf.c) and the token sequence (src/linux/registry.c)."""

from __future__ import annotations

import errno
import json
import os
import platform
import socket

import pytest

import portres
from tests.support import LINUX, in_child

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
            assert _delivered(res, 20) == 20  # (also so on per-socket cBPF)
        # loaded again, not the pipe taken for them
        assert len(set(_program_fds()) - set(fds)) == 2
    finally:
        os.close(r)
        os.close(w)
        for fd in fds:
            os.close(fd)


F_SETSIG, F_GETSIG = 10, 11  # include/uapi/asm-generic/fcntl.h
# machine -> (AUDIT_ARCH_*, __NR_fcntl): include/uapi/linux/audit.h, the syscall tables
SECCOMP_ARCH = {"x86_64": (0xC000003E, 72), "aarch64": (0xC00000B7, 25)}


def _refuse_f_setsig() -> None:
    """From now on fcntl(F_SETSIG) fails with EINVAL in this (single-threaded)
    process, as on a kernel or sandbox that refuses it; every other call,
    fcntl(F_GETSIG) included, goes through.  A seccomp filter: irreversible,
    so only ever in a child."""
    import ctypes
    import platform

    arch, nr_fcntl = SECCOMP_ARCH[platform.machine()]

    class SockFilter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]

    ld, jeq, ret = 0x20, 0x15, 0x06  # BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JEQ|BPF_K, BPF_RET|BPF_K
    allow, refuse = 0x7FFF0000, 0x00050000 | errno.EINVAL  # SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO|EINVAL
    # struct seccomp_data: nr at 0, arch at 4, args[1] (fcntl's cmd; low half, little-endian) at 24.
    # A false comparison jumps to the last instruction: allow.
    insns = [(ld, 0, 0, 4), (jeq, 0, 5, arch), (ld, 0, 0, 0), (jeq, 0, 3, nr_fcntl)]
    insns += [(ld, 0, 0, 24), (jeq, 0, 1, F_SETSIG), (ret, 0, 0, refuse), (ret, 0, 0, allow)]
    program = (SockFilter * len(insns))(*(SockFilter(*insn) for insn in insns))
    fprog = SockFprog(len(insns), program)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
    pr_set_no_new_privs, pr_set_seccomp, seccomp_mode_filter = 38, 22, 2
    if libc.prctl(pr_set_no_new_privs, 1, None, 0, 0):
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.prctl(pr_set_seccomp, seccomp_mode_filter, ctypes.addressof(fprog), 0, 0):
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


def _attack_without_the_tag(attack: str) -> dict:
    """In a forked child (its copies of the programs closed at fork, so it
    loads its own at its first UDP acquire) that cannot F_SETSIG: ATTACK
    ("swap" or "reuse") as the tagged tests above make it, against the
    prog-id check portres falls back to."""
    import fcntl

    _refuse_f_setsig()
    r, w = os.pipe()
    refused = None
    try:
        fcntl.fcntl(r, F_SETSIG, 5)
    except OSError as exc:
        refused = exc.errno
    out: dict = {"f_setsig_refused": refused == errno.EINVAL}
    with portres.acquire(1, protocol="udp") as res:
        out["delivered"] = _delivered(res, 20)
    fds = _program_fds()
    out["programs"] = len(fds)
    out["tags"] = [fcntl.fcntl(fd, F_GETSIG) for fd in fds]  # 0: no tag, the prog-id check is in use
    if len(fds) != 2:
        return out
    if attack == "swap":
        drop, select = fds
        spare = os.dup(drop)
        os.dup2(select, drop)
        os.dup2(spare, select)
        os.close(spare)
    else:  # closed and reused by the program for a file of its own
        for fd in fds:
            os.dup2(r, fd)
    with portres.acquire(1, protocol="udp") as res:
        out["delivered_after"] = _delivered(res, 20)
    with portres.acquire(1, protocol="udp") as res:  # and with the reloaded ones
        out["delivered_again"] = _delivered(res, 20)
    # loaded again: two programs besides what the attack left at the old numbers
    out["programs_after"] = len(set(_program_fds()) - set(fds))
    return out


@pytest.mark.skipif(
    LINUX and platform.machine() not in SECCOMP_ARCH, reason="the seccomp filter knows x86_64 and aarch64 only"
)
@pytest.mark.parametrize("attack", ["swap", "reuse"])
def test_without_the_file_tag_the_prog_id_check_catches_the_same_attacks(attack):
    """Where fcntl(F_SETSIG) fails at load, the programs carry no tag and each
    use checks the program's id instead (shared_prog_check()): steering still
    works, and the swap and the reuse of the descriptors are still caught
    (the programs are loaded again)."""
    out = in_child(_attack_without_the_tag, attack)
    assert out["f_setsig_refused"], "the seccomp filter did not refuse F_SETSIG"
    assert out["delivered"] == 20
    if out["programs"] != 2:
        pytest.skip("this process may not load eBPF (no shared programs: per-socket cBPF)")
    assert out["tags"] == [0, 0], "the programs are tagged: the fallback is not what runs"
    assert out["delivered_after"] == 20
    assert out["delivered_again"] == 20
    assert out["programs_after"] == 2, "the attacked descriptors were taken for the programs"


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
