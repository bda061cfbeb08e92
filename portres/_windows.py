"""The Windows backend: what the shared modules ask of the platform.

portres._linux has the same names; portres._platform picks one of the two
once.  This module holds data and platform calls only: the shared modules
turn its raw OSErrors into messages.  It imports on every platform (nothing
here runs at import), so its pieces can be driven with a model of the C
module anywhere; the C functions that exist only on Windows are reached
through `_portres` at call time.
"""

from __future__ import annotations

import errno as _errno
import ntpath
import sys
import warnings
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from . import _portres, _sockets
from . import _validate as check

if TYPE_CHECKING:
    import asyncio

# The names of the backend contract are listed in portres._platform.CONTRACT;
# portres._linux defines the same.

# ---------------------------------------------------------------- runtime

# Every call goes through the checked path: it runs the build gate, and an
# associate waits on its event (interruptible), never in a blocking IOCTL.
FAST_PATHS = False

# Windows 10 1809 (RS5, build 17763) is the first build on which the
# port-reservation IOCTLs are safe to use; MsQuic gates the feature on the
# same build ("Only RS5 and newer can use the port reservation feature
# safely").  portres works on older builds but warns, once.
WINDOWS_MIN_BUILD = 17763
_build_checked = False


def check_build() -> None:
    """Warn once if this Windows build predates WINDOWS_MIN_BUILD.  Called
    by a public function, so the warning points at its caller."""
    global _build_checked
    if _build_checked:
        return
    _build_checked = True
    real = getattr(_portres, "windows_build", None)
    if real is not None:
        build = int(real()[2])  # RtlGetVersion: the running system's build
    else:
        # A module without windows_build(): sys.getwindowsversion() reports
        # the manifest-emulated version (9200 without a Windows 10 manifest).
        build = sys.getwindowsversion().build  # type: ignore[attr-defined,unused-ignore]
    if build < WINDOWS_MIN_BUILD:
        warnings.warn(
            f"Windows build {build} predates Windows 10 1809 (build {WINDOWS_MIN_BUILD}); "
            "port reservations had a bug there and are not reliable",
            RuntimeWarning, stacklevel=3)


def associate(fd: int, token: int, sock: Any, timeout: Optional[float]) -> None:
    """The blocking associate: overlapped, then an interruptible wait on its
    event bounded by TIMEOUT."""
    _portres.associate_port_reservation(fd, token, True, sock).result(timeout)


def associate_persistent(exc: OSError, fd: int, token: int) -> None:
    """The kernel knows persistent tokens itself: EXC is the answer."""
    raise exc


def associate_persistent_nowait(exc: OSError, fd: int, token: int, sock: Any) -> _portres.Overlapped:
    """The kernel knows persistent tokens itself: EXC is the answer."""
    raise exc


def watch(loop: "asyncio.AbstractEventLoop", op: _portres.Overlapped,
          wake: Callable[[], None]) -> Callable[[], object]:
    """Call wake() on LOOP once OP's event is signalled; return the undo.

    No Python runs on a thread Python did not create (a thread-pool callback
    entering Python is unsupported with subinterpreters and unsafe during
    finalization).  A proactor loop (asyncio's default on Windows) waits for
    the event itself: IocpProactor.wait_for_handle registers a wait whose
    callback only posts a packet to the loop's completion port (CPython's
    Modules/overlapped.c, RegisterWaitWithQueue).  Any other loop polls the
    event from its own timers: every millisecond at first, backing off to
    every 50 ms."""
    wait_for_handle = getattr(getattr(loop, "_proactor", None), "wait_for_handle", None)
    if wait_for_handle is not None:
        fut: "asyncio.Future[Any]" = wait_for_handle(op.event)
        fut.add_done_callback(lambda f: None if f.cancelled() else wake())
        return fut.cancel
    timer: List[Any] = [None, 0.001]  # the pending TimerHandle, the next delay

    def poll() -> None:
        if op.done():
            timer[0] = None
            wake()
            return
        timer[0] = loop.call_later(timer[1], poll)
        timer[1] = min(timer[1] * 2, 0.05)

    timer[0] = loop.call_soon(poll)

    def undo() -> None:
        if timer[0] is not None:
            timer[0].cancel()
            timer[0] = None

    return undo


# Servers do not set SO_REUSEADDR here (on Windows it lets a bind share a
# port in use): check judges a port by the plain bind.
SERVER_REUSEADDR = False


# ------------------------------------------------------ runtime listing
#
# Windows has no documented call that enumerates runtime reservations
# (SIO_ACQUIRE_PORT_RESERVATION's block lives in the kernel with no query;
# netsh's excludedportrange lists persistent and system exclusions only).
# What can be shown truthfully is this process's own live blocks.

import weakref as _weakref  # noqa: E402  (issue 14's section, kept together)

_held: "_weakref.WeakSet[Any]" = _weakref.WeakSet()


def runtime_opened(res: Any) -> None:
    _held.add(res)


def runtime_closed(res: Any) -> None:
    _held.discard(res)


def runtime_reservations(protocol: Optional[str]) -> List[Dict[str, Any]]:
    import os

    pid = os.getpid()
    path = process_path(pid)
    name = ntpath.basename(path) if path else "?"
    return [{"pid": pid, "process": name, "protocol": r.protocol, "start": r.start,
             "count": r.count, "end": r.start + r.count - 1, "in_use": []}
            for r in sorted(_held, key=lambda r: (r.protocol, r.start))
            if not r.closed and (protocol is None or r.protocol == protocol)]


RUNTIME_SCOPE = ("this process only: Windows has no documented call that lists other "
                 "processes' runtime reservations")


# ----------------------------------------------------------------- errors
#
# The code an error is judged by, and the codes of the conditions the shared
# modules explain (by name; None: not a condition this platform reports).

WSAEACCES = 10013
WSAEINVAL = 10022
WSAENOTSOCK = 10038
WSAEOPNOTSUPP = 10045
WSAEADDRINUSE = 10048
WSAENOBUFS = 10055
ERROR_ACCESS_DENIED = 5


def error_code(exc: OSError) -> Optional[int]:
    winerror: Optional[int] = getattr(exc, "winerror", None)
    return winerror if winerror is not None else exc.errno


def condition_code(exc: OSError) -> Optional[int]:
    """The code CODES are compared with (the Win32/Winsock code only)."""
    winerror: Optional[int] = getattr(exc, "winerror", None)
    return winerror


CODES: Dict[str, Optional[int]] = {
    "EACCES": WSAEACCES,
    "EADDRINUSE": WSAEADDRINUSE,
    "EADDRNOTAVAIL": 10049,   # WSAEADDRNOTAVAIL
    "EAFNOSUPPORT": 10047,    # WSAEAFNOSUPPORT (WSASocketW of the block's socket)
    "EBADF": 10009,           # WSAEBADF: the binding's "reservation closed"
    "EISCONN": 10056,         # WSAEISCONN
    "EMFILE": 10024,          # WSAEMFILE
    "ENOENT": 1168,           # ERROR_NOT_FOUND
    "ENOTSOCK": WSAENOTSOCK,
    "EOPNOTSUPP": WSAEOPNOTSUPP,
    "EPERM": None,   # Linux's uid check of a bind from a block: no Windows counterpart
    "EPROTOTYPE": None,
}

EXCLUDED_HINT = (
    "the port may lie in a range excluded by Hyper-V, WinNAT or another program; "
    "see `netsh int ipv4 show excludedportrange protocol=tcp` or run `portres check PORT`"
)

# Hints appended to an error with no detail, by code.
HINTS: Dict[int, str] = {
    WSAEOPNOTSUPP: "not a TCP/UDP socket or provider lacks support (port reservations "
    "need the Microsoft TCP/IP provider, Windows Vista or later)",
    WSAEACCES: EXCLUDED_HINT,
    ERROR_ACCESS_DENIED: "persistent reservations need elevation: run as administrator "
    "(or a requireAdministrator manifest)",
    WSAENOTSOCK: "the handle is not a socket (or was closed)",
    WSAEINVAL: "invalid argument: a socket must be associated before it is bound, and "
    "the token must be a live reservation",
}


# Winerror -> the errno Linux reports for the same cause, which picks the
# same OSError subclass there (CPython maps ERROR_NOT_FOUND to EINVAL, a
# plain OSError, and ERROR_SHARING_VIOLATION to EACCES, a PermissionError).
_SAME_AS_LINUX: Dict[int, int] = {
    1168: _errno.ENOENT,       # ERROR_NOT_FOUND: FileNotFoundError
    32: _errno.EADDRINUSE,     # ERROR_SHARING_VIOLATION (overlap, in use): OSError
}


def rebuild(exc: OSError, message: str) -> OSError:
    """EXC with MESSAGE: the class Linux raises for the cause, winerror kept."""
    winerror: Optional[int] = getattr(exc, "winerror", None)
    code = _SAME_AS_LINUX.get(winerror or 0, exc.errno)
    new = OSError(code, message, exc.filename)
    if winerror is not None:
        new.winerror = winerror  # type: ignore[attr-defined,misc,unused-ignore]
    return new


ASSOCIATE_DENIED = ("associating with a persistent reservation's token needs an elevated "
                    "administrator: run as administrator (or a requireAdministrator manifest)")


def acquire_denied_detail(start: int, count: int) -> Optional[str]:
    """Why acquiring was refused (WSAEACCES): the hint says it."""
    return None


# ------------------------------------------------------------- persistent
#
# Create/Lookup/Delete/GetPersistent{Tcp,Udp}PortReservation (iphlpapi).
# Their raw errors are explained by portres._persistent with
# persistent_explanation().

# Win32 errors of the persistent functions, in the user's terms.
_PERSISTENT_DETAILS = {
    5: "persistent reservations need elevation: run as administrator "
       "(or give the program a requireAdministrator manifest)",          # ERROR_ACCESS_DENIED
    32: "the block overlaps an existing persistent reservation or ports in use",  # ERROR_SHARING_VIOLATION
    1168: "no persistent reservation has exactly this start and count",   # ERROR_NOT_FOUND
    87: "invalid parameter: start must be 1..65535 and the block must not pass 65535",  # ERROR_INVALID_PARAMETER
}


def create_persistent(protocol: str, start: int, count: int, boot: bool) -> int:
    """BOOT is moot: Windows persistent reservations always survive reboots."""
    return int(_portres.create_persistent_port_reservation(  # type: ignore[attr-defined,unused-ignore]
        check.PROTOCOLS[protocol], start, count))


def lookup_persistent(protocol: str, start: int, count: int) -> int:
    return int(_portres.lookup_persistent_port_reservation(  # type: ignore[attr-defined,unused-ignore]
        check.PROTOCOLS[protocol], start, count))


def delete_persistent(protocol: str, start: int, count: int) -> None:
    _portres.delete_persistent_port_reservation(  # type: ignore[attr-defined,unused-ignore]
        check.PROTOCOLS[protocol], start, count)


def list_persistent(protocol: str) -> List[Tuple[int, int]]:
    rows = _portres.list_persistent_port_reservations(  # type: ignore[attr-defined,unused-ignore]
        check.PROTOCOLS[protocol])
    return [(start, count) for start, count in rows]


def persistent_entries(protocol: str) -> List[Dict[str, Any]]:
    """The persistent blocks of PROTOCOL (the API gives no token or owner)."""
    return [{"protocol": protocol, "start": s, "count": c} for s, c in list_persistent(protocol)]


def persistent_explanation(exc: OSError, call: str) -> Optional[Tuple[str, Optional[str]]]:
    """(what, detail) to explain the raw error EXC of CALL with."""
    return call, _PERSISTENT_DETAILS.get(getattr(exc, "winerror", None) or 0)


# ------------------------------------------------------------------ check
#
# _portres.port_sockets (GetExtendedTcpTable / GetExtendedUdpTable) gives the
# Linux tuple shape (family, state, port, owner, 0) with the PID as owner and
# Linux's TCP state numbers (see portres._sockets).

# "The default dynamic port range for TCP/IP has changed since Windows Vista
# and in Windows Server 2008" (Microsoft KB 929851): 49152-65535.
DYNAMIC_DEFAULT = (49152, 65535)
_SYSTEM_PID = 4


def check_reasons(port: int, protocol: str, binds: Dict[str, str], add: Any,
                  persistent: List[Dict[str, Any]], persistent_error: Optional[OSError]) -> None:
    """Add what stands in the way of binding PORT (and what to know about
    it): persistent and excluded ranges, the stack's sockets, the range.
    PERSISTENT: persistent_entries(protocol); PERSISTENT_ERROR: why they
    could not be listed, or None."""
    denied = any("EACCES" in v or str(WSAEACCES) in v for v in binds.values())
    in_use = any("EADDRINUSE" in v or str(WSAEADDRINUSE) in v for v in binds.values())
    proto = protocol.upper()
    netsh_excluded = f"netsh int ipv4 show excludedportrange protocol={protocol}"
    if persistent_error is not None:
        add("info", f"persistent reservations could not be listed "
                    f"({persistent_error.strerror or persistent_error}); "
                    f"`{netsh_excluded}` shows them")
    holding = [(e["start"], e["count"]) for e in persistent
               if e["start"] <= port < e["start"] + e["count"]]
    for start, count in holding:
        last = start + count - 1
        if denied:
            message = (f"WSAEACCES (10013): the port is inside the persistent {proto} reservation "
                       f"{start}-{last}, an administered port exclusion (marked * by "
                       f"`{netsh_excluded}`); only a socket associated with its token binds "
                       f"there (portres.lookup_persistent({start}, {count}) then "
                       f"portres.associate); `portres delete {start} {count}` as administrator "
                       f"removes it")
        else:
            message = (f"inside the persistent {proto} reservation {start}-{last} (an "
                       f"administered port exclusion, marked * by `{netsh_excluded}`)")
        add("persistent", message, start=start, count=count)
    if denied and not holding:
        add("excluded", f"WSAEACCES (10013): the port is most likely inside an excluded range that "
                        f"no documented API lists: one that Hyper-V, WSL 2, Docker or WinNAT "
                        f"reserved at run time, or another program's runtime port reservation; "
                        f"`{netsh_excluded}` shows every range (administered ones marked *); "
                        f"`net stop winnat` then `net start winnat` lets WinNAT choose new ones")
    sockets, failure = port_sockets(port, protocol)
    if failure:
        add("info", f"the {proto} endpoint table could not be read ({failure})")
    for s in sockets:
        who = _who(s)
        state, family = s["state"], s["family"]
        many = f" ({s['count']} of them)" if s["count"] > 1 else ""
        if state == "LISTEN":
            add("listener", f"in use by a listening {family} socket of {who}", **s)
        elif state == "BOUND":
            add("bound", f"bound by an {family} UDP socket of {who}{many}", **s)
        elif state == "TIME_WAIT":
            add("time_wait", f"a recent {family} connection on this port is in TIME_WAIT{many}: "
                             f"a bind may fail with WSAEADDRINUSE until it expires", **s)
        else:
            add("connection", f"used by an {family} connection in state {state} of "
                              f"{who}{many}", **s)
    if in_use and not sockets and not failure and protocol == "tcp":
        add("info", "no listener or connection on this port in GetExtendedTcpTable: a TCP socket "
                    "bound without listening is not in that table (`netstat -anoq` lists it as "
                    "BOUND, with its PID)")
    lo, hi = ephemeral_range()
    where = "inside" if lo <= port <= hi else "outside"
    consequence = ("the stack may pick it for outgoing connections unless it is reserved, and "
                   "the ranges Hyper-V and WinNAT exclude are usually taken from it"
                   if where == "inside" else
                   "the stack does not pick it automatically unless the range was changed")
    add("info", f"{where} Windows's default dynamic (ephemeral) port range {lo}-{hi}: "
                f"{consequence}; no documented API reads the configured range: `netsh int ipv4 "
                f"show dynamicport {protocol}` shows it")
    if port < 1024:
        add("info", "ports below 1024 need no privilege on Windows, but services often hold them")


def ephemeral_range() -> Tuple[int, int]:
    """The default dynamic range: no documented API reads the configured one."""
    return DYNAMIC_DEFAULT


def _state(state: int, protocol: str) -> str:
    if protocol == "udp":
        return "BOUND"
    if state >= _sockets.MIB_STATE_OTHER:
        return f"MIB_TCP_STATE {state - _sockets.MIB_STATE_OTHER}"
    return _sockets.TCP_STATE_NAMES.get(state, str(state))


def process_path(pid: int) -> Optional[str]:
    """The executable of PID, or None when Windows will not say."""
    if not pid:
        return None
    name = getattr(_portres, "process_name", None)
    if name is None:
        return None
    try:
        path = name(pid)
    except (OSError, ValueError, TypeError):
        return None
    return path if isinstance(path, str) and path else None


def port_sockets(port: int, protocol: str) -> Tuple[List[Dict[str, Any]], Optional[str]]:
    """The stack's sockets on PORT, one entry per (family, state, PID) with a
    count, and the error text if the table could not be read."""
    try:
        rows = _portres.port_sockets(check.PROTOCOLS[protocol], port, port)
    except OSError as exc:
        return [], f"{exc.filename or 'port_sockets'}: {exc.strerror or exc}"
    grouped: Dict[Tuple[str, str, int], Dict[str, Any]] = {}
    paths: Dict[int, Optional[str]] = {}
    for family, state, _port, pid, _id in rows:
        fam = _sockets.family_name(family)
        key = (fam, _state(state, protocol), pid)
        if key in grouped:
            grouped[key]["count"] += 1
            continue
        if pid not in paths:
            paths[pid] = process_path(pid)
        path = paths[pid]
        grouped[key] = {"family": fam, "state": key[1], "pid": pid or None,
                        "command": ntpath.basename(path) if path else None, "path": path,
                        "count": 1}
    return list(grouped.values()), None


def _who(s: Dict[str, Any]) -> str:
    pid = s.get("pid")
    if not pid:
        return "a process the table does not name (PID 0: unavailable)"
    if s.get("command"):
        return f"{s['command']} (pid {pid}, {s['path']})"
    if pid == _SYSTEM_PID:
        return ("the System process (pid 4: kernel-mode users such as HTTP.sys; `netsh http "
                "show servicestate` lists HTTP.sys's)")
    return f"pid {pid} (its image name is not readable: another user's or a protected process)"


# ---------------------------------------------------------------- outbound, run, trio

EPHEMERAL_RANGE_NAME = "Windows's default dynamic port range {lo}-{hi}"
EPHEMERAL_RANGE_SETTING = "netsh int ipv4 set dynamicport"

RUN_UNSUPPORTED: Optional[str] = (
    "portres run: not available on Windows: socket activation (LISTEN_FDS) has no "
    "Windows counterpart, and a runtime reservation cannot be used by another process; "
    "bind from the reservation in the server process itself (see docs/handoff.md)")


async def wait_trio_event(event: int) -> None:
    """Wait in a trio task until the operation's event handle is signalled."""
    import trio  # type: ignore[import-untyped,unused-ignore]

    # trio defines it on Windows only; mypy on Linux sees a trio without it
    await trio.lowlevel.WaitForSingleObject(event)  # type: ignore[attr-defined,unused-ignore]
