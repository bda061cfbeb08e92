"""Overlapped outcomes the kernel documents and Linux never produces by
itself: a cancel the operation outruns (CancelIoEx: "the operation may have
completed normally"), a failure that arrives while cancelling, and the
event-loop glue of the Windows branch, which must not run Python on
thread-pool threads.

`_portres._pending_overlapped(on_cancel=...)` is an operation that stays
pending until cancelled, then completes with ON_CANCEL: None for the
platform's abort code (ECANCELED / ERROR_OPERATION_ABORTED), 0 for a
success, or an error code."""

import asyncio
import errno
import pathlib
import re
import sys
import threading

import pytest

import portres
from portres import _overlapped, _portres
from portres._overlapped import Overlapped, wait_async

SRC = pathlib.Path(__file__).resolve().parent.parent / "src"
WINDOWS = sys.platform == "win32"
EACCES = 10013 if WINDOWS else errno.EACCES  # WSAEACCES on Windows


def pending(on_cancel=None):
    return Overlapped(_portres._pending_overlapped(on_cancel=on_cancel), lambda exc: exc)


def test_timeout_returns_the_result_of_an_operation_that_completed_while_cancelled():
    op = pending(on_cancel=0)
    assert op.result(timeout=0.05) is None
    assert op.done()
    assert op.result(0) is None  # and it stays the result


def test_timeout_raises_timeout_error_when_the_cancel_aborted_the_operation():
    op = pending()
    with pytest.raises(TimeoutError, match="did not complete in time; it was cancelled"):
        op.result(timeout=0.05)
    assert op.done()
    with pytest.raises(OSError) as info:
        op.result()
    assert not isinstance(info.value, TimeoutError)


def test_timeout_raises_the_operations_own_error_when_it_failed_while_cancelled():
    op = pending(on_cancel=EACCES)
    with pytest.raises(PermissionError) as info:
        op.result(timeout=0.05)
    assert not isinstance(info.value, TimeoutError)
    assert op.done()


def test_on_cancel_is_checked():
    with pytest.raises(TypeError):
        _portres._pending_overlapped(on_cancel="0")
    with pytest.raises((ValueError, OverflowError)):
        _portres._pending_overlapped(on_cancel=-5)


def test_no_python_on_threads_python_did_not_create():
    # PyGILState_Ensure on a thread-pool thread is unsupported with
    # subinterpreters (the module declares a per-interpreter GIL) and unsafe
    # during finalization; CPython's own overlapped.c posts to a completion
    # port from its wait callbacks and does no Python work there.
    offenders = [
        f"{path.relative_to(SRC)}:{n}"
        for path in sorted(SRC.rglob("*.c"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\bPyGILState_(Ensure|Release)\b", line)
    ]
    assert offenders == []
    assert not hasattr(_portres.Overlapped, "_register_wait")


@pytest.fixture
def windows_glue(monkeypatch):
    """The Windows branch of the event-loop glue, run here."""
    monkeypatch.setattr(_overlapped, "WINDOWS", True)


class FakeProactor:
    """The part of asyncio's IocpProactor the glue uses: wait_for_handle(),
    a future that is done once the handle is signalled (here the handle is
    an eventfd, readable once signalled)."""

    def __init__(self, loop):
        self.loop = loop
        self.handles = []

    def wait_for_handle(self, handle, timeout=None):
        assert timeout is None
        self.handles.append(handle)
        fut = self.loop.create_future()

        def ready():
            self.loop.remove_reader(handle)
            if not fut.done():
                fut.set_result(True)

        self.loop.add_reader(handle, ready)
        fut.add_done_callback(lambda f: self.loop.remove_reader(handle))
        return fut


def run(main, proactor=False):
    loop = asyncio.SelectorEventLoop()
    if proactor:
        loop._proactor = FakeProactor(loop)
    try:
        return loop.run_until_complete(main(loop))
    finally:
        loop.close()


@pytest.mark.skipif(WINDOWS, reason="the fake proactor watches an eventfd")
def test_windows_glue_waits_through_the_proactor(windows_glue):
    op = pending(on_cancel=0)

    async def main(loop):
        loop.call_later(0.05, op.cancel)
        assert await wait_async(op) is None
        return loop._proactor.handles

    assert run(main, proactor=True) == [op.event]


def test_windows_glue_polls_on_a_loop_without_a_proactor(windows_glue):
    op = pending()
    other = threading.Timer(0.1, op.cancel)  # completion from another thread

    async def main(loop):
        other.start()
        with pytest.raises(OSError):
            await wait_async(op)
        return loop.time()

    run(main)
    other.join()
    assert op.done()


def test_windows_glue_cancelled_task_reaps_the_operation_later(windows_glue):
    op = pending(on_cancel=0)

    async def main(loop):
        task = asyncio.ensure_future(wait_async(op))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert op.done()  # the cancel completed it (successfully, here)
        assert op not in _overlapped._reaping

    run(main)


def test_real_operations_complete_through_the_windows_glue(windows_glue):
    async def main(loop):
        with portres.acquire(1) as res:
            import socket

            with socket.socket() as s:
                await portres.associate_async(s, res.token)
                return portres.bind(s, ("127.0.0.1", 0)) in res.ports

    assert run(main)
