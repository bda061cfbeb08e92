"""The Windows branches of the error path (portres._errors, _core,
_persistent, the build gate of portres._windows) run here against raw
errors shaped as the C binding raises them on Windows: OSError(errno,
strerror, call, winerror), errno and class as CPython derives them from
winerror.  The shared modules are pointed at the Windows backend; the code
under test is the package's own (issue 15, defects 6, 7, 8, 10)."""

from __future__ import annotations

import errno
import socket
import warnings
from types import SimpleNamespace

import pytest

from portres import _core, _errors, _persistent, _windows


def win_error(winerror, strerror, call):
    """OSError as PyErr_SetExcFromWindowsErrWithFilename builds it on
    Windows: errno from winerror (PC/errmap.h: WSAEACCES/WSAEINVAL/WSAEBADF/
    WSAEMFILE lose 10000, other Winsock codes stay, ERROR_ACCESS_DENIED and
    ERROR_SHARING_VIOLATION are EACCES, the rest EINVAL), class from errno."""
    if 10000 <= winerror < 12000:
        code = winerror - 10000 if winerror in (10004, 10009, 10013, 10014, 10022, 10024) else winerror
    else:
        code = {5: errno.EACCES, 32: errno.EACCES}.get(winerror, errno.EINVAL)
    exc = OSError(code, strerror, call)
    exc.winerror = winerror
    return exc


@pytest.fixture
def windows(monkeypatch):
    for module in (_errors, _core, _persistent):
        monkeypatch.setattr(module, "backend", _windows)
    return monkeypatch


def test_defect_7_no_winerror_is_no_condition(windows):
    plain = OSError(errno.EADDRINUSE, "a Python-level error")
    for condition in _windows.CODES:
        assert not _errors.is_code(plain, condition)


def test_defect_7_each_condition_fires_for_its_winsock_code_only(windows):
    reported = {c: code for c, code in _windows.CODES.items() if code is not None}
    assert len(set(reported.values())) == len(reported)
    for condition, code in reported.items():
        exc = win_error(code, "x", "WSAIoctl(SIO_ASSOCIATE_PORT_RESERVATION)")
        matched = [c for c in _windows.CODES if _errors.is_code(exc, c)]
        assert matched == [condition]


def test_defect_6_error_not_found_is_file_not_found_with_winerror(windows, monkeypatch):
    def lookup(protocol, start, count):
        raise win_error(1168, "Element not found.", "LookupPersistentTcpPortReservation")

    monkeypatch.setattr(_windows, "_portres", SimpleNamespace(lookup_persistent_port_reservation=lookup))
    with pytest.raises(FileNotFoundError) as info:
        _persistent.lookup_persistent(50000, 10)
    assert info.value.winerror == 1168
    assert info.value.errno == errno.ENOENT
    assert info.value.filename == "LookupPersistentTcpPortReservation"
    assert "no persistent reservation has exactly this start and count" in info.value.strerror


def test_defect_6_sharing_violation_is_the_linux_overlap_class(windows, monkeypatch):
    def create(protocol, start, count):
        raise win_error(32, "The process cannot access the file.", "CreatePersistentTcpPortReservation")

    monkeypatch.setattr(_windows, "_portres", SimpleNamespace(create_persistent_port_reservation=create))
    with pytest.raises(OSError) as info:
        _persistent.create_persistent(50000, 10)
    # Linux raises a plain OSError (EADDRINUSE) for an overlap.
    assert type(info.value) is OSError and info.value.errno == errno.EADDRINUSE
    assert info.value.winerror == 32
    assert "overlaps an existing persistent reservation" in info.value.strerror


def test_defect_8_persistent_associate_denied_gets_the_elevation_hint(windows, monkeypatch):
    def associate(fd, token, overlapped=False, owner=None):
        raise win_error(10013, "forbidden", "WSAIoctl(SIO_ASSOCIATE_PORT_RESERVATION)")

    monkeypatch.setattr(_core, "_portres", SimpleNamespace(associate_port_reservation=associate))
    monkeypatch.setattr(_windows, "check_build", lambda: None)
    with socket.socket() as s:
        with pytest.raises(PermissionError) as info:
            _core.associate_nowait(s, 0x1234)
    assert info.value.winerror == 10013
    assert "elevated administrator" in info.value.strerror
    assert "Hyper-V" not in info.value.strerror


def test_defect_10_the_gate_reads_the_real_build(monkeypatch):
    monkeypatch.setattr(_windows, "_portres", SimpleNamespace(windows_build=lambda: (10, 0, 9200)))
    monkeypatch.setattr(_windows, "_build_checked", False)
    with pytest.warns(RuntimeWarning, match="build 9200"):
        _windows.check_build()
    monkeypatch.setattr(_windows, "_portres", SimpleNamespace(windows_build=lambda: (10, 0, 22631)))
    monkeypatch.setattr(_windows, "_build_checked", False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _windows.check_build()


# ------------------------------------------------ the C message audit
# A refusal by a rule of portres's (src/portres.h, "Errors") names the
# operation refused, not a Win32 call, and reads "refused by portres".


def test_a_closed_block_on_windows_is_refused_by_portres_not_by_bind(windows):
    # before: filename "bind", though the backend refused without a call
    exc = win_error(10009, "The file handle supplied is not valid.", "Reservation.bind")
    res = SimpleNamespace(start=50000, count=4, closed=True, protocol="tcp", _res=SimpleNamespace())
    out = _core._bind_error(exc, "binding the socket from the reservation", res)
    assert out.filename == "Reservation.bind" and out.winerror == 10009 and out.errno == errno.EBADF
    assert out.strerror == (
        "binding the socket from the reservation refused by portres: the reservation is closed (EBADF)"
    )


def test_a_taken_block_on_windows_says_the_system_does_not_name_the_port(windows):
    # Windows gives no conflicting port: the message says so instead of guessing one
    exc = win_error(10048, "Only one usage of each socket address is normally permitted.",
                    "WSAIoctl(SIO_ACQUIRE_PORT_RESERVATION)")  # fmt: skip
    out = _core._acquire_error(exc, "tcp", 50000, 4)
    assert out.filename == "WSAIoctl(SIO_ACQUIRE_PORT_RESERVATION)" and out.winerror == 10048
    assert out.strerror.startswith(
        "reserving 4 TCP ports failed: a port of the block 50000-50003 is in use or reserved "
        "(the system does not say which)"
    )
    assert "refused by portres" not in out.strerror


def test_the_ioctls_eopnotsupp_on_a_tcp_socket_blames_the_provider_only(windows):
    # before: "not a TCP/UDP socket ..., or the provider lacks support" for any
    # socket; the socket is checked, and a TCP one leaves the provider
    exc = win_error(10045, "The attempted operation is not supported.", "WSAIoctl(SIO_ASSOCIATE_PORT_RESERVATION)")
    with socket.socket() as s:
        out = _core._associate_error(exc, 0x1234, s.fileno())
    assert out.filename == "WSAIoctl(SIO_ASSOCIATE_PORT_RESERVATION)" and out.winerror == 10045
    assert out.strerror.startswith(
        "associating the socket with the reservation failed: the socket's provider does not support port reservations ("
    )
    assert " or " not in out.strerror.split(" (")[0]
