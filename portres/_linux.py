"""The Linux backend: what the shared modules ask of the platform.

portres._windows has the same names.  portres._platform picks one of the two
once; the shared modules (_core, _persistent, _check, _errors, _overlapped)
call it and never test the platform themselves.  This module holds data and
platform calls only: the shared modules turn its raw OSErrors into messages.

Persistent reservations live in the store (portres._persistent_linux); the
sysctls come from portres._sysctl.  The store (and what it imports: json,
tempfile, secrets) is imported when first used, not with the package, to
keep `import portres` cheap; a program that drops privileges after
`import portres` still imports it from the same files.
"""

from __future__ import annotations

import errno as _errno
import os
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from . import _portres, _sockets, _sysctl
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


def _persistent_block(exc: OSError, token: int) -> Tuple[int, int, int]:
    """EXC came from the C layer's runtime registry.  A token it does not
    know (ENOENT) may be a persistent reservation's: the store resolves it,
    against the kernel's list, at every use (the C layer keeps no persistent
    tokens).  The block as (protocol number, start, count); raises EXC if
    TOKEN is no live persistent reservation's."""
    if exc.errno != _errno.ENOENT:
        raise exc
    from . import _persistent_linux

    found = _persistent_linux.by_token(token)
    if found is None:
        raise exc
    protocol, start, count = found
    return check.PROTOCOLS[protocol], start, count


def associate_persistent(exc: OSError, fd: int, token: int) -> None:
    """The blocking associate of a token the runtime registry refused with
    EXC: hand the C layer the persistent block it names, or raise EXC."""
    protocol, start, count = _persistent_block(exc, token)
    _portres.associate_range(fd, protocol, start, count)


def associate_persistent_nowait(exc: OSError, fd: int, token: int, sock: Any) -> _portres.Overlapped:
    """associate_persistent, overlapped (it completes at once)."""
    protocol, start, count = _persistent_block(exc, token)
    return _portres.associate_range(fd, protocol, start, count, True, sock)


def watch(loop: "asyncio.AbstractEventLoop", op: _portres.Overlapped,
          wake: Callable[[], None]) -> Callable[[], object]:
    """Call wake() on LOOP once OP's eventfd is readable; return the undo."""
    fd = op.event
    loop.add_reader(fd, wake)
    return lambda: loop.remove_reader(fd)


# Servers set SO_REUSEADDR before bind (asyncio, http.server, socketserver):
# check judges a TCP port by that bind, and says which plain binds fail.
SERVER_REUSEADDR = True


# ------------------------------------------------------ runtime listing
#
# Each process marks its blocks in a memfd the kernel ties to its lifetime;
# the C registry writes it (src/linux/marker.c), so nothing is done here at
# acquire or close.  Listing checks every marked block against the sockets
# the kernel holds (portres._runtime_linux).


def runtime_opened(res: Any) -> None:
    pass  # the C registry marks the block (src/linux/marker.c)


def runtime_closed(res: Any) -> None:
    pass  # the C registry clears its line


def runtime_reservations(protocol: Optional[str]) -> List[Dict[str, Any]]:
    from . import _runtime_linux

    return _runtime_linux.runtime_reservations(protocol)


RUNTIME_SCOPE = ("every process whose /proc/<pid>/fd this user may read (as root: all); "
                 "each block checked against the sockets the kernel holds")


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
    "EPERM": _errno.EPERM,
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


def _store(what: str, needs_root: bool) -> Any:
    """portres._persistent_linux, imported on first use.  A process that
    dropped root after `import portres` may no longer read the modules it
    imports (json, secrets, tempfile): creating or deleting needs root
    anyway, so say that, as the store itself would."""
    try:
        from . import _persistent_linux
    except ImportError as exc:
        if needs_root and os.geteuid() != 0:
            raise PermissionError(_errno.EACCES, f"{what} failed: persistent reservations need "
                                  f"root (CAP_NET_ADMIN over this network namespace); this "
                                  f"process runs as uid {os.geteuid()}",
                                  "import portres._persistent_linux") from exc
        raise ImportError(f"{what}: the persistent store portres._persistent_linux could not be "
                          f"imported ({exc}); a program that drops privileges should import it "
                          f"before") from exc
    return _persistent_linux
#
# The store raises OSErrors with their final messages; the Windows backend's
# raw ones are explained by portres._persistent (persistent_explanation).

def create_persistent(protocol: str, start: int, count: int, boot: bool) -> int:
    _persistent_linux = _store("creating the persistent reservation", True)
    token: int = _persistent_linux.create(protocol, start, count, boot)
    return token


def lookup_persistent(protocol: str, start: int, count: int) -> int:
    from . import _persistent_linux

    return _persistent_linux.lookup(protocol, start, count)


def delete_persistent(protocol: str, start: int, count: int) -> None:
    _persistent_linux = _store("deleting the persistent reservation", True)
    _persistent_linux.delete(protocol, start, count)   # every process's next use sees it gone


def list_persistent(protocol: str) -> List[Tuple[int, int]]:
    from . import _persistent_linux

    return _persistent_linux.blocks(protocol)


def persistent_entries(protocol: str) -> List[Dict[str, Any]]:
    """The persistent blocks that apply to PROTOCOL: portres's (with token
    and boot) and the kernel's other entries (protocol "any")."""
    from . import _persistent_linux

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
    from . import _runtime_linux

    holders = list(_runtime_linux.holders(protocol, port))
    for r in holders:
        handed = port in r["in_use"]
        add("reservation", f"inside the runtime reservation {r['start']}-{r['end']} ({protocol.upper()}) "
                           f"held by {r['process']} (pid {r['pid']}); port {port} "
                           + ("has a socket bound from the block" if handed else
                              "is not handed out: only that process can bind it"),
            start=r["start"], count=r["count"], pid=r["pid"], process=r["process"],
            handed_out=handed)
    holder_pids = {r["pid"] for r in holders}
    sockets, _failure = port_sockets(port, protocol)  # no failure: /proc/net is the fallback
    for s in sockets:
        who = _who(s)
        state = s["state"]
        where = _endpoint(s)
        if state == "LISTEN":
            add("listener", f"{where}: listening {s['family']} socket of {who}", **s)
        elif state in ("CLOSE", "BOUND") and s.get("pid") in holder_pids:
            what = ("the placeholder of that reservation, or a socket bound from it"
                    if any(port in r["in_use"] for r in holders) else
                    "the placeholder of that reservation")
            add("placeholder", f"{where}: {what} ({who}), bound and not "
                               f"{'listening' if protocol == 'tcp' else 'connected'}", **s)
        elif state in ("CLOSE", "BOUND"):
            add("bound", f"{where}: bound {s['family']} socket of {who}, not "
                         f"{'listening' if protocol == 'tcp' else 'connected'}", **s)
        elif state == "TIME_WAIT":
            add("time_wait", f"{where}: a closed {s['family']} connection in TIME_WAIT (no process "
                             f"owns it); a bind without SO_REUSEADDR fails (EADDRINUSE) until it "
                             f"ends, up to 60 s; servers that set SO_REUSEADDR bind it", **s)
        else:
            add("connection", f"{where}: {state} {s['family']} connection of {who}", **s)
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
    """The kernel's sockets on PORT, with their addresses and owners (pid,
    process, fd), and None (the error text if they could not be listed:
    never, as /proc/net is the fallback).  NETLINK_SOCK_DIAG sees bound but
    inactive TCP sockets too (a reservation's placeholders); /proc/net does
    not."""
    import socket as _socket

    found: List[Dict[str, Any]] = []
    try:
        for family, state, lport, uid, inode, local, remote, rport in _portres.port_sockets(
                check.PROTOCOLS[protocol], port, port, True):
            found.append({"family": _sockets.family_name(family), "state": _state(state, protocol),
                          "uid": uid, "inode": inode,
                          "local": _socket.inet_ntop(family, local), "local_port": lport,
                          "remote": _socket.inet_ntop(family, remote), "remote_port": rport})
    except OSError:
        found = _proc_net_sockets(port, protocol)
    if found:
        from . import _runtime_linux

        owners = _runtime_linux.inode_owners()
        names: Dict[int, str] = {}
        for s in found:
            pid, fd = owners.get(s["inode"], (None, None)) if s["inode"] else (None, None)
            s["pid"], s["fd"] = pid, fd
            if pid is not None and pid not in names:
                names[pid] = _runtime_linux._process_name(pid)
            s["command"] = names.get(pid) if pid is not None else None
            s["process"] = s["command"]
    return found, None


def _endpoint(s: Dict[str, Any]) -> str:
    def fmt(addr: Optional[str], port: Any) -> str:
        addr = addr or "?"
        return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"

    text = fmt(s.get("local"), s.get("local_port", "?"))
    if s.get("remote_port"):
        text += " -> " + fmt(s.get("remote"), s["remote_port"])
    return text


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


def _who(s: Dict[str, Any]) -> str:
    if s.get("pid"):
        return f"{s['command']} (pid {s['pid']}, fd {s['fd']}, uid {s['uid']})"
    return f"uid {s['uid']} (no process of it visible to this user)"


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
