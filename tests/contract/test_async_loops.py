"""associate_async and Overlapped waits on trio and anyio (asyncio is in
test_overlapped.py).  The pending path uses an operation that stays pending
until cancelled (`_portres._pending_overlapped`)."""

import socket
import time

import pytest

import portres
from portres import _portres
from portres._async import _reaping_trio, running_library, wait_any
from portres._overlapped import Overlapped

trio = pytest.importorskip("trio", reason="trio is in the test extra")
anyio = pytest.importorskip("anyio", reason="anyio is in the test extra")


def pending():
    return Overlapped(_portres._pending_overlapped(), lambda exc: exc)


async def _associate_and_bind():
    with portres.acquire(2) as res:
        with socket.socket() as s:
            await portres.associate_async(s, res.token)
            return portres.bind(s, ("127.0.0.1", 0)), res.ports


def test_associate_async_under_trio():
    port, ports = trio.run(_associate_and_bind)
    assert port in ports


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_associate_async_under_anyio(backend):
    port, ports = anyio.run(_associate_and_bind, backend=backend)
    assert port in ports


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_running_library_under_anyio(backend):
    async def main():
        return running_library()

    assert anyio.run(main, backend=backend) == backend


def test_a_completed_operation_needs_no_running_loop():
    # no event loop at all: the coroutine finishes on its first step
    with portres.acquire(1) as res, socket.socket() as s:
        coro = portres.associate_async(s, res.token)
        with pytest.raises(StopIteration):
            coro.send(None)
        assert portres.bind(s, ("127.0.0.1", 0)) in res.ports


def test_trio_pending_wakes_on_completion_without_blocking():
    op = pending()
    ticks = []

    async def main():
        async def ticker():
            while True:
                ticks.append(1)
                await trio.sleep(0.005)

        async def complete_later():
            await trio.sleep(0.2)
            op.cancel()  # completes it with ECANCELED, signalling the event

        async with trio.open_nursery() as n:
            n.start_soon(ticker)
            n.start_soon(complete_later)
            with pytest.raises(OSError) as info:
                await wait_any(op)
            n.cancel_scope.cancel()
        return info.value

    t0 = time.monotonic()
    exc = trio.run(main)
    assert time.monotonic() - t0 >= 0.19
    assert len(ticks) > 10  # the loop ran while the operation pended
    assert op.done() and exc.errno is not None


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_cancelling_the_task_cancels_the_io_under_anyio(backend):
    op = pending()

    async def main():
        with anyio.move_on_after(0.1) as scope:
            await wait_any(op)
        return scope.cancelled_caught

    assert anyio.run(main, backend=backend) is True
    assert op.done()
    with pytest.raises(OSError):
        op.result()
    assert op not in _reaping_trio
