"""Overlapped operations: the blocking wrapper, the Overlapped object handed
to users, and asyncio integration.

The C object (`_portres.Overlapped`) owns the OVERLAPPED, its event and its
buffers; this wrapper adds messages with hints and the event-loop glue.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional, Set

from . import _portres
from . import _validate as check
from ._platform import backend

if TYPE_CHECKING:  # asyncio is imported when first awaited: `import portres` stays cheap
    import asyncio


class Overlapped:
    """An IOCTL in flight, completion signalled through an event.

    ``event`` is the event to wait on: a Windows manual-reset event HANDLE
    (as an int), or on Linux an eventfd that becomes readable at completion.
    On Linux every operation has completed by the time you get the object.
    """

    __slots__ = ("_op", "_explain")

    def __init__(self, op: _portres.Overlapped, explain: Callable[[OSError], OSError]) -> None:
        self._op = op
        self._explain = explain

    @property
    def event(self) -> int:
        return int(self._op.event)

    def done(self) -> bool:
        """Whether the operation has completed (never blocks)."""
        return bool(self._op.done())

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait up to TIMEOUT seconds (None: forever) with the GIL released;
        True once complete.  Ctrl+C cancels the operation and raises."""
        return bool(self._op.wait(check.timeout(timeout)))

    def result(self, timeout: Optional[float] = None) -> Any:
        """Wait, then return the result or raise the operation's OSError.
        On timeout the operation is cancelled and reaped, then TimeoutError
        is raised."""
        try:
            return self._op.result(check.timeout(timeout))
        except TimeoutError:
            raise
        except OSError as exc:
            raise self._explain(exc) from None

    def cancel(self) -> None:
        """Cancel the operation if still pending (CancelIoEx).  Idempotent;
        call result() or wait() to reap it."""
        self._op.cancel()

    def __repr__(self) -> str:
        return repr(self._op).replace("portres._portres.", "portres.")


# Operations cancelled by a cancelled task whose kernel side has not
# finished yet: kept alive until their event fires, then dropped.
_reaping: Set[Overlapped] = set()


def _watch(loop: "asyncio.AbstractEventLoop", op: Overlapped, wake: Callable[[], None]) -> Callable[[], object]:
    """Call wake() on LOOP once OP's event is signalled; return the undo."""
    return backend.watch(loop, op._op, wake)


def _reap_later(loop: "asyncio.AbstractEventLoop", op: Overlapped) -> None:
    _reaping.add(op)

    def reaped() -> None:
        if op.done():
            undo()
            _reaping.discard(op)

    undo = _watch(loop, op, reaped)


async def wait_async(op: Overlapped) -> Any:
    """Await OP's completion without blocking the loop; return its result.
    Cancelling the awaiting task cancels the I/O."""
    import asyncio

    if not op.done():
        loop = asyncio.get_running_loop()
        fut = loop.create_future()

        def wake() -> None:
            if not fut.done():
                fut.set_result(None)

        undo = _watch(loop, op, wake)
        try:
            await fut
        except asyncio.CancelledError:
            undo()
            op.cancel()
            if not op.done():  # the kernel has not let go yet: reap later
                _reap_later(loop, op)
            raise
        undo()
    return op.result(0)
