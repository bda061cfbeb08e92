"""`portres check PORT`: could this program bind the port now, and if not,
why?  Every answer comes from the system: a real bind attempt, the kernel's
socket tables, its reserved-port list, portres's persistent entries."""

from __future__ import annotations

import errno
import ntpath
import os
import socket
import sys
from typing import Any, Dict, List, Optional, Tuple

from . import _persistent, _portres
from . import _validate as check

WINDOWS = sys.platform == "win32"

# /proc/net/tcp state codes (include/net/tcp_states.h)
_TCP_STATES = {
    "01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1",
    "05": "FIN_WAIT2", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT",
    "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING",
}


def _try_bind(port: int, protocol: str) -> Dict[str, str]:
    """Bind the port now, as a server would, in each family."""
    out = {}
    sock_type = check.SOCK_TYPES[protocol]
    forms: List[Tuple[str, int, str, Optional[int]]] = [("IPv4", socket.AF_INET, "0.0.0.0", None)]
    if socket.has_ipv6:
        forms.append(("IPv6", socket.AF_INET6, "::", 1))
    for name, family, host, v6only in forms:
        try:
            s = socket.socket(family, sock_type)
        except OSError as exc:
            out[name] = f"unavailable ({exc.strerror})"
            continue
        try:
            if v6only is not None:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
            s.bind((host, port))
            out[name] = "ok"
        except OSError as exc:
            code = getattr(exc, "winerror", None) or exc.errno
            out[name] = f"{errno.errorcode.get(exc.errno or 0, code)} ({exc.strerror})"
        finally:
            s.close()
    return out


def _read_int(path: str, default: int) -> int:
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return default


def _socket_owners() -> Dict[int, Tuple[int, str]]:
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


_STATE_NAMES = {int(k, 16): v for k, v in _TCP_STATES.items()}


def _linux_sockets(port: int, protocol: str) -> List[Dict[str, Any]]:
    """The kernel's sockets on PORT.  NETLINK_SOCK_DIAG sees bound but
    inactive TCP sockets too (a reservation's placeholders); /proc/net,
    the fallback, does not."""
    found: List[Dict[str, Any]] = []
    try:
        for family, state, _port, uid, inode in _portres.port_sockets(
                check.PROTOCOLS[protocol], port, port):
            found.append({"family": "IPv6" if family == socket.AF_INET6 else "IPv4",
                          "state": _STATE_NAMES.get(state, str(state)) if protocol == "tcp"
                          else ("CONNECTED" if state == 1 else "BOUND"),
                          "uid": uid, "inode": inode})
    except OSError:
        found = _proc_net_sockets(port, protocol)
    if found:
        owners = _socket_owners()
        for s in found:
            pid, comm = owners.get(s["inode"], (None, None))
            s["pid"], s["command"] = pid, comm
    return found


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
            found.append({"family": "IPv6" if fam else "IPv4",
                          "state": _TCP_STATES.get(state, state) if protocol == "tcp"
                          else ("CONNECTED" if state == "01" else "BOUND"),
                          "uid": int(uid), "inode": int(inode)})
    return found


def _who(s: Dict[str, Any]) -> str:
    who = f"uid {s['uid']}"
    if s.get("pid"):
        who = f"{s['command']} (pid {s['pid']}, uid {s['uid']})"
    return who


def explain(port: int, protocol: str = "tcp") -> Dict[str, Any]:
    port = check.port(port)
    protocol = check.protocol(protocol)
    binds = _try_bind(port, protocol)
    can_bind = all(v == "ok" for v in binds.values())
    reasons: List[Dict[str, Any]] = []

    def add(kind: str, message: str, **extra: Any) -> None:
        reasons.append(dict(kind=kind, message=message, **extra))

    if WINDOWS:
        _explain_windows(port, protocol, binds, add)
    else:
        _explain_linux(port, protocol, add)
    if not can_bind and not any(r["kind"] != "info" for r in reasons):
        add("unknown", "the bind failed for a reason portres could not identify; "
                       "see the error above")
    verdict = (f"{protocol.upper()} port {port} can be bound by this program now"
               if can_bind else
               f"{protocol.upper()} port {port} cannot be bound by this program now")
    return {"port": port, "protocol": protocol, "can_bind": can_bind, "bind": binds,
            "verdict": verdict, "reasons": reasons}


def _explain_linux(port: int, protocol: str, add: Any) -> None:
    unpriv = _read_int("/proc/sys/net/ipv4/ip_unprivileged_port_start", 1024)
    if port < unpriv and os.geteuid() != 0:
        add("privileged", f"ports below {unpriv} are privileged: binding needs root or "
                          f"CAP_NET_BIND_SERVICE (net.ipv4.ip_unprivileged_port_start = {unpriv})")
    for e in _persistent_entries():
        if e["start"] <= port < e["start"] + e["count"] and e["protocol"] in (protocol, "any"):
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
    for s in _linux_sockets(port, protocol):
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
    lo, hi = (_read_ints("/proc/sys/net/ipv4/ip_local_port_range") + [32768, 60999])[:2]
    if not lo <= port <= hi:
        add("info", f"outside the ephemeral range {lo}-{hi}: the kernel never picks it "
                    f"automatically; an explicit bind may")
    else:
        add("info", f"inside the ephemeral range {lo}-{hi}: the kernel may pick it for "
                    f"outgoing connections unless reserved")


def _read_ints(path: str) -> List[int]:
    try:
        with open(path) as f:
            return [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        return []


def _persistent_entries() -> List[Dict[str, Any]]:
    try:
        from . import _persistent_linux

        return _persistent_linux.entries()
    except OSError:
        return []


def _explain_windows(port: int, protocol: str, binds: Dict[str, str], add: Any) -> None:
    denied = any("EACCES" in v or str(_WSAEACCES) in v for v in binds.values())
    in_use = any("EADDRINUSE" in v or str(_WSAEADDRINUSE) in v for v in binds.values())
    proto = protocol.upper()
    netsh_excluded = f"netsh int ipv4 show excludedportrange protocol={protocol}"
    try:
        blocks = _persistent.list_persistent(protocol=protocol)
    except OSError as exc:
        blocks = []
        add("info", f"persistent reservations could not be listed ({exc.strerror or exc}); "
                    f"`{netsh_excluded}` shows them")
    holding = [(start, count) for start, count in blocks if start <= port < start + count]
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
    sockets, failure = _windows_sockets(port, protocol)
    if failure:
        add("info", f"the {proto} endpoint table could not be read ({failure})")
    for s in sockets:
        who = _windows_who(s)
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
    lo, hi = _WINDOWS_DYNAMIC_DEFAULT
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


# ---------------------------------------------------------------- Windows
#
# _portres.port_sockets (GetExtendedTcpTable / GetExtendedUdpTable) gives the
# Linux tuple shape (family, state, port, owner, 0) with the PID as owner and
# Linux's TCP state numbers (src/portres.h has the mapping from MIB_TCP_STATE);
# a MIB_TCP_STATE with no Linux counterpart comes as 1000 + its value.

_WSAEACCES = 10013
_WSAEADDRINUSE = 10048
_WINDOWS_STATE_NAMES = {
    1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
    6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING",
}
_WINDOWS_MIB_STATE_OTHER = 1000
# "The default dynamic port range for TCP/IP has changed since Windows Vista
# and in Windows Server 2008" (Microsoft KB 929851): 49152-65535.
_WINDOWS_DYNAMIC_DEFAULT = (49152, 65535)
_WINDOWS_SYSTEM_PID = 4


def _windows_state(state: int, protocol: str) -> str:
    if protocol == "udp":
        return "BOUND"
    if state >= _WINDOWS_MIB_STATE_OTHER:
        return f"MIB_TCP_STATE {state - _WINDOWS_MIB_STATE_OTHER}"
    return _WINDOWS_STATE_NAMES.get(state, str(state))


def _windows_process_path(pid: int) -> Optional[str]:
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


def _windows_sockets(port: int, protocol: str) -> Tuple[List[Dict[str, Any]], Optional[str]]:
    """The stack's sockets on PORT, one entry per (family, state, PID) with a
    count, and the error text if the table could not be read."""
    try:
        rows = _portres.port_sockets(check.PROTOCOLS[protocol], port, port)
    except OSError as exc:
        return [], f"{exc.filename or 'port_sockets'}: {exc.strerror or exc}"
    grouped: Dict[Tuple[str, str, int], Dict[str, Any]] = {}
    paths: Dict[int, Optional[str]] = {}
    for family, state, _port, pid, _id in rows:
        fam = "IPv6" if family == socket.AF_INET6 else "IPv4"
        key = (fam, _windows_state(state, protocol), pid)
        if key in grouped:
            grouped[key]["count"] += 1
            continue
        if pid not in paths:
            paths[pid] = _windows_process_path(pid)
        path = paths[pid]
        grouped[key] = {"family": fam, "state": key[1], "pid": pid or None,
                        "command": ntpath.basename(path) if path else None, "path": path,
                        "count": 1}
    return list(grouped.values()), None


def _windows_who(s: Dict[str, Any]) -> str:
    pid = s.get("pid")
    if not pid:
        return "a process the table does not name (PID 0: unavailable)"
    if s.get("command"):
        return f"{s['command']} (pid {pid}, {s['path']})"
    if pid == _WINDOWS_SYSTEM_PID:
        return ("the System process (pid 4: kernel-mode users such as HTTP.sys; `netsh http "
                "show servicestate` lists HTTP.sys's)")
    return f"pid {pid} (its image name is not readable: another user's or a protected process)"
