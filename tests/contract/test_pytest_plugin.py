"""The pytest plugin (pytest11 entry point): its fixtures in real pytest
subprocesses (pytester), alone and under pytest-xdist."""

import json
import sys
from importlib import metadata

import pytest

pytest_plugins = ["pytester"]


def test_the_plugin_is_registered_through_pytest11():
    found = metadata.entry_points()
    group = found.select(group="pytest11") if hasattr(found, "select") else found.get("pytest11", [])
    eps = [ep for ep in group if ep.name == "portres"]
    assert [ep.value for ep in eps] == ["portres.pytest_plugin"]


FIXTURE_TESTS = """
import socket, subprocess, sys
import pytest
import portres

made = []

def test_port_reservation(port_reservation):
    assert isinstance(port_reservation, portres.Reservation)
    assert port_reservation.count == 4 and port_reservation.protocol == "tcp"
    assert not port_reservation.closed
    s = port_reservation.socket()
    assert s.getsockname()[1] in port_reservation.ports
    s.close()
    made.append(port_reservation)

def test_factory(port_reservation_factory):
    a = port_reservation_factory(count=2, protocol="udp")
    b = port_reservation_factory(count=3)
    c = port_reservation_factory()
    assert (a.count, a.protocol, b.count, b.protocol, c.count) == (2, "udp", 3, "tcp", 1)
    made.extend([a, b, c])

def test_everything_made_was_closed_at_teardown():
    assert len(made) == 4 and all(r.closed for r in made)
    for r in made:   # and the blocks really are free again
        portres.acquire(r.count, protocol=r.protocol, start=r.start).close()

SERVER = '''
import socket, sys
srv = socket.socket(fileno=int(sys.argv[1]))
conn, _ = srv.accept()
conn.sendall(b"served by pid-owned child")
conn.close()
'''

@pytest.mark.skipif(sys.platform == "win32", reason="pass_fds is POSIX; on Windows a runtime "
                    "reservation is usable only by the process that acquired it")
def test_reserved_listener_served_by_a_subprocess(reserved_listener):
    fd = reserved_listener.fileno()
    port = reserved_listener.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(fd)], pass_fds=[fd])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.settimeout(10)
        data = b""
        while True:
            chunk = c.recv(100)
            if not chunk:
                break
            data += chunk
    assert proc.wait(timeout=30) == 0
    assert data == b"served by pid-owned child"
"""


def test_fixtures_in_a_pytest_subprocess(pytester):
    pytester.makepyfile(test_fixtures=FIXTURE_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-v")
    if sys.platform == "win32":
        result.assert_outcomes(passed=3, skipped=1)
    else:
        result.assert_outcomes(passed=4)


def test_the_plugin_can_be_turned_off(pytester):
    pytester.makepyfile(test_off="def test_x(port_reservation):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:portres")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'port_reservation' not found*"])


XDIST_TESTS = """
import json, os, time, pytest

@pytest.mark.parametrize("i", range(40))
def test_hold(i, port_reservation, port_reservation_factory):
    udp = port_reservation_factory(count=2, protocol="udp")
    t0 = time.monotonic()
    socks = [port_reservation.socket() for _ in range(4)]
    time.sleep(0.02)          # hold it while the other worker runs
    t1 = time.monotonic()
    with open(os.path.join(os.environ["RECORDS"], f"{i}.json"), "w") as f:
        json.dump({"worker": os.environ.get("PYTEST_XDIST_WORKER"), "t0": t0, "t1": t1,
                   "tcp": list(port_reservation.ports), "udp": list(udp.ports),
                   "bound": [s.getsockname()[1] for s in socks]}, f)
    for s in socks:
        s.close()
"""


def test_xdist_workers_never_share_a_port(pytester, tmp_path, monkeypatch):
    pytest.importorskip("xdist", reason="pytest-xdist is in the test extra")
    records = tmp_path / "records"
    records.mkdir()
    monkeypatch.setenv("RECORDS", str(records))
    pytester.makepyfile(test_hold=XDIST_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2")
    result.assert_outcomes(passed=40)
    recs = [json.loads(p.read_text()) for p in records.iterdir()]
    assert len(recs) == 40
    assert {r["worker"] for r in recs} == {"gw0", "gw1"}
    for r in recs:
        assert set(r["bound"]) == set(r["tcp"])
    overlapping = 0
    for i, a in enumerate(recs):
        for b in recs[i + 1 :]:
            if a["t0"] < b["t1"] and b["t0"] < a["t1"]:  # held at the same time
                overlapping += 1
                assert not set(a["tcp"]) & set(b["tcp"]), (a, b)
                assert not set(a["udp"]) & set(b["udp"]), (a, b)
    # CLOCK_MONOTONIC is system-wide on Linux, so the workers' times compare
    if sys.platform.startswith("linux"):
        assert overlapping > 0  # the workers did run side by side
