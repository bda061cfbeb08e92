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

__all__ = [
    "Overlapped",
    "Reservation",
    "acquire",
    "associate",
    "associate_async",
    "associate_nowait",
    "bind",
    "connect",
    "create_persistent",
    "delete_persistent",
    "list_persistent",
    "lookup_persistent",
    "release",
]

__version__ = "0.1.0"
