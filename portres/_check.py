"""`portres check PORT`: could this program bind the port now, and if not,
why?  Every answer comes from the system: a real bind attempt, the kernel's
socket tables, its reserved-port list, portres's persistent entries.

The shared part is here: the bind attempt, the verdict, the report.  What
stands in the way is the backend's check_reasons (portres._linux,
portres._windows)."""

from __future__ import annotations

import errno
import socket
from typing import Any, Dict, List, Optional, Tuple

from . import _persistent
from . import _validate as check
from ._platform import backend


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


def _persistent_entries(protocol: str) -> Tuple[List[Dict[str, Any]], Optional[OSError]]:
    """The persistent blocks of PROTOCOL, or [] and why they could not be listed."""
    try:
        return _persistent.persistent_entries(protocol), None
    except OSError as exc:
        return [], exc


def explain(port: int, protocol: str = "tcp") -> Dict[str, Any]:
    port = check.port(port)
    protocol = check.protocol(protocol)
    binds = _try_bind(port, protocol)
    can_bind = all(v == "ok" for v in binds.values())
    reasons: List[Dict[str, Any]] = []

    def add(kind: str, message: str, **extra: Any) -> None:
        reasons.append(dict(kind=kind, message=message, **extra))

    persistent, persistent_error = _persistent_entries(protocol)
    backend.check_reasons(port, protocol, binds, add, persistent, persistent_error)
    if not can_bind and not any(r["kind"] != "info" for r in reasons):
        add("unknown", "the bind failed for a reason portres could not identify; "
                       "see the error above")
    verdict = (f"{protocol.upper()} port {port} can be bound by this program now"
               if can_bind else
               f"{protocol.upper()} port {port} cannot be bound by this program now")
    return {"port": port, "protocol": protocol, "can_bind": can_bind, "bind": binds,
            "verdict": verdict, "reasons": reasons}
