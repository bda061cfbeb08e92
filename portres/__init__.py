"""portres: port reservations for Python.

A reservation is a block of TCP or UDP ports that belongs to this program:
its sockets bind from the block, and no other program can take the ports.
On Windows this is the kernel's own facility (SIO_*_PORT_RESERVATION and the
iphlpapi persistent reservations); on Linux the same API is held by real
kernel mechanisms (see the documentation's platform table).

    with portres.acquire(16) as res:
        server = res.socket()          # bound to a port of the block
        server.listen()
"""

try:
    from . import _portres as _portres  # the C extension, built by `pip install` (CONTRIBUTING.md)
except ImportError as _exc:  # pragma: no cover - exercised by a subprocess test
    import os as _os

    _here = _os.path.dirname(_os.path.abspath(__file__))
    raise ImportError(
        f"portres's C extension (portres._portres) is not built in {_here}: this is a source "
        "checkout. Build it in place with `pip install -e .` (or `python setup.py build_ext "
        "--inplace`), or run from another directory to use the installed portres",
        name="portres._portres",
    ) from None  # the original "partially initialized module" text misleads

from ._check import check  # issue 14
from ._core import (
    Reservation,
    acquire,
    associate,
    associate_async,
    associate_nowait,
    bind,
    connect,
    release,
)
from ._overlapped import Overlapped
from ._persistent import (
    create_persistent,
    delete_persistent,
    list_persistent,
    lookup_persistent,
)
from ._runtime import list_runtime  # issue 14

__all__ = [
    "Overlapped",
    "Reservation",
    "acquire",
    "associate",
    "associate_async",
    "associate_nowait",
    "bind",
    "check",
    "connect",
    "create_persistent",
    "delete_persistent",
    "list_persistent",
    "list_runtime",
    "lookup_persistent",
    "release",
]

__version__ = "0.1.0"
