"""`portres check PORT|A-B` and `portres.check()`: could a server bind the
port now, and if not, why?  Every answer comes from the system: real bind
attempts, the kernel's socket tables (with each socket's address, process
and descriptor), the runtime reservations the kernel holds, its reserved-port
list, portres's persistent entries.

The shared part is here: the bind attempts, the verdict, the report.  What
stands in the way is the backend's check_reasons (portres._linux,
portres._windows)."""

from __future__ import annotations

import socket
from typing import Any, Dict, List, Optional, Tuple

from . import _persistent
from . import _validate as _v
from ._errors import errno_name
from ._platform import backend


class CheckResult:
    """What `portres check` found for one port.

    bindable: whether a server's bind (IPv4 and IPv6 wildcard, with the
    options servers set: SO_REUSEADDR on Linux for TCP) succeeds now.
    reasons: what portres found, one sentence each (what the CLI prints).
    report: everything, as the CLI's JSON carries it."""

    __slots__ = ("port", "protocol", "bindable", "reasons", "report")

    def __init__(self, report: Dict[str, Any]) -> None:
        self.report = report
        self.port: int = report["port"]
        self.protocol: str = report["protocol"]
        self.bindable: bool = report["bindable"]
        self.reasons: List[str] = [r["message"] for r in report["reasons"]]

    def __bool__(self) -> bool:
        return self.bindable

    def __repr__(self) -> str:
        return f"<portres.CheckResult {self.protocol} {self.port} bindable={self.bindable}>"


def _bind_result(family: int, sock_type: int, host: str, port: int, v6only: Optional[int],
                 reuse: bool) -> str:
    try:
        s = socket.socket(family, sock_type)
    except OSError as exc:
        return f"unavailable ({exc.strerror})"
    try:
        if v6only is not None:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
        if reuse:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        return "ok"
    except OSError as exc:
        code = getattr(exc, "winerror", None) or exc.errno
        return f"{errno_name(exc.errno or 0) or code} ({exc.strerror})"
    finally:
        s.close()


def _forms() -> List[Tuple[str, int, str, Optional[int]]]:
    forms: List[Tuple[str, int, str, Optional[int]]] = [("IPv4", socket.AF_INET, "0.0.0.0", None)]
    if socket.has_ipv6:
        forms.append(("IPv6", socket.AF_INET6, "::", 1))
    return forms


def _server_reuse(protocol: str) -> bool:
    return protocol == "tcp" and bool(backend.SERVER_REUSEADDR)


def _try_bind(port: int, protocol: str) -> Dict[str, str]:
    """Each family's wildcard bind, as a server does it (the verdict)."""
    sock_type = _v.SOCK_TYPES[protocol]
    reuse = _server_reuse(protocol)
    return {name: _bind_result(family, sock_type, host, port, v6only, reuse)
            for name, family, host, v6only in _forms()}


def _try_plain_binds(port: int, protocol: str) -> Dict[str, str]:
    """Where servers set SO_REUSEADDR: the same binds without it ({} otherwise)."""
    if not _server_reuse(protocol):
        return {}
    sock_type = _v.SOCK_TYPES[protocol]
    return {name: _bind_result(family, sock_type, host, port, v6only, False)
            for name, family, host, v6only in _forms()}


def _persistent_entries(protocol: str) -> Tuple[List[Dict[str, Any]], Optional[OSError]]:
    """The persistent blocks of PROTOCOL, or [] and why they could not be listed."""
    try:
        return _persistent.persistent_entries(protocol), None
    except OSError as exc:
        return [], exc


def _port(port: Any) -> int:
    value: int = _v.port(port)
    if value == 0:
        raise ValueError("port must be in 1..65535, not 0 (port 0 asks the kernel for any port)")
    return value


def explain(port: int, protocol: str = "tcp") -> Dict[str, Any]:
    """The report for PORT (a dict: the CLI's JSON)."""
    port = _port(port)
    protocol = _v.protocol(protocol)
    binds = _try_bind(port, protocol)
    plain = _try_plain_binds(port, protocol)
    can_bind = all(v == "ok" for v in binds.values())
    reasons: List[Dict[str, Any]] = []

    def add(kind: str, message: str, **extra: Any) -> None:
        reasons.append(dict(kind=kind, message=message, **extra))

    failing = [f"{name} wildcard without SO_REUSEADDR: {result}"
               for name, result in plain.items() if result != "ok"]
    if can_bind and failing:
        add("plain_bind", "a server's bind (SO_REUSEADDR, as asyncio, http.server and "
                          "socketserver set it) succeeds, but a bind without SO_REUSEADDR fails: "
            + "; ".join(failing), binds=dict(plain))
    persistent, persistent_error = _persistent_entries(protocol)
    backend.check_reasons(port, protocol, binds, add, persistent, persistent_error)
    if not can_bind and not any(r["kind"] not in ("info", "plain_bind") for r in reasons):
        add("unknown", "the bind failed for a reason portres could not identify: "
            + "; ".join(f"{k}: {v}" for k, v in binds.items() if v != "ok"))
    verdict = (f"{protocol.upper()} port {port} can be bound by a server now"
               if can_bind else
               f"{protocol.upper()} port {port} cannot be bound by a server now")
    return {"port": port, "protocol": protocol, "bindable": can_bind, "can_bind": can_bind,
            "bind": binds, "bind_without_options": plain,
            "server_bind": "SO_REUSEADDR" if _server_reuse(protocol) else "plain",
            "verdict": verdict, "reasons": reasons}


def check(port: int, *, protocol: str = "tcp") -> CheckResult:
    """Whether a server could bind PORT now, and what stands in the way:
    .bindable (bool) and .reasons (list of str), as `portres check` prints
    them; .report has everything (sockets with address, pid, process, fd;
    the reservation that holds the port)."""
    return CheckResult(explain(port, protocol))


__all__ = ["CheckResult", "check", "explain"]
