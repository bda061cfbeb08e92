"""Argument checks run before any system call.

Every public entry point validates here first, so bad input gets a
TypeError/ValueError naming the argument and nothing is ever held.
"""

from __future__ import annotations

import math
import socket
import sys
from typing import Any, Optional

from . import _portres

PROTOCOLS = {"tcp": _portres.TCP, "udp": _portres.UDP}
PROTOCOL_NAMES = {v: k for k, v in PROTOCOLS.items()}
SOCK_TYPES = {"tcp": socket.SOCK_STREAM, "udp": socket.SOCK_DGRAM}
FAMILIES = (socket.AF_INET, socket.AF_INET6)
TOKEN_MAX = 2**64 - 1
# A Linux descriptor is a C int; a Windows SOCKET is pointer-sized.
_FILENO_MAX = 2**64 - 1 if sys.platform == "win32" else 2**31 - 1


def show(value: object) -> str:
    """VALUE for a message: a huge int is described, not printed (printing
    one of over 4300 digits fails, and helps nobody)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**30:
        return f"an int of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _int(name: str, value: Any) -> int:
    # bool is an int subclass, but True ports are a bug, not a port.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    return int(value)


def port(value: object, name: str = "port") -> int:
    value = _int(name, value)
    if not 0 <= value <= 65535:
        raise ValueError(f"{name} must be in 0..65535, not {show(value)}")
    return value


def count(value: object) -> int:
    value = _int("count", value)
    if not 1 <= value <= 65535:
        raise ValueError(f"count must be in 1..65535, not {show(value)}")
    return value


def valid_block(start: int, count_: int) -> bool:
    """The rule for a block of ports, given ints: 1..65535 ports from START
    (0: the system chooses), none past 65535.  block() says what is wrong;
    the fast paths of _core test this alone."""
    return 0 < count_ <= 65535 and 0 <= start <= 65536 - count_


def block(start: Any, count_: Any) -> "tuple[int, int]":
    """A block of ports; start 0 means "let the system choose"."""
    start = port(start, "start")
    count_ = count(count_)
    if not valid_block(start, count_):
        raise ValueError(
            f"block of {show(count_)} ports from {show(start)} would end at {start + count_ - 1}, past 65535"
        )
    return start, count_


def persistent_block(start: Any, count_: Any) -> "tuple[int, int]":
    start, count_ = block(start, count_)
    if start == 0:
        raise ValueError("start must be a port in 1..65535 for a persistent reservation")
    return start, count_


def protocol(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"protocol must be 'tcp' or 'udp', not {type(value).__name__}")
    name = value.lower()
    if name not in PROTOCOLS:
        raise ValueError(f"protocol must be 'tcp' or 'udp', not {value!r}")
    return name


def token(value: object) -> int:
    value = _int("token", value)
    if not 0 < value <= TOKEN_MAX:
        raise ValueError(f"token must be a non-zero unsigned 64-bit int, not {show(value)}")
    return value


def timeout(value: object) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"timeout must be None or a number of seconds, not {type(value).__name__}")
    try:
        value = float(value)
    except OverflowError:
        raise ValueError(f"timeout is too large: {show(value)} seconds") from None
    if math.isnan(value) or value < 0:
        raise ValueError(f"timeout must be None or a non-negative number of seconds, not {show(value)}")
    return value


def family(value: object) -> int:
    value = _int("family", value)
    if value not in FAMILIES:
        raise ValueError(f"family must be socket.AF_INET or socket.AF_INET6, not {show(value)}")
    return value


def host(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"host must be a str, not {type(value).__name__}")
    if "\0" in value:
        raise ValueError("host must not contain NUL")
    return value


def fileno(sock: Any) -> int:
    """The descriptor (SOCKET on Windows) of a socket or of anything with fileno()."""
    if isinstance(sock, bool) or isinstance(sock, int):
        raise TypeError("sock must be a socket or have fileno(), not int; wrap a raw "
                        "descriptor with socket.socket(fileno=fd)")
    get = getattr(sock, "fileno", None)
    if get is None or not callable(get):
        raise TypeError(f"sock must be a socket or have fileno(), not {type(sock).__name__}")
    fd = get()
    if isinstance(fd, bool) or not isinstance(fd, int):
        raise TypeError(f"sock.fileno() must return an int, not {type(fd).__name__}")
    if fd < 0:
        raise ValueError("sock is closed (fileno() is -1)")
    if fd > _FILENO_MAX:
        raise ValueError(f"sock.fileno() returned {show(fd)}, not a valid descriptor")
    return fd


def address(family_: int, value: Any) -> "tuple[str, int, int, int]":
    """(host, port[, flowinfo, scope_id]) as socket.bind takes it."""
    if not isinstance(value, tuple):
        raise TypeError(f"address must be a tuple (host, port), not {type(value).__name__}")
    n = len(value)
    if family_ == socket.AF_INET and n != 2:
        raise ValueError(f"an AF_INET address is (host, port), not a {n}-tuple")
    if family_ == socket.AF_INET6 and not 2 <= n <= 4:
        raise ValueError(f"an AF_INET6 address is (host, port[, flowinfo[, scope_id]]), not a {n}-tuple")
    h = host(value[0])
    p = port(value[1])
    flowinfo = _int("flowinfo", value[2]) if n > 2 else 0
    scope_id = _int("scope_id", value[3]) if n > 3 else 0
    if not 0 <= flowinfo < 2**20:
        raise ValueError(f"flowinfo must be in 0..2**20-1, not {show(flowinfo)}")
    if not 0 <= scope_id < 2**32:
        raise ValueError(f"scope_id must be in 0..2**32-1, not {show(scope_id)}")
    return h, p, flowinfo, scope_id
