"""The Linux backend: what the shared modules ask of the platform.

portres._windows has the same names.  portres._platform picks one of the two
once; the shared modules (_core, _persistent, _check, _errors, _overlapped)
call it and never test the platform themselves.  This module holds data and
platform calls only: the shared modules turn its raw OSErrors into messages.

Persistent reservations live in the store (portres._persistent_linux); the
sysctls come from portres._sysctl.  The store is imported with the package,
as before: a program that drops privileges after `import portres` may no
longer be able to import it (making it lazy is issue 14's, with that case
in mind).
"""

from __future__ import annotations

import errno as _errno
import os
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from . import _persistent_linux, _portres, _sockets, _sysctl
from . import _validate as check

if TYPE_CHECKING:
    import asyncio

# The names of the backend contract are listed in portres._platform.CONTRACT;
# portres._windows defines the same.

# ---------------------------------------------------------------- runtime

# The C calls complete at once and need no gate: the exact-type fast paths
# of _core may call the C module directly.
FAST_PATHS = True


def check_build() -> None:
    """Every supported kernel has what portres needs: nothing to check."""


def associate(fd: int, token: int, sock: Any, timeout: Optional[float]) -> None:
    """The blocking associate.  It completes at once: no event, no wait."""
    _portres.associate_port_reservation(fd, token)


def knows_persistent(exc: OSError, token: int) -> bool:
    """A token the C registry does not know may be a persistent
    reservation's, which the store keeps.  If so, tell the C layer and
    return True (the caller retries)."""
    if exc.errno != _errno.ENOENT:
        return False
    found = _persistent_linux.by_token(token)
    if found is None:
        return False
    protocol, start, count = found
    _portres.register_persistent_token(token, check.PROTOCOLS[protocol], start, count)
    return True


def watch(loop: "asyncio.AbstractEventLoop", op: _portres.Overlapped,
          wake: Callable[[], None]) -> Callable[[], object]:
    """Call wake() on LOOP once OP's eventfd is readable; return the undo."""
    fd = op.event
    loop.add_reader(fd, wake)
    return lambda: loop.remove_reader(fd)


# ----------------------------------------------------------------- errors
#
# The code an error is judged by, and the codes of the conditions the shared
# modules explain (by name; None: not a condition this platform reports).

def error_code(exc: OSError) -> Optional[int]:
    return exc.errno


def condition_code(exc: OSError) -> Optional[int]:
    """The code CODES are compared with."""
    return exc.errno


CODES: Dict[str, Optional[int]] = {
    "EACCES": _errno.EACCES,
    "EADDRINUSE": _errno.EADDRINUSE,
    "EADDRNOTAVAIL": _errno.EADDRNOTAVAIL,
    "EAFNOSUPPORT": _errno.EAFNOSUPPORT,
    "EBADF": _errno.EBADF,
    "EISCONN": _errno.EISCONN,
    "EMFILE": _errno.EMFILE,
    "ENOENT": _errno.ENOENT,
    "ENOTSOCK": _errno.ENOTSOCK,
    "EOPNOTSUPP": _errno.EOPNOTSUPP,
    "EPROTOTYPE": _errno.EPROTOTYPE,
}

# Hints appended to an error with no detail, by code: Linux's messages need none.
HINTS: Dict[int, str] = {}


def rebuild(exc: OSError, message: str) -> OSError:
    """EXC with MESSAGE (errno, and so the class, and filename kept)."""
    return OSError(exc.errno, message, exc.filename)


ASSOCIATE_DENIED: Optional[str] = None  # Linux's associate never needs privilege


def acquire_denied_detail(start: int, count: int) -> Optional[str]:
    """Why acquiring START..START+COUNT-1 was refused (EACCES)."""
    return (f"the block {start}-{start + count - 1} needs privileges "
            "(ports below 1024 need CAP_NET_BIND_SERVICE)")


# ------------------------------------------------------------- persistent
#
# The store raises OSErrors with their final messages; the Windows backend's
# raw ones are explained by portres._persistent (persistent_explanation).

def create_persistent(protocol: str, start: int, count: int, boot: bool) -> int:
    return _persistent_linux.create(protocol, start, count, boot)


def lookup_persistent(protocol: str, start: int, count: int) -> int:
    return _persistent_linux.lookup(protocol, start, count)


def delete_persistent(protocol: str, start: int, count: int) -> None:
    token = _persistent_linux.delete(protocol, start, count)
    _portres.unregister_persistent_token(token)  # sockets of this process forget it too


def list_persistent(protocol: str) -> List[Tuple[int, int]]:
    return _persistent_linux.blocks(protocol)


def persistent_entries(protocol: str) -> List[Dict[str, Any]]:
    """The persistent blocks that apply to PROTOCOL: portres's (with token
    and boot) and the kernel's other entries (protocol "any")."""
    return [e for e in _persistent_linux.entries() if e["protocol"] in (protocol, "any")]


def persistent_explanation(exc: OSError, call: str) -> Optional[Tuple[str, Optional[str]]]:
    """(what, detail) to explain EXC with, or None: the store's message is final."""
    return None


# ------------------------------------------------------------------ check

def check_reasons(port: int, protocol: str, binds: Dict[str, str], add: Any,
                  persistent: List[Dict[str, Any]], persistent_error: Optional[OSError]) -> None:
    """Add what stands in the way of binding PORT (and what to know about
    it): privilege, persistent blocks, the kernel's sockets, the range.
    PERSISTENT: persistent_entries(protocol), [] if they could not be read."""
    unpriv = _sysctl.read_int(_sysctl.UNPRIVILEGED_PORT_START, 1024)
    if port < unpriv and os.geteuid() != 0:
        add("privileged", f"ports below {unpriv} are privileged: binding needs root or "
                          f"CAP_NET_BIND_SERVICE (net.ipv4.ip_unprivileged_port_start = {unpriv})")
    for e in persistent:
        if e["start"] <= port < e["start"] + e["count"]:
            last = e["start"] + e["count"] - 1
            if e["source"] == "portres":
                add("persistent", f"inside the persistent {e['protocol'].upper()} reservation "
                                  f"{e['start']}-{last} made by portres (token {e['token']:#x}); "
                                  f"the kernel's automatic port choice skips it, an explicit bind "
                                  f"is allowed", start=e["start"], count=e["count"], token=e["token"])
            else:
                add("persistent", f"inside {e['start']}-{last} of net.ipv4.ip_local_reserved_ports "
                                  f"(not made by portres); the kernel's automatic port choice "
                                  f"skips it, an explicit bind is allowed",
                    start=e["start"], count=e["count"])
    sockets, _failure = port_sockets(port, protocol)  # no failure: /proc/net is the fallback
    for s in sockets:
        who = _who(s)
        state = s["state"]
        if state == "LISTEN":
            add("listener", f"in use by a listening {s['family']} socket of {who}", **s)
        elif state in ("CLOSE", "BOUND"):
            add("bound", f"held by a bound {s['family']} socket of {who} that is not "
                         f"{'listening' if protocol == 'tcp' else 'connected'}: a portres runtime "
                         f"reservation holds its ports this way (or a socket bound before use)", **s)
        elif state == "TIME_WAIT":
            add("time_wait", f"a recent {s['family']} connection is in TIME_WAIT: a bind without "
                             f"SO_REUSEADDR fails for up to 60 seconds", **s)
        else:
            add("connection", f"used by a {state} {s['family']} connection of {who}", **s)
    lo, hi = ephemeral_range()
    if not lo <= port <= hi:
        add("info", f"outside the ephemeral range {lo}-{hi}: the kernel never picks it "
                    f"automatically; an explicit bind may")
    else:
        add("info", f"inside the ephemeral range {lo}-{hi}: the kernel may pick it for "
                    f"outgoing connections unless reserved")


def ephemeral_range() -> Tuple[int, int]:
    """net.ipv4.ip_local_port_range (the kernel's default if unreadable)."""
    lo, hi = (_sysctl.read_ints(_sysctl.PORT_RANGE) + [32768, 60999])[:2]
    return lo, hi


def _state(state: int, protocol: str) -> str:
    if protocol == "tcp":
        return _sockets.TCP_STATE_NAMES.get(state, str(state))
    return "CONNECTED" if state == 1 else "BOUND"


def port_sockets(port: int, protocol: str) -> Tuple[List[Dict[str, Any]], Optional[str]]:
    """The kernel's sockets on PORT, with their owners, and None (the error
    text if they could not be listed: never, as /proc/net is the fallback).
    NETLINK_SOCK_DIAG sees bound but inactive TCP sockets too (a
    reservation's placeholders); /proc/net does not."""
    found: List[Dict[str, Any]] = []
    try:
        for family, state, _port, uid, inode in _portres.port_sockets(
                check.PROTOCOLS[protocol], port, port):
            found.append({"family": _sockets.family_name(family), "state": _state(state, protocol),
                          "uid": uid, "inode": inode})
    except OSError:
        found = _proc_net_sockets(port, protocol)
    if found:
        owners = socket_owners()
        for s in found:
            pid, comm = owners.get(s["inode"], (None, None))
            s["pid"], s["command"] = pid, comm
    return found, None


def _proc_net_sockets(port: int, protocol: str) -> List[Dict[str, Any]]:
    found = []
    for fam in ("", "6"):
        try:
            with open(f"/proc/net/{protocol}{fam}") as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, uid, inode = fields[1], fields[3], fields[7], fields[9]
            if int(local.rsplit(":", 1)[1], 16) != port:
                continue
            number = int(state, 16)
            found.append({"family": "IPv6" if fam else "IPv4",
                          "state": _sockets.TCP_STATE_NAMES.get(number, state) if protocol == "tcp"
                          else _state(number, protocol),
                          "uid": int(uid), "inode": int(inode)})
    return found


def socket_owners() -> Dict[int, Tuple[int, str]]:
    """inode -> (pid, command) for the sockets we may look at."""
    owners: Dict[int, Tuple[int, str]] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read().strip()
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    owners.setdefault(int(link[8:-1]), (int(pid), comm))
        except OSError:
            continue
    return owners


def _who(s: Dict[str, Any]) -> str:
    who = f"uid {s['uid']}"
    if s.get("pid"):
        who = f"{s['command']} (pid {s['pid']}, uid {s['uid']})"
    return who


# ---------------------------------------------------------------- outbound, run, trio

# How the TIME_WAIT note names the ephemeral range and the setting that widens it.
EPHEMERAL_RANGE_NAME = "the range {lo}-{hi}"
EPHEMERAL_RANGE_SETTING = "net.ipv4.ip_local_port_range"

# `portres run` works here (socket activation, LISTEN_FDS).
RUN_UNSUPPORTED: Optional[str] = None


async def wait_trio_event(event: int) -> None:
    """Wait in a trio task until the operation's eventfd is readable (completion)."""
    import trio  # type: ignore[import-untyped,unused-ignore]

    await trio.lowlevel.wait_readable(event)
