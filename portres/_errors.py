"""OSErrors that name the call, say what went wrong in the user's terms, and
give a hint.  The C layer raises OSError(errno, strerror, call[, winerror]);
this module rewrites the message and keeps errno/winerror (and so the
OSError subclass) and the failing call (`filename`) intact.

Which code an error carries, and the codes and hints of each condition, are
the backend's (portres._linux / portres._windows: error_code,
condition_code, CODES, HINTS)."""

from __future__ import annotations

import errno as _errno
from typing import Optional

from ._platform import backend

# When portres refuses by a rule of its own, before any system call (a
# closed block, a port outside the block, a socket of the wrong type...),
# the C layer names no call: the binding puts the package operation refused
# in `filename` instead (src/portres.h, "Errors"), one of these.
_REFUSING = ("portres.", "Reservation.")


def errno_name(code: int) -> Optional[str]:
    """The symbolic name of errno CODE, or None.  Where EOPNOTSUPP and
    ENOTSUP are one number (Linux: 95), Python's errno.errorcode says
    ENOTSUP, the name for files; every errno portres names is of a socket
    operation (a bind, or its refusal of a socket it cannot bind or
    associate), for which the kernel's name is EOPNOTSUPP."""
    if code == _errno.EOPNOTSUPP:
        return "EOPNOTSUPP"
    return _errno.errorcode.get(code)


def refused(exc: OSError) -> bool:
    """Whether EXC is portres's own refusal rather than a failed system call."""
    name = exc.filename
    return isinstance(name, str) and name.startswith(_REFUSING)


def explain(exc: OSError, what: str, detail: Optional[str] = None,
            system: Optional[str] = None) -> OSError:
    """Return a new OSError of the same kind whose message is
    "WHAT failed: DETAIL (system message); hint", with EXC's errno,
    winerror and filename (the call that failed).  SYSTEM replaces the
    system message where it would mislead (ENOENT's "No such file").  A
    refusal by portres's own rule (refused()) reads "WHAT refused by
    portres: DETAIL (ERRNO NAME)"; its filename is the operation refused."""
    code = backend.error_code(exc)
    rule = refused(exc)
    # A rule of ours: say portres refused it, and give the code's name, not
    # the system's sentence for a call that was never made.
    parts = [f"{what} refused by portres" if rule else f"{what} failed"]
    if detail:
        parts.append(f": {detail}")
    shown = system or (errno_name(exc.errno or 0) if rule else None) or exc.strerror
    parts.append(f" ({shown})" if shown else "")
    hint = backend.HINTS.get(code) if code is not None else None
    if hint and not detail:
        parts.append(f"; {hint}")
    message = "".join(parts)
    # filename: the call that failed, as the C layer named it.
    # The class is the backend's (the same on both platforms for the same
    # cause); winerror is kept as an attribute.
    new = backend.rebuild(exc, message)
    for name in ("conflict_port",):
        if hasattr(exc, name):
            setattr(new, name, getattr(exc, name))
    return new


def is_code(exc: OSError, condition: str) -> bool:
    """Whether EXC is CONDITION (a key of the backend's CODES, named after
    the POSIX errno: "EADDRINUSE"...) on this platform."""
    # Never a match on a missing code: an OSError without winerror (or a
    # condition this platform never reports) is not that condition.
    code = backend.condition_code(exc)
    expected = backend.CODES[condition]
    return code is not None and expected is not None and code == expected
