"""OSErrors that name the call, say what went wrong in the user's terms, and
give a hint.  The C layer raises OSError(errno, strerror, call[, winerror]);
this module rewrites the message and keeps errno/winerror (and so the
OSError subclass) intact."""

from __future__ import annotations

import errno as _errno
import sys
from typing import Optional

WINDOWS = sys.platform == "win32"

# Winsock / Win32 error codes this package explains.
WSAEACCES = 10013
WSAEINVAL = 10022
WSAEADDRINUSE = 10048
WSAENOTSOCK = 10038
WSAEOPNOTSUPP = 10045
WSAENOBUFS = 10055
ERROR_ACCESS_DENIED = 5

EXCLUDED_HINT = (
    "the port may lie in a range excluded by Hyper-V, WinNAT or another program; "
    "see `netsh int ipv4 show excludedportrange protocol=tcp` or run `portres check PORT`"
)

_WIN_HINTS = {
    WSAEOPNOTSUPP: "not a TCP/UDP socket or provider lacks support (port reservations "
    "need the Microsoft TCP/IP provider, Windows Vista or later)",
    WSAEACCES: EXCLUDED_HINT,
    ERROR_ACCESS_DENIED: "persistent reservations need elevation: run as administrator "
    "(or a requireAdministrator manifest)",
    WSAENOTSOCK: "the handle is not a socket (or was closed)",
    WSAEINVAL: "invalid argument: a socket must be associated before it is bound, and "
    "the token must be a live reservation",
}


def explain(exc: OSError, what: str, detail: Optional[str] = None) -> OSError:
    """Return a new OSError of the same kind whose message is
    "WHAT failed: DETAIL (system message); hint"."""
    winerror = getattr(exc, "winerror", None)
    code = winerror if WINDOWS and winerror is not None else exc.errno
    parts = [f"{what} failed"]
    if detail:
        parts.append(f": {detail}")
    parts.append(f" ({exc.strerror})" if exc.strerror else "")
    hint = _WIN_HINTS.get(code) if WINDOWS and code is not None else None
    if hint and not detail:
        parts.append(f"; {hint}")
    message = "".join(parts)
    # filename: the call that failed, as the C layer named it.
    if WINDOWS and winerror is not None:
        new = OSError(exc.errno, message, exc.filename, winerror)
    else:
        new = OSError(exc.errno, message, exc.filename)
    for name in ("conflict_port",):
        if hasattr(exc, name):
            setattr(new, name, getattr(exc, name))
    return new


def is_code(exc: OSError, posix: int, windows: Optional[int] = None) -> bool:
    if WINDOWS:
        return getattr(exc, "winerror", None) == windows
    return exc.errno == posix


EADDRINUSE = _errno.EADDRINUSE
EISCONN = _errno.EISCONN
ENOENT = _errno.ENOENT
EPROTOTYPE = _errno.EPROTOTYPE
EADDRNOTAVAIL = _errno.EADDRNOTAVAIL
EAFNOSUPPORT = _errno.EAFNOSUPPORT
EBADF = _errno.EBADF
EMFILE = _errno.EMFILE
EACCES = _errno.EACCES
EOPNOTSUPP = _errno.EOPNOTSUPP
ENOTSOCK_POSIX = _errno.ENOTSOCK
