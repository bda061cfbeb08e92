"""Every bad input is refused before any system call, with a clear message,
and leaves nothing held."""

import math
import socket

import pytest

import portres
from tests.support import open_fds


@pytest.fixture
def no_leak():
    before = open_fds()
    yield
    assert open_fds() == before


BAD_COUNTS = [
    (0, ValueError, "count must be in 1..65535"),
    (-1, ValueError, "count must be in 1..65535"),
    (65536, ValueError, "count must be in 1..65535"),
    (2**70, ValueError, "count must be in 1..65535"),
    (1.0, TypeError, "count must be an int"),
    (math.nan, TypeError, "count must be an int"),
    ("4", TypeError, "count must be an int"),
    (True, TypeError, "count must be an int"),
    (None, TypeError, "count must be an int"),
]


@pytest.mark.parametrize("count,exc,msg", BAD_COUNTS)
def test_acquire_rejects_bad_count(count, exc, msg, no_leak):
    with pytest.raises(exc, match=msg):
        portres.acquire(count)


@pytest.mark.parametrize(
    "start,count,exc,msg",
    [
        (-1, 1, ValueError, "start must be in 0..65535"),
        (65536, 1, ValueError, "start must be in 0..65535"),
        (65535, 2, ValueError, "would end at 65536, past 65535"),
        (60000, 6000, ValueError, "past 65535"),
        ("80", 1, TypeError, "start must be an int"),
        (80.0, 1, TypeError, "start must be an int"),
        (False, 1, TypeError, "start must be an int"),
    ],
)
def test_acquire_rejects_bad_block(start, count, exc, msg, no_leak):
    with pytest.raises(exc, match=msg):
        portres.acquire(count, start=start)


@pytest.mark.parametrize(
    "protocol,exc",
    [("sctp", ValueError), ("", ValueError), (6, TypeError), (None, TypeError), (b"tcp", TypeError)],
)
def test_acquire_rejects_bad_protocol(protocol, exc, no_leak):
    with pytest.raises(exc, match="protocol must be 'tcp' or 'udp'"):
        portres.acquire(1, protocol=protocol)


def test_protocol_is_case_insensitive():
    with portres.acquire(1, protocol="UDP") as res:
        assert res.protocol == "udp"


BAD_TOKENS = [
    (0, ValueError, "non-zero unsigned 64-bit"),
    (-1, ValueError, "non-zero unsigned 64-bit"),
    (2**64, ValueError, "non-zero unsigned 64-bit"),
    (2**200, ValueError, "non-zero unsigned 64-bit"),
    (1.5, TypeError, "token must be an int"),
    ("1", TypeError, "token must be an int"),
    (True, TypeError, "token must be an int"),
    (None, TypeError, "token must be an int"),
]


@pytest.mark.parametrize("token,exc,msg", BAD_TOKENS)
def test_associate_and_release_reject_bad_token(token, exc, msg, no_leak):
    with socket.socket() as s:
        with pytest.raises(exc, match=msg):
            portres.associate(s, token)
        with pytest.raises(exc, match=msg):
            portres.release(s, token)


@pytest.mark.parametrize(
    "sock,exc,msg",
    [
        (3, TypeError, "wrap a raw descriptor"),
        (None, TypeError, "must be a socket or have fileno"),
        ("sock", TypeError, "must be a socket or have fileno"),
    ],
)
def test_rejects_non_sockets(sock, exc, msg, no_leak):
    with pytest.raises(exc, match=msg):
        portres.associate(sock, 1)
    with pytest.raises(exc, match=msg):
        portres.bind(sock, ("", 0))
    with pytest.raises(exc, match=msg):
        portres.release(sock, 1)
    with portres.acquire(1) as res:
        with pytest.raises(exc, match=msg):
            res.bind(sock)


def test_rejects_closed_socket(no_leak):
    s = socket.socket()
    s.close()
    with pytest.raises(ValueError, match="closed"):
        portres.associate(s, 1)
    with portres.acquire(1) as res, pytest.raises(ValueError, match="closed"):
        res.bind(s)


def test_rejects_fd_that_is_not_a_socket(tmp_path, no_leak):
    with open(tmp_path / "f", "w") as f:
        with pytest.raises(OSError) as info:
            portres.associate(f, 1)
        assert "associating" in str(info.value)


@pytest.mark.parametrize(
    "timeout,exc",
    [(-1, ValueError), (math.nan, ValueError), ("1", TypeError), (True, TypeError)],
)
def test_associate_rejects_bad_timeout(timeout, exc, no_leak):
    with socket.socket() as s, pytest.raises(exc, match="timeout"):
        portres.associate(s, 1, timeout=timeout)


@pytest.mark.parametrize(
    "address,exc,msg",
    [
        ("127.0.0.1", TypeError, "address must be a tuple"),
        (("127.0.0.1",), ValueError, "AF_INET address is \\(host, port\\)"),
        (("127.0.0.1", 70000), ValueError, "port must be in 0..65535"),
        (("127.0.0.1", -1), ValueError, "port must be in 0..65535"),
        ((b"127.0.0.1", 0), TypeError, "host must be a str"),
        (("127.0.0.1", "80"), TypeError, "port must be an int"),
        (("no.such.host.invalid", 0), ValueError, "cannot resolve host"),
    ],
)
def test_bind_rejects_bad_address(address, exc, msg, no_leak):
    with socket.socket() as s, pytest.raises(exc, match=msg):
        portres.bind(s, address)


def test_reservation_methods_reject_bad_arguments(no_leak):
    with portres.acquire(2) as res:
        with pytest.raises(ValueError, match="family must be"):
            res.socket(family=socket.AF_UNIX)
        with pytest.raises(TypeError, match="family must be an int"):
            res.socket(family="inet")
        with pytest.raises(TypeError, match="host must be a str"):
            res.socket(host=None)
        with pytest.raises(ValueError, match="not an IPv4 address|cannot resolve"):
            res.socket(host="::1")
    with pytest.raises(ValueError, match="is closed"):
        res.socket()
    with socket.socket() as s, pytest.raises(ValueError, match="is closed"):
        res.bind(s)
