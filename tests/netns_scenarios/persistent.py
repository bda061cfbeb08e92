"""Scenarios of tests/linux/test_persistent.py (persistent reservations on
Linux: net.ipv4.ip_local_reserved_ports, portres's bookkeeping in the temp
dirs the test names in PORTRES_STATE_DIR, PORTRES_BOOT_DIR and
PORTRES_SYSCTL_D_FILE)."""

from __future__ import annotations

import multiprocessing
import os
import socket
import subprocess
import sys
from typing import Any, Dict, Optional

import portres
from tests.support import import_all_portres

from . import simulate_reboot, sysctl


def _refusal(if_done: str, fn: Any, *args: Any) -> Any:
    """[errno, message] of the OSError fn(*args) raises, or IF_DONE if it
    returns."""
    try:
        fn(*args)
    except OSError as e:
        return [e.errno, str(e)]
    return if_done


def round_trip() -> Dict[str, Any]:
    before = sysctl("net.ipv4.ip_local_reserved_ports", "1000-1002,50005")
    token = portres.create_persistent(50000, 10)
    after_create = sysctl("net.ipv4.ip_local_reserved_ports")
    looked = portres.lookup_persistent(50000, 10)
    listed = portres.list_persistent()
    udp_listed = portres.list_persistent(protocol="udp")
    s = socket.socket()
    portres.associate(s, token)
    port = portres.bind(s, ("127.0.0.1", 0))
    t = socket.socket()
    op = portres.associate_nowait(t, token)
    op.result(1)
    port2 = portres.bind(t, ("127.0.0.1", 0))
    s.close()
    t.close()
    portres.delete_persistent(50000, 10)
    after_delete = sysctl("net.ipv4.ip_local_reserved_ports")
    gone = _refusal("still there", portres.lookup_persistent, 50000, 10)
    return dict(
        before=before,
        token=token,
        after_create=after_create,
        looked=looked,
        listed=listed,
        udp_listed=udp_listed,
        port=port,
        port2=port2,
        after_delete=after_delete,
        gone=gone,
    )


def overlaps() -> Dict[str, Any]:
    portres.create_persistent(40000, 10)
    overlap = _refusal("accepted", portres.create_persistent, 40005, 10)
    portres.create_persistent(40005, 10, protocol="udp")  # other protocol: fine
    both = sysctl("net.ipv4.ip_local_reserved_ports")
    portres.delete_persistent(40000, 10)  # UDP still needs 40005-40009
    after_tcp = sysctl("net.ipv4.ip_local_reserved_ports")
    portres.delete_persistent(40005, 10, protocol="udp")
    return dict(overlap=overlap, both=both, after_tcp=after_tcp, end=sysctl("net.ipv4.ip_local_reserved_ports"))


def _create(i: int) -> int:
    return portres.create_persistent(30000 + 10 * i, 5, protocol="udp" if i % 2 else "tcp")


def concurrent_creators() -> Dict[str, Any]:
    sysctl("net.ipv4.ip_local_reserved_ports", "2000,2002-2004")
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(32) as pool:
        tokens = pool.map(_create, range(32))
    kernel = sysctl("net.ipv4.ip_local_reserved_ports")
    found = [portres.lookup_persistent(30000 + 10 * i, 5, protocol="udp" if i % 2 else "tcp") for i in range(32)]
    with ctx.Pool(32) as pool:
        pool.starmap(portres.delete_persistent, [(30000 + 10 * i, 5) for i in range(0, 32, 2)])
    after = sysctl("net.ipv4.ip_local_reserved_ports")
    return dict(tokens=tokens, found=found, kernel=kernel, after=after)


def unprivileged_create() -> Dict[str, str]:
    r, w = os.pipe()
    if os.fork() == 0:
        import_all_portres()  # before the uid switch (lazy imports)
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
        try:
            portres.create_persistent(45000, 4)
            res = "created"
        except PermissionError as e:
            res = "PermissionError: " + str(e)
        except Exception as e:  # reported to the test, which expects PermissionError
            res = repr(e)
        os.write(w, res.encode())
        os._exit(0)
    os.close(w)
    res = os.read(r, 4096).decode()
    os.wait()
    return dict(res=res, kernel=sysctl("net.ipv4.ip_local_reserved_ports"))


def simulated_reboot() -> Dict[str, Any]:
    sysctl("net.ipv4.ip_local_reserved_ports", "7000")
    t1 = portres.create_persistent(46000, 4, boot=True)
    portres.create_persistent(46100, 4)  # not kept at boot
    conf = simulate_reboot()
    t1b = portres.lookup_persistent(46000, 4)
    try:
        portres.lookup_persistent(46100, 4)
        lost = False
    except OSError:
        lost = True
    return dict(conf=conf, t1=t1, t1b=t1b, lost=lost, kernel=sysctl("net.ipv4.ip_local_reserved_ports"))


def writer_killed_mid_edit() -> Dict[str, Any]:
    # A journal left by a writer killed after writing the sysctl but before
    # committing its bookkeeping: the next writer rolls it forward.
    from portres import _persistent_linux as pl

    real = pl._write_reserved

    def die_after_write(ports: Any) -> None:
        real(ports)
        os._exit(9)

    pid = os.fork()
    if pid == 0:
        pl._write_reserved = die_after_write  # type: ignore[assignment,misc]  # a test double
        portres.create_persistent(47000, 3)
    _, status = os.waitpid(pid, 0)
    # and one killed before writing the sysctl: rolled back
    pid = os.fork()
    if pid == 0:
        pl._write_reserved = lambda edit: os._exit(9)  # type: ignore[assignment,misc]  # a test double
        portres.create_persistent(47100, 3)
    os.waitpid(pid, 0)
    portres.create_persistent(47200, 3)  # takes the lock, recovers
    listed = portres.list_persistent()
    return dict(
        status=os.WEXITSTATUS(status),
        listed=listed,
        kernel=sysctl("net.ipv4.ip_local_reserved_ports"),
        t47000=portres.lookup_persistent(47000, 3),
    )


# ------------------------------------------------------------------ the CLI


def cli(*args: str, user: Optional[int] = None) -> Dict[str, Any]:
    """Run `python -m portres ARGS`; as USER: in a forked child switched to
    that uid, which runs the command's entry point."""
    if user is None:
        p = subprocess.run([sys.executable, "-m", "portres", *args], capture_output=True, text=True)
        return {"rc": p.returncode, "out": p.stdout, "err": p.stderr}
    # Another uid may not be able to exec this interpreter, nor read its
    # modules (they may live under /root): import everything, fork, switch
    # uid and run the command's entry point.
    import locale  # noqa: F401
    import shutil  # noqa: F401
    import traceback

    import portres.__main__
    import portres._check
    import portres._persistent_linux  # noqa: F401 (imported before the uid switch)
    import portres._run  # noqa: F401 (the parser imports it; the checkout may be unreadable to USER)

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        import_all_portres()  # before the uid switch (lazy imports)
        os.setgroups([])
        os.setgid(user)
        os.setuid(user)
        os.dup2(w, 1)
        rc = 99
        try:
            rc = portres.__main__.main(list(args))
        except BaseException:  # the test sees the traceback in the output
            traceback.print_exc(file=sys.stdout)
        finally:
            sys.stdout.flush()
            os._exit(rc)
    os.close(w)
    data = b""
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        data += chunk
    _, status = os.waitpid(pid, 0)
    return {"rc": os.WEXITSTATUS(status), "out": data.decode(), "err": ""}


def cli_round_trip() -> Dict[str, Any]:
    sysctl("net.ipv4.ip_local_reserved_ports", "3000-3001")
    r: Dict[str, Any] = {}
    r["add"] = cli("add", "48000", "8", "--json")
    r["add_udp"] = cli("add", "48100", "2", "--protocol", "udp")
    r["overlap"] = cli("add", "48004", "8")
    r["list"] = cli("list", "--json")
    r["list_text"] = cli("list")
    r["lookup"] = cli("lookup", "48000", "8", "--json")
    r["lookup_missing"] = cli("lookup", "48000", "7")
    r["delete"] = cli("delete", "48000", "8", "--json")
    r["delete_again"] = cli("delete", "48000", "8", "--json")
    r["bad"] = cli("add", "70000", "1")
    r["kernel"] = sysctl("net.ipv4.ip_local_reserved_ports")
    return r


def cli_check() -> Dict[str, Any]:
    sysctl("net.ipv4.ip_local_port_range", "40000 40999")
    sysctl("net.ipv4.ip_local_reserved_ports", "9000")
    portres.create_persistent(49000, 2)
    res = portres.acquire(2, start=40500)
    listener = socket.socket()
    listener.bind(("0.0.0.0", 41000))
    listener.listen()
    out = {
        "free": cli("check", "12345", "--json"),
        "portres_persistent": cli("check", "49001", "--json"),
        "foreign_persistent": cli("check", "9000", "--json"),
        "runtime": cli("check", "40501", "--json"),
        "runtime_text": cli("check", "40501"),
        "listener": cli("check", "41000", "--json"),
        "privileged": cli("check", "80", "--json", user=65534),
        "ephemeral": cli("check", "40600", "--json"),
    }
    listener.close()
    res.close()
    return out
