"""The Overlapped contract, the blocking wrapper and asyncio integration.

Real operations complete at once on Linux; the wait machinery (timeouts,
cancellation, Ctrl+C, event-loop wake-ups) is exercised with an operation
that stays pending until cancelled (`_portres._pending_overlapped`)."""

import asyncio
import errno
import gc
import os
import select
import signal
import socket
import threading
import time
import warnings

import pytest

import portres
from portres import _portres
from portres._overlapped import Overlapped, wait_async
from tests.support import LINUX


def pending():
    return Overlapped(_portres._pending_overlapped(), lambda exc: exc)


def readable(fd, timeout=0.0):
    return bool(select.select([fd], [], [], timeout)[0])


def test_associate_nowait_completes_and_signals_its_event():
    with portres.acquire(2) as res:
        s = socket.socket()
        op = portres.associate_nowait(s, res.token)
        assert isinstance(op, portres.Overlapped)
        assert isinstance(op.event, int)
        if LINUX:
            assert readable(op.event)
        assert op.done() and op.wait() and op.wait(0) and op.wait(timeout=1.5)
        assert op.result() is None and op.result(0) is None  # idempotent
        op.cancel()
        op.cancel()  # no-op once done
        assert op.result() is None
        assert portres.bind(s, ("127.0.0.1", 0)) in res.ports
        s.close()


def test_associate_nowait_reports_errors_at_start_with_hints():
    with portres.acquire(1) as res, socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        with pytest.raises(OSError, match="associate it before bind"):
            portres.associate_nowait(s, res.token)


def test_result_after_the_reservation_is_closed():
    res = portres.acquire(1)
    s = socket.socket()
    op = portres.associate_nowait(s, res.token)
    res.close()
    assert op.result() is None  # the association itself had succeeded
    with pytest.raises(OSError, match="no reservation with token"):
        portres.associate(s, res.token)  # the token is gone with the reservation
    s.close()


def test_acquire_overlapped_returns_the_reservation():
    op = _portres.acquire_port_reservation(_portres.TCP, 0, 3, overlapped=True)
    res = op.result()
    assert res.count == 3 and not res.closed
    assert op.result() is res
    res.close()


def test_release_overlapped():
    res = portres.acquire(1)
    with socket.socket() as s:
        op = _portres.release_port_reservation(s.fileno(), res.token, overlapped=True, owner=s)
        assert op.result() is None
    assert res.closed


@pytest.mark.parametrize("bad,exc", [(-1, ValueError), (float("nan"), ValueError), ("1", TypeError), (True, TypeError)])
def test_wait_and_result_validate_timeout(bad, exc):
    op = pending()
    with pytest.raises(exc, match="timeout"):
        op.wait(bad)
    with pytest.raises(exc, match="timeout"):
        op.result(bad)
    with pytest.raises(exc, match="timeout"):
        op._op.wait(bad)  # the C layer checks too
    op.cancel()


def test_pending_wait_times_out_then_result_cancels_and_reaps():
    op = pending()
    assert not op.done()
    if LINUX:
        assert not readable(op.event)
    t0 = time.monotonic()
    assert op.wait(0.1) is False
    assert time.monotonic() - t0 >= 0.09
    with pytest.raises(TimeoutError, match="cancelled"):
        op.result(timeout=0.05)
    assert op.done()  # reaped
    if LINUX:
        assert readable(op.event)
    with pytest.raises(OSError) as info:
        op.result()
    assert info.value.errno == errno.ECANCELED


def test_cancel_is_idempotent_and_completes_the_operation():
    op = pending()
    op.cancel()
    op.cancel()
    assert op.wait(1) and op.done()
    with pytest.raises(OSError):
        op.result()


def test_wait_releases_the_gil_and_wakes_on_cancel_from_another_thread():
    op = pending()
    ticks = []
    stop = threading.Event()

    def spin():  # runs only if the waiter released the GIL
        while not stop.is_set():
            ticks.append(1)
            time.sleep(0.001)

    t = threading.Thread(target=spin)
    t.start()
    threading.Timer(0.2, op.cancel).start()
    t0 = time.monotonic()
    assert op.wait(5) is True
    assert time.monotonic() - t0 < 2
    stop.set()
    t.join()
    assert len(ticks) > 20


def test_sixteen_threads_wait_on_one_operation():
    op = pending()
    results, errors = [], []
    barrier = threading.Barrier(17)

    def waiter():
        barrier.wait()
        try:
            results.append(op.wait(10))
            op.cancel()
            try:
                op.result(0)
            except OSError as exc:
                results.append(exc.errno)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=waiter) for _ in range(16)]
    for t in threads:
        t.start()
    barrier.wait()
    time.sleep(0.1)
    op.cancel()
    for t in threads:
        t.join(10)
    assert not errors
    assert results.count(True) == 16 and results.count(errno.ECANCELED) == 16


def test_sixteen_threads_associate_and_bind_concurrently():
    with portres.acquire(64) as res:
        ports, errors = [], []

        def worker():
            try:
                for _ in range(4):
                    s = socket.socket()
                    op = portres.associate_nowait(s, res.token)
                    op.result(5)
                    ports.append(portres.bind(s, ("127.0.0.1", 0)))
                    socks.append(s)
            except BaseException as exc:  # pragma: no cover
                errors.append(exc)

        socks = []
        threads = [threading.Thread(target=worker) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert sorted(ports) == list(res.ports)  # every port exactly once
        for s in socks:
            s.close()


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs pthread_kill")
def test_ctrl_c_during_wait_cancels_and_reaps(monkeypatch):
    # Python's own SIGINT handler, even when pytest was started with SIGINT
    # ignored (a background job): the test sends the signal itself.
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _ctrl_c_during_wait()
    finally:
        signal.signal(signal.SIGINT, old)


def _ctrl_c_during_wait():
    op = pending()
    main = threading.get_ident()
    threading.Timer(0.2, lambda: signal.pthread_kill(main, signal.SIGINT)).start()
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        op.wait()
    assert time.monotonic() - t0 < 3
    assert op.done()  # cancelled and reaped before the exception propagated
    with pytest.raises(OSError):
        op.result()

    op = pending()
    threading.Timer(0.2, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    with pytest.raises(KeyboardInterrupt):
        op.result()
    assert op.done()


def test_dropping_a_pending_operation_cancels_it_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        op = pending()
        event = op.event
        del op
        gc.collect()
    if LINUX:
        with pytest.raises(OSError):
            os.fstat(event)  # the eventfd was closed: nothing leaked


def test_owner_is_released_once_the_operation_is_reaped():
    import weakref

    class Sock(socket.socket):
        pass

    with portres.acquire(1) as res:
        s = Sock()
        ref = weakref.ref(s)
        op = _portres.associate_port_reservation(s.fileno(), res.token, overlapped=True, owner=s)
        fd = s.detach()
        del s
        gc.collect()
        assert ref() is not None  # held by the operation until reaped
        assert op.done()
        gc.collect()
        assert ref() is None
        os.close(fd)


def test_associate_async_on_asyncio_run():
    async def main():
        with portres.acquire(2) as res:
            s = socket.socket()
            await portres.associate_async(s, res.token)
            port = portres.bind(s, ("127.0.0.1", 0))
            s.close()
            return port, res.ports

    port, ports = asyncio.run(main())
    assert port in ports


@pytest.mark.parametrize("loop_factory", ["default", "selector"])
def test_cancelling_the_task_cancels_the_io(loop_factory):
    op = pending()
    ticks = []

    async def ticker():
        while True:
            ticks.append(1)
            await asyncio.sleep(0.005)

    async def main():
        t = asyncio.ensure_future(ticker())
        task = asyncio.ensure_future(wait_async(op))
        await asyncio.sleep(0.2)
        assert not task.done()  # waiting without blocking the loop
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        t.cancel()

    if loop_factory == "selector":
        loop = asyncio.SelectorEventLoop()
        try:
            loop.run_until_complete(main())
        finally:
            loop.close()
    else:
        asyncio.run(main())
    assert len(ticks) > 10
    assert op.done()
    with pytest.raises(OSError):
        op.result()


def test_wait_async_wakes_when_the_event_is_signalled():
    op = pending()

    async def main():
        loop = asyncio.get_running_loop()
        loop.call_later(0.1, op.cancel)  # completes it (ECANCELED)
        with pytest.raises(OSError):
            await wait_async(op)

    asyncio.run(main())


def test_cancelled_wait_leaves_no_reader_on_the_loop():
    op = pending()

    async def main():
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(wait_async(op))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        if LINUX:
            # the eventfd is no longer watched: a stale registration would
            # outlive the Overlapped and its descriptor
            assert loop.remove_reader(op.event) is False

    asyncio.run(main())
