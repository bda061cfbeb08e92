"""`portres check` on Windows: who holds the port (GetExtendedTcpTable /
GetExtendedUdpTable with PIDs and image names), WSAEACCES explained by an
excluded or persistent range, the dynamic port range.

The report-building tests run everywhere: they drive the Windows backend's
`check_reasons` (portres._windows) with a stand-in for the C module (the tuples `_portres.port_sockets` gives
on Windows: Linux's state numbers, the PID as owner), so its wording and
grouping are checked on Linux too.  The tests marked windows_only run the
real thing on the Windows CI runners."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from types import SimpleNamespace
from typing import Any, Dict, List

import pytest

from portres import _check, _persistent, _windows

WINDOWS = sys.platform == "win32"
windows_only = pytest.mark.skipif(not WINDOWS, reason="the real Windows tables")

PYTHON_EXE = "C:\\Python312\\python.exe"
LISTEN, ESTABLISHED, TIME_WAIT, CLOSE_WAIT, BOUND = 10, 1, 6, 8, 7


def fake_backend(rows, names=None, error=None, blocks=(), persistent_error=None):
    """A stand-in for portres._portres on Windows."""
    names = names if names is not None else {1234: PYTHON_EXE}
    calls: List[Any] = []

    def port_sockets(protocol, lo, hi):
        calls.append((protocol, lo, hi))
        if error is not None:
            raise error
        return list(rows)

    def process_name(pid):
        return names.get(pid)

    def list_persistent_port_reservations(protocol):
        if persistent_error is not None:
            raise persistent_error
        return list(blocks)

    return SimpleNamespace(
        port_sockets=port_sockets,
        process_name=process_name,
        list_persistent_port_reservations=list_persistent_port_reservations,
        TCP=0,
        UDP=1,
        calls=calls,
    )


def explain(
    monkeypatch, port, protocol="tcp", rows=(), binds=None, blocks=(), names=None, error=None, persistent_error=None
) -> List[Dict[str, Any]]:
    backend = fake_backend(rows, names, error, blocks, persistent_error)
    monkeypatch.setattr(_windows, "_portres", backend)
    try:
        persistent, perr = _windows.persistent_entries(protocol), None
    except OSError as exc:
        persistent, perr = [], exc
    reasons: List[Dict[str, Any]] = []

    def add(kind, message, **extra):
        reasons.append(dict(kind=kind, message=message, **extra))

    _windows.check_reasons(port, protocol, binds or {"IPv4": "ok", "IPv6": "ok"}, add, persistent, perr)
    json.dumps(reasons)  # the --json output must stay serialisable
    assert backend.calls == [(0 if protocol == "tcp" else 1, port, port)]
    return reasons


def kinds(reasons):
    return [r["kind"] for r in reasons]


def test_listener_connections_and_time_wait_are_named_with_process_and_pid(monkeypatch):
    rows = [
        (socket.AF_INET, LISTEN, 8080, 1234, 0),
        (socket.AF_INET6, LISTEN, 8080, 1234, 0),
        (socket.AF_INET, ESTABLISHED, 8080, 1234, 0),
        (socket.AF_INET, ESTABLISHED, 8080, 1234, 0),
        (socket.AF_INET, ESTABLISHED, 8080, 1234, 0),
        (socket.AF_INET, TIME_WAIT, 8080, 0, 0),
        (socket.AF_INET, CLOSE_WAIT, 8080, 777, 0),
    ]
    reasons = explain(
        monkeypatch, 8080, rows=rows, binds={"IPv4": "EADDRINUSE (in use)", "IPv6": "EADDRINUSE (in use)"}
    )
    assert kinds(reasons) == ["listener", "listener", "connection", "time_wait", "connection", "info"]
    v4, v6, est, tw, cw, info = reasons
    assert v4["message"] == (f"in use by a listening IPv4 socket of python.exe (pid 1234, {PYTHON_EXE})")
    assert "listening IPv6 socket of python.exe (pid 1234" in v6["message"]
    assert est["message"] == (
        f"used by an IPv4 connection in state ESTABLISHED of python.exe (pid 1234, {PYTHON_EXE}) (3 of them)"
    )
    assert est["count"] == 3 and est["pid"] == 1234 and est["command"] == "python.exe"
    assert "TIME_WAIT" in tw["message"] and tw["pid"] is None
    assert "pid 777 (its image name is not readable" in cw["message"]
    assert "CLOSE_WAIT" in cw["message"]
    assert "outside Windows's default dynamic (ephemeral) port range 49152-65535" in info["message"]
    assert "netsh int ipv4 show dynamicport tcp" in info["message"]


def test_unknown_mib_state_and_the_system_process(monkeypatch):
    rows = [(socket.AF_INET, 1000 + 100, 80, 4, 0), (socket.AF_INET, LISTEN, 80, 4, 0)]
    reasons = explain(monkeypatch, 80, rows=rows, names={})
    assert kinds(reasons)[:2] == ["connection", "listener"]
    assert "MIB_TCP_STATE 100" in reasons[0]["message"]
    assert "the System process (pid 4" in reasons[1]["message"]
    assert "HTTP.sys" in reasons[1]["message"]
    assert reasons[-1]["message"] == ("ports below 1024 need no privilege on Windows, but services often hold them")


def test_udp_sockets_are_bound(monkeypatch):
    rows = [(socket.AF_INET, BOUND, 53000, 1234, 0), (socket.AF_INET6, BOUND, 53000, 1234, 0)]
    reasons = explain(monkeypatch, 53000, protocol="udp", rows=rows)
    assert kinds(reasons) == ["bound", "bound", "info"]
    assert reasons[0]["message"].startswith("bound by an IPv4 UDP socket of python.exe (pid 1234")
    assert reasons[0]["state"] == "BOUND"
    assert "inside Windows's default dynamic (ephemeral) port range 49152-65535" in reasons[2]["message"]
    assert "netsh int ipv4 show dynamicport udp" in reasons[2]["message"]


def test_wsaeacces_in_a_persistent_block_names_it(monkeypatch):
    binds = {
        "IPv4": "EACCES (An attempt was made to access a socket in a way forbidden by its access permissions)",
        "IPv6": "EACCES (...)",
    }
    reasons = explain(monkeypatch, 50005, binds=binds, blocks=[(40000, 10), (50000, 100)])
    assert kinds(reasons) == ["persistent", "info"]
    r = reasons[0]
    assert r["start"] == 50000 and r["count"] == 100
    assert r["message"].startswith("WSAEACCES (10013): the port is inside the persistent TCP reservation 50000-50099")
    assert "portres.lookup_persistent(50000, 100)" in r["message"]


def test_wsaeacces_outside_any_persistent_block_is_an_excluded_range(monkeypatch):
    binds = {"IPv4": "EACCES (forbidden)", "IPv6": "ok"}
    reasons = explain(monkeypatch, 50200, binds=binds, blocks=[(50000, 100)])
    assert kinds(reasons) == ["excluded", "info"]
    msg = reasons[0]["message"]
    assert msg.startswith("WSAEACCES (10013): the port is most likely inside an excluded range")
    assert "Hyper-V" in msg and "WinNAT" in msg
    assert "netsh int ipv4 show excludedportrange protocol=tcp" in msg


def test_a_persistent_block_is_reported_even_when_the_bind_works(monkeypatch):
    reasons = explain(monkeypatch, 50000, protocol="udp", blocks=[(50000, 1)])
    assert kinds(reasons) == ["persistent", "info"]
    assert reasons[0]["message"].startswith("inside the persistent UDP reservation 50000-50000")


def test_unreadable_tables_and_unlistable_reservations_are_said(monkeypatch):
    err = OSError(0, "The parameter is incorrect", "GetExtendedTcpTable")
    perr = OSError(5, "Access is denied")
    reasons = explain(
        monkeypatch, 50000, error=err, persistent_error=perr, binds={"IPv4": "EADDRINUSE (x)", "IPv6": "ok"}
    )
    assert kinds(reasons) == ["info", "info", "info"]
    assert reasons[0]["message"].startswith("persistent reservations could not be listed (Access is denied)")
    assert reasons[1]["message"] == (
        "the TCP endpoint table could not be read (GetExtendedTcpTable: The parameter is incorrect)"
    )


def test_addrinuse_without_a_socket_in_the_table_points_at_bound_sockets(monkeypatch):
    reasons = explain(monkeypatch, 40000, binds={"IPv4": "EADDRINUSE (x)", "IPv6": "ok"})
    assert kinds(reasons) == ["info", "info"]
    assert "netstat -anoq" in reasons[0]["message"]


def test_explain_on_windows_path_reports_the_holder_not_unknown(monkeypatch):
    rows = [(socket.AF_INET, LISTEN, 8080, 1234, 0)]
    backend = fake_backend(rows)
    monkeypatch.setattr(_windows, "_portres", backend)
    monkeypatch.setattr(_check, "backend", _windows)
    monkeypatch.setattr(_persistent, "backend", _windows)
    monkeypatch.setattr(_check, "_try_bind", lambda port, protocol: {"IPv4": "EADDRINUSE (in use)", "IPv6": "ok"})
    report = _check.explain(8080, "tcp")
    assert report["can_bind"] is False
    assert [r["kind"] for r in report["reasons"]] == ["listener", "info"]
    json.dumps(report)


# ------------------------------------------------------------ real Windows


def _listener(family=socket.AF_INET, host="0.0.0.0"):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.bind((host, 0))
    s.listen()
    return s


@windows_only
def test_port_sockets_finds_our_listener_with_our_pid():
    from portres import _portres

    with _listener() as s:
        port = s.getsockname()[1]
        rows = _portres.port_sockets(_portres.TCP, port, port)
    assert (socket.AF_INET, LISTEN, port, os.getpid(), 0) in rows
    path = _portres.process_name(os.getpid())
    assert isinstance(path, str) and path.lower().endswith(".exe")
    assert _portres.process_name(0) is None


@windows_only
def test_port_sockets_finds_our_udp_socket():
    from portres import _portres

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        rows = _portres.port_sockets(_portres.UDP, port, port)
    assert (socket.AF_INET, BOUND, port, os.getpid(), 0) in rows


@windows_only
def test_cli_check_names_the_listener_process():
    with _listener() as s:
        port = s.getsockname()[1]
        p = subprocess.run(
            [sys.executable, "-m", "portres", "check", str(port), "--json"], capture_output=True, text=True, timeout=60
        )
        text = subprocess.run(
            [sys.executable, "-m", "portres", "check", str(port)], capture_output=True, text=True, timeout=60
        )
    assert p.returncode == 1, p.stderr
    report = json.loads(p.stdout)
    assert report["can_bind"] is False
    listeners = [r for r in report["reasons"] if r["kind"] == "listener"]
    assert any(r["pid"] == os.getpid() and r["family"] == "IPv4" for r in listeners), report
    mine = next(r for r in listeners if r["pid"] == os.getpid())
    assert mine["command"] and mine["command"].lower().endswith(".exe")
    assert f"(pid {os.getpid()}, " in mine["message"]
    assert any("dynamic (ephemeral) port range" in r["message"] for r in report["reasons"])
    assert f"pid {os.getpid()}" in text.stdout
