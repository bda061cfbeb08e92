"""`portres run`: real servers started with sockets from a reservation
(uvicorn --fd 3 reached with curl; a plain socket-activation server), the
block held while they run and released after, signals and exit status."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

import portres
from tests.support import WINDOWS, linux_only, needs_root, other_uid_binds

PORTRES = [sys.executable, "-m", "portres"]

# A server that takes its listener the systemd way: LISTEN_PID must be its
# own pid and LISTEN_FDS the count; fd 3 is the socket.  SIGTERM ends it
# with status 42 (to see both the forwarding and the status propagated).
ACTIVATED_SERVER = textwrap.dedent(
    """
    import http.server, os, signal, socket, sys
    assert os.environ["LISTEN_PID"] == str(os.getpid()), (os.environ["LISTEN_PID"], os.getpid())
    n = int(os.environ["LISTEN_FDS"])
    socks = [socket.socket(fileno=3 + i) for i in range(n)]
    names = os.environ["LISTEN_FDNAMES"].split(":")
    body = ("%s %s %s %s" % (os.getpid(), n, ",".join(names), os.environ["PORTRES_PORTS"])).encode()

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *a):
            pass

    signal.signal(signal.SIGTERM, lambda *a: os._exit(42))
    srv = http.server.HTTPServer(socks[0].getsockname(), H, bind_and_activate=False)
    srv.socket.close()
    srv.socket = socks[0]
    print("argv", *sys.argv[1:], flush=True)
    srv.serve_forever()
    """
)

ASGI_APP = textwrap.dedent(
    """
    async def app(scope, receive, send):
        assert scope["type"] == "http"
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"hello from a reserved port"})
    """
)


def _start(args, cwd):
    proc = subprocess.Popen(
        PORTRES + ["run", "--json", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)),
    )
    line = proc.stdout.readline()
    if not line:
        raise AssertionError(f"portres run printed nothing: {proc.communicate()}")
    return proc, json.loads(line)


def _curl(port, timeout=20):
    out = subprocess.run(
        ["curl", "-sS", "--max-time", str(timeout), f"http://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
        timeout=timeout + 10,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def _stop(proc, sig=signal.SIGTERM):
    proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, out, err


def _released(start, count):
    # no socket holds a port of the block any more: neither a placeholder
    # (bound, state CLOSE) nor a listener; what the served connections leave
    # (TIME_WAIT, FIN_WAIT) belongs to no process and takes no new traffic
    from portres import _portres

    holding = {7, 10}  # TCP_CLOSE (bound, inactive), TCP_LISTEN
    left = [row for row in _portres.port_sockets(_portres.TCP, start, start + count - 1) if row[1] in holding]
    assert not left, left
    return True


needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl (Debian package curl)")


@linux_only
@needs_curl
def test_run_socket_activation_server_reached_with_curl(tmp_path):
    (tmp_path / "server.py").write_text(ACTIVATED_SERVER)
    proc, info = _start(["--tcp", "2", "--", sys.executable, "server.py", "{port}", "{port1}"], tmp_path)
    try:
        socks = info["sockets"]
        assert [s["fd"] for s in socks] == [3, 4]
        ports = [s["port"] for s in socks]
        (block,) = info["reservations"]
        assert ports == list(range(block["start"], block["start"] + 2))
        assert proc.stdout.readline().split() == ["argv", str(ports[0]), str(ports[1])]
        pid, n, names, env_ports = _curl(ports[0]).split()
        assert n == "2" and names == f"tcp-{ports[0]},tcp-{ports[1]}"
        assert env_ports == f"{ports[0]},{ports[1]}"
        # the trampoline exec'd the server: LISTEN_PID (checked by the
        # server) is a child of portres run
        with open(f"/proc/{pid}/stat") as f:
            assert int(f.read().rsplit(")", 1)[1].split()[1]) == proc.pid
        # the second socket listens too
        with socket.create_connection(("127.0.0.1", ports[1]), timeout=5):
            pass
    finally:
        code, _out, err = _stop(proc)
    assert code == 42, err  # SIGTERM forwarded; the server's status is portres's
    assert _released(block["start"], 2)


@linux_only
@needs_root
@needs_curl
def test_run_uvicorn_fd_3_reached_with_curl_and_the_block_is_held(tmp_path):
    pytest.importorskip("uvicorn", reason="uvicorn is in requirements-dev.txt")
    (tmp_path / "asgi_app.py").write_text(ASGI_APP)
    proc, info = _start(
        ["--tcp", "1", "--", sys.executable, "-m", "uvicorn", "--fd", "3", "--log-level", "warning", "asgi_app:app"],
        tmp_path,
    )
    try:
        (sock,) = info["sockets"]
        port = sock["port"]
        assert _curl(port) == "hello from a reserved port"
        # meanwhile no other program can bind the port, in any form
        refused = other_uid_binds([port], socket.SOCK_STREAM)
        assert refused and all(v != "ok" for v in refused.values()), refused
        assert _curl(port) == "hello from a reserved port"
    finally:
        code, _out, err = _stop(proc)
    # uvicorn shuts down on the forwarded SIGTERM, then re-raises it (uvicorn
    # 0.29+): the status is the signal's, propagated
    assert code == 128 + signal.SIGTERM, err
    assert _released(port, 1)


@linux_only
def test_run_udp_socket_and_exit_status(tmp_path):
    script = textwrap.dedent(
        """
        import os, socket, sys
        s = socket.socket(fileno=3)
        assert s.type == socket.SOCK_DGRAM, s
        assert os.environ["LISTEN_FDNAMES"] == "udp-%d" % s.getsockname()[1]
        sys.exit(int(sys.argv[1]))
        """
    )
    (tmp_path / "u.py").write_text(script)
    proc, info = _start(["--udp", "1", "--", sys.executable, "u.py", "5"], tmp_path)
    assert proc.wait(timeout=30) == 5, proc.stderr.read()
    (block,) = info["reservations"]
    assert block["protocol"] == "udp"
    with portres.acquire(1, protocol="udp", start=block["start"]):
        pass


@linux_only
def test_run_sigint_is_forwarded_and_signal_status_reported(tmp_path):
    (tmp_path / "w.py").write_text("import sys, time\nprint('up', flush=True)\ntime.sleep(60)\n")
    proc, _info = _start(["--", sys.executable, "w.py"], tmp_path)
    assert proc.stdout.readline().strip() == "up"
    t0 = time.monotonic()
    code, _out, err = _stop(proc, signal.SIGINT)
    assert time.monotonic() - t0 < 20
    # Python ends itself with SIGINT after an uncaught KeyboardInterrupt
    assert code == 128 + signal.SIGINT and "KeyboardInterrupt" in err
    proc, _info = _start(["--", "sh", "-c", "echo up; exec sleep 60"], tmp_path)
    assert proc.stdout.readline().strip() == "up"
    code, _out, _err = _stop(proc, signal.SIGTERM)
    assert code == 128 + signal.SIGTERM


def test_run_usage_errors():
    def run(*args):
        return subprocess.run(PORTRES + ["run", *args], capture_output=True, text=True, timeout=60)

    out = run()
    assert out.returncode == 2 and "no command given" in out.stderr
    if WINDOWS:
        return
    out = run("--", sys.executable, "-c", "pass", "{port2}")
    assert out.returncode == 2 and "{port2} in the command, but only 1 port reserved" in out.stderr
    out = run("--", "/nonexistent/command")
    assert out.returncode == 127 and "cannot execute '/nonexistent/command'" in out.stderr
    out = run("--tcp", "0", "--", "true")
    assert out.returncode == 2 and "nothing to reserve" in out.stderr


@pytest.mark.skipif(not WINDOWS, reason="the Windows refusal of portres run")
def test_run_on_windows_exits_3_and_says_why():
    out = subprocess.run(
        PORTRES + ["run", "--", sys.executable, "-c", "pass"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 3
    assert "not available on Windows" in out.stderr and "LISTEN_FDS" in out.stderr


def test_substitute():
    from portres._run import substitute

    assert substitute(["a{port}b", "{port1}", "{port0}{port0}", "{x}", "{}"], [10, 11]) == [
        "a10b",
        "11",
        "1010",
        "{x}",
        "{}",
    ]
    with pytest.raises(ValueError, match="only 2 ports reserved"):
        substitute(["{port2}"], [10, 11])


@linux_only
def test_cmd_is_terminated_if_portres_run_dies(tmp_path):
    # the placeholders die with portres run: CMD must not serve on ports
    # that are no longer held, so it gets SIGTERM (PR_SET_PDEATHSIG)
    (tmp_path / "w.py").write_text("import os, time\nprint(os.getpid(), flush=True)\ntime.sleep(120)\n")
    proc, _info = _start(["--", sys.executable, "w.py"], tmp_path)
    child = int(proc.stdout.readline())
    proc.kill()
    proc.wait(timeout=30)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{child}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            break
        if state == "Z":  # ended; waiting for init to reap it
            break
        time.sleep(0.05)
    else:
        os.kill(child, signal.SIGKILL)
        raise AssertionError("CMD outlived portres run")


@linux_only
def test_run_host_ipv6_wildcard_is_dual_stack(tmp_path):
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    script = textwrap.dedent(
        """
        import socket
        s = socket.socket(fileno=3)
        assert s.family == socket.AF_INET6 and s.getsockname()[0] == "::", s
        port = s.getsockname()[1]
        for host in ("127.0.0.1", "::1"):
            socket.create_connection((host, port), timeout=10).close()
            s.accept()[0].close()
        """
    )
    (tmp_path / "d.py").write_text(script)
    proc, info = _start(["--host", "::", "--", sys.executable, "d.py"], tmp_path)
    assert proc.wait(timeout=60) == 0, proc.stderr.read()
    assert info["sockets"][0]["host"] == "::"
