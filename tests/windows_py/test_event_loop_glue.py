"""The Windows event-loop glue (portres._windows.watch), run here on the
Linux operation that stays pending until cancelled (its event is an
eventfd): a proactor loop waits for the event through the loop's own
IocpProactor.wait_for_handle, any other loop polls it from its timers, and
no Python runs on a thread-pool thread (issue 15, defect 2)."""

import asyncio
import socket
import sys
import threading

import pytest

import portres
from portres import _overlapped, _portres, _windows
from portres._overlapped import Overlapped, wait_async

WINDOWS = sys.platform == "win32"


def pending(on_cancel=None):
    return Overlapped(_portres._pending_overlapped(on_cancel=on_cancel), lambda exc: exc)


@pytest.fixture
def windows_glue(monkeypatch):
    monkeypatch.setattr(_overlapped, "backend", _windows)


class FakeProactor:
    """What the glue uses of asyncio's IocpProactor: wait_for_handle(), a
    future done once the handle is signalled (here an eventfd, readable once
    signalled)."""

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


@pytest.mark.skipif(WINDOWS, reason="the fake proactor watches an eventfd (Linux)")
def test_defect_2_a_proactor_loop_waits_through_wait_for_handle(windows_glue):
    op = pending(on_cancel=0)

    async def main(loop):
        loop.call_later(0.05, op.cancel)
        assert await wait_async(op) is None
        return loop._proactor.handles

    assert run(main, proactor=True) == [op.event]


@pytest.mark.skipif(WINDOWS, reason="the fake proactor watches an eventfd (Linux)")
def test_defect_2_a_cancelled_wait_cancels_the_proactor_future(windows_glue):
    op = pending()

    async def main(loop):
        task = asyncio.ensure_future(wait_async(op))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return loop

    loop = run(main, proactor=True)
    assert op.done()  # the cancel completed it
    assert loop._proactor.handles == [op.event]


def test_defect_2_other_loops_poll_the_event(windows_glue):
    op = pending()
    other = threading.Timer(0.1, op.cancel)  # completion from another thread

    async def main(loop):
        other.start()
        with pytest.raises(OSError):
            await wait_async(op)

    run(main)
    other.join()
    assert op.done()


def test_defect_2_polling_stops_with_the_wait(windows_glue):
    op = pending(on_cancel=0)

    async def main(loop):
        task = asyncio.ensure_future(wait_async(op))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert op.done()  # the cancel completed it (successfully, here)
        assert op not in _overlapped._reaping
        await asyncio.sleep(0.1)
        # no poll timer left behind
        return [h for h in loop._scheduled if not h.cancelled()]

    assert run(main) == []


def test_real_operations_complete_through_the_windows_glue(windows_glue):
    async def main(loop):
        with portres.acquire(1) as res:
            with socket.socket() as s:
                await portres.associate_async(s, res.token)
                return portres.bind(s, ("127.0.0.1", 0)) in res.ports

    assert run(main)
