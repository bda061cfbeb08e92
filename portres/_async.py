"""Awaiting an Overlapped on whichever event loop is running: asyncio, trio,
or anyio (on either of them).

No event-loop library is imported unless the caller is already running it,
so none is a dependency.  An operation that has already completed (every
operation on Linux) returns its result without touching any loop, so
``associate_async`` works even where no asyncio loop runs.
"""

from __future__ import annotations

import sys
from typing import Any, Set

from ._overlapped import Overlapped, wait_async
from ._platform import backend

# Operations whose waiting trio task was cancelled and whose kernel side has
# not let go yet: kept alive (their OVERLAPPED and event with them) until a
# trio system task sees them complete.
_reaping_trio: Set[Overlapped] = set()


def running_library() -> str:
    """"trio" when called from a trio task, else "asyncio" (anyio runs on
    one of the two).  sniffio is used when installed (trio and anyio depend
    on it); otherwise trio is recognised by asking it, when imported."""
    try:
        import sniffio
    except ImportError:
        pass
    else:
        try:
            return "trio" if sniffio.current_async_library() == "trio" else "asyncio"
        except sniffio.AsyncLibraryNotFoundError:
            return "asyncio"
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            trio.lowlevel.current_task()
            return "trio"
        except RuntimeError:
            pass
    return "asyncio"


async def _wait_trio_event(op: Overlapped) -> None:
    await backend.wait_trio_event(op.event)


async def _reap_trio(op: Overlapped) -> None:
    try:
        while not op.done():
            await _wait_trio_event(op)
    finally:
        _reaping_trio.discard(op)


async def wait_trio(op: Overlapped) -> Any:
    """Await OP in a trio task: trio.lowlevel.wait_readable on the eventfd
    (Linux) or WaitForSingleObject on the event handle (Windows).
    Cancelling the task cancels the I/O."""
    import trio  # type: ignore[import-untyped,unused-ignore]

    try:
        while not op.done():
            await _wait_trio_event(op)
    except trio.Cancelled:
        op.cancel()
        if not op.done():   # the kernel has not let go yet: reap it later
            _reaping_trio.add(op)
            trio.lowlevel.spawn_system_task(_reap_trio, op)
        raise
    return op.result(0)


async def wait_any(op: Overlapped) -> Any:
    """Await OP's completion on the running loop and return its result."""
    if op.done():   # no loop needed (every operation on Linux)
        return op.result(0)
    if running_library() == "trio":
        return await wait_trio(op)
    return await wait_async(op)
