"""UDP bind forms beyond the everyday ones (issue 11, defect 4): a socket
bound from a block on an IPv4-mapped address, or bound to a device
(SO_BINDTODEVICE), either gets every datagram a plain socket of the same
form gets, or is refused with an error that names the form and leaves the
socket unbound.  Never refused-yet-bound, never bound-yet-deaf; on a fresh
port and on a port that served other forms before."""

from __future__ import annotations

import socket
import time

import pytest

import portres
from conftest import LINUX, ROOT

pytestmark = pytest.mark.skipif(not LINUX, reason="Linux UDP placeholders and SO_BINDTODEVICE")

N = 60
DESTINATIONS = ["127.0.0.1", "::1"]

# name -> (family, host, IPV6_V6ONLY or None, device or None)
BASE = {
    "v4-any": (socket.AF_INET, "0.0.0.0", None, None),
    "v4-loopback": (socket.AF_INET, "127.0.0.1", None, None),
    "v6-any-dualstack": (socket.AF_INET6, "::", 0, None),
    "v6-any-v6only": (socket.AF_INET6, "::", 1, None),
    "v6-loopback": (socket.AF_INET6, "::1", 1, None),
}
MAPPED = {
    "v4mapped-any": (socket.AF_INET6, "::ffff:0.0.0.0", 0, None),
    "v4mapped-loopback": (socket.AF_INET6, "::ffff:127.0.0.1", 0, None),
}
DEVICE = {f"{name}@lo": (fam, host, v6only, "lo") for name, (fam, host, v6only, _) in BASE.items()}
DEVICE.update({f"{name}@lo": (fam, host, v6only, "lo") for name, (fam, host, v6only, _) in MAPPED.items()})
NEW_FORMS = dict(MAPPED, **DEVICE)
ALL_FORMS = dict(BASE, **NEW_FORMS)

needs_device = pytest.mark.skipif(not ROOT, reason="SO_BINDTODEVICE needs CAP_NET_RAW here")


def _new(form: str) -> socket.socket:
    family, _host, v6only, device = ALL_FORMS[form]
    s = socket.socket(family, socket.SOCK_DGRAM)
    if v6only is not None:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
    if device is not None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
    return s


def _received(sock: socket.socket, port: int, n: int) -> dict:
    """Send N datagrams to PORT at each destination; how many SOCK got."""
    got = {}
    sock.settimeout(0.05)
    for dest in DESTINATIONS:
        family = socket.AF_INET6 if ":" in dest else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as tx:
            for i in range(n):
                tx.sendto(b"%d" % i, (dest, port))
        count, end = 0, time.monotonic() + 0.5
        while count < n and time.monotonic() < end:
            try:
                sock.recv(64)
                count += 1
            except socket.timeout:
                pass
        got[dest] = count
    return got


def _plain_gets(form: str) -> dict:
    """What a plain socket of FORM, on a free port outside any block, gets."""
    with _new(form) as s:
        s.bind((ALL_FORMS[form][1], 0))
        return _received(s, s.getsockname()[1], N)


_reference: dict = {}


def _expected(form: str) -> dict:
    if form not in _reference:
        _reference[form] = _plain_gets(form)
    return _reference[form]


def _check_from_block(res, form: str) -> str:
    """Bind a socket of FORM from RES and hold it to the contract; returns
    "bound" or "refused"."""
    want = _expected(form)
    s = _new(form)
    try:
        try:
            port = res.bind(s, ALL_FORMS[form][1])
        except OSError as exc:
            assert s.getsockname()[1] == 0, f"{form}: refused ({exc}) yet left bound"
            msg = str(exc)
            assert ("SO_BINDTODEVICE" in msg if ALL_FORMS[form][3] else ALL_FORMS[form][1] in msg), (
                f"{form}: the refusal does not name the form: {msg}")
            return "refused"
        assert port in res.ports
        got = _received(s, port, N)
        assert got == want, f"{form}: a plain socket gets {want}, the one from the block {got}"
        return "bound"
    finally:
        s.close()


def _params(forms):
    return [pytest.param(f, marks=needs_device) if ALL_FORMS[f][3] else f for f in forms]


@pytest.mark.parametrize("form", _params(NEW_FORMS))
def test_form_on_a_fresh_port_gets_everything_or_is_refused_unbound(form):
    with portres.acquire(1, protocol="udp") as res:
        _check_from_block(res, form)


@pytest.mark.parametrize("form", _params(NEW_FORMS))
def test_form_on_a_port_that_served_every_other_form(form):
    # The block's one port serves each everyday form, then FORM, in turn:
    # the placeholder layout each of them left behind must not make FORM
    # deaf (nor FORM make the next one deaf).
    with portres.acquire(1, protocol="udp") as res:
        for before in BASE:
            assert _check_from_block(res, before) == "bound"
            _check_from_block(res, form)
            assert _check_from_block(res, before) == "bound"

