"""The C layer's error contract (src/portres.h, "Errors") on Linux: every
failure names the real Linux call that failed as the OSError's `filename`,
never a Windows call, and the package keeps it; the one parser of
ip_local_reserved_ports is the one _portres.reserved_ports() exposes."""

from __future__ import annotations

import errno
import os
import socket
import sys

import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the Linux backend's calls")

if sys.platform == "linux":
    import portres
    from portres import _persistent_linux, _portres

WINDOWS_CALLS = ("WSA", "CancelIoEx", "WaitForSingleObject", "RegisterWait", "Persistent")


def _closed_fd() -> int:
    s = socket.socket()
    fd = s.detach()
    os.close(fd)
    return fd


def _assert_linux_call(exc: OSError, call: str) -> None:
    assert exc.filename == call
    assert not str(exc.filename).startswith(WINDOWS_CALLS)


def test_bind_on_a_closed_descriptor_names_fstat():
    with pytest.raises(OSError) as info:
        _portres.bind(_closed_fd(), socket.AF_INET, "127.0.0.1")
    assert info.value.errno == errno.EBADF
    _assert_linux_call(info.value, "fstat")


def test_associate_of_an_unknown_token_names_the_operation_portres_refused():
    # no system call fails: the registry has no such token (src/portres.h, "Errors")
    with socket.socket() as s, pytest.raises(OSError) as info:
        _portres.associate_port_reservation(s.fileno(), 12345)
    assert info.value.errno == errno.ENOENT
    _assert_linux_call(info.value, "portres.associate")


def test_a_taken_block_names_bind_through_the_package_too():
    with portres.acquire(4) as res:
        with pytest.raises(OSError) as raw:
            _portres.acquire_port_reservation(_portres.TCP, res.start, res.count)
        assert raw.value.errno == errno.EADDRINUSE
        assert raw.value.conflict_port == res.start
        _assert_linux_call(raw.value, "bind")
        with pytest.raises(OSError) as explained:  # portres/_errors.py explain()
            portres.acquire(res.count, start=res.start)
        assert explained.value.errno == errno.EADDRINUSE
        assert explained.value.filename == "bind"


def test_a_full_block_names_the_refused_operation():
    with portres.acquire(1) as res, socket.socket() as a, socket.socket() as b:
        res.bind(a, "127.0.0.1")
        with pytest.raises(OSError) as info:
            res.bind(b, "127.0.0.1")
        assert info.value.errno == errno.EADDRINUSE
        assert info.value.filename == "Reservation.bind"  # every port handed out: no bind() made


def test_reserved_ports_is_the_sysctl_parsed_once():
    runs = _portres.reserved_ports()
    assert runs == sorted(runs)
    assert all(0 <= first <= last <= 65535 for first, last in runs)
    # the Python reading of the same sysctl, until it calls this one
    assert runs == _persistent_linux.to_blocks(_persistent_linux.read_reserved())
