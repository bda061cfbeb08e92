"""Overlapped outcomes the kernel documents and Linux never produces by
itself (issue 15): a cancel the operation outruns ("CancelIoEx function":
the operation may still complete normally), and a failure of its own that
arrives while it is being cancelled.  Also the rule that no Python runs on a
thread Python did not create.

`_portres._pending_overlapped(on_cancel=...)` is an operation that stays
pending until cancelled, then completes with ON_CANCEL: None for the
platform's abort (ECANCELED / ERROR_OPERATION_ABORTED), 0 for a success, or
an error code."""

import errno
import pathlib
import re
import sys

import pytest

from portres import _portres
from portres._overlapped import Overlapped

SRC = pathlib.Path(__file__).resolve().parents[2] / "src"
WINDOWS = sys.platform == "win32"
EACCES = 10013 if WINDOWS else errno.EACCES  # WSAEACCES on Windows


def pending(on_cancel=None):
    return Overlapped(_portres._pending_overlapped(on_cancel=on_cancel), lambda exc: exc)


def test_defect_3_timeout_returns_the_result_of_an_operation_that_outran_the_cancel():
    op = pending(on_cancel=0)
    assert op.result(timeout=0.05) is None
    assert op.done()
    assert op.result(0) is None  # and it stays the result


def test_defect_3_timeout_is_a_timeout_when_the_cancel_aborted_the_operation():
    op = pending()
    with pytest.raises(TimeoutError, match="did not complete in time; it was cancelled"):
        op.result(timeout=0.05)
    assert op.done()
    with pytest.raises(OSError) as info:
        op.result()
    assert not isinstance(info.value, TimeoutError)


def test_defect_3_timeout_raises_the_operations_own_error_when_it_failed_meanwhile():
    op = pending(on_cancel=EACCES)
    with pytest.raises(PermissionError) as info:
        op.result(timeout=0.05)
    assert not isinstance(info.value, TimeoutError)
    assert op.done()


def test_on_cancel_is_checked():
    with pytest.raises(TypeError):
        _portres._pending_overlapped(on_cancel="0")
    with pytest.raises(TypeError):
        _portres._pending_overlapped(on_cancel=True)
    with pytest.raises(ValueError):
        _portres._pending_overlapped(on_cancel=-5)


def test_defect_2_no_python_on_threads_python_did_not_create():
    # PyGILState_Ensure on a thread-pool thread is unsupported with
    # subinterpreters (the module declares a per-interpreter GIL) and unsafe
    # during finalization; CPython's own overlapped.c only posts to a
    # completion port from its wait callbacks.
    offenders = [
        f"{path.relative_to(SRC)}:{n}"
        for path in sorted(SRC.rglob("*.c"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\bPyGILState_(Ensure|Release)\b", line)
    ]
    assert offenders == []
    assert not hasattr(_portres.Overlapped, "_register_wait")
