"""Issue 14: what an operator sees.  `portres list --runtime` and
`portres.list_runtime()` show other processes' runtime reservations, from
the kernel (never a dead process's); `portres check` judges a port by a
server's bind, names the reservation and every socket on it; `--version`;
an unbuilt checkout says what to do; `import portres` stays light.

Every CLI test drives the real command in a subprocess.  Nothing here edits
a sysctl or a file outside a temp dir: no network namespace is needed."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from tests.support import LINUX, child_env

pytestmark = pytest.mark.skipif(not LINUX, reason="the runtime marker and sock_diag are Linux's")

HOLDER = r"""
import os, socket, sys, portres
res = portres.acquire(4, protocol=sys.argv[1])
extra = None
if sys.argv[2] == "serve":
    extra = res.socket()
    if sys.argv[1] == "tcp":
        extra.listen()
print(res.start, flush=True)
sys.stdin.read()   # hold until the test closes our stdin
"""


def cli(*args: str, check_rc: "int | None" = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "portres", *args], capture_output=True, text=True, env=child_env(), timeout=60
    )
    if check_rc is not None:
        assert proc.returncode == check_rc, (proc.returncode, proc.stdout, proc.stderr)
    return proc


class Holder:
    def __init__(self, protocol: str = "tcp", mode: str = "hold") -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, protocol, mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        assert self.proc.stdout is not None
        self.start = int(self.proc.stdout.readline())
        self.pid = self.proc.pid

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture
def holder():
    h = Holder()
    yield h
    if h.proc.poll() is None:
        h.stop()


def test_list_runtime_shows_another_process_block_and_forgets_it_when_it_dies(holder):
    out = json.loads(cli("list", "--runtime", "--json", check_rc=0).stdout)
    comm = open(f"/proc/{holder.pid}/comm").read().strip()
    mine = [r for r in out["reservations"] if r["pid"] == holder.pid]
    assert mine == [
        {
            "pid": holder.pid,
            "process": comm,
            "protocol": "tcp",
            "start": holder.start,
            "count": 4,
            "end": holder.start + 3,
            "in_use": [],
        }
    ]
    text = cli("list", "--runtime", check_rc=0).stdout
    assert f"{holder.pid}" in text and f"{holder.start}  {holder.start + 3}      4" in text, text
    holder.stop()
    out = json.loads(cli("list", "--runtime", "--json", check_rc=0).stdout)
    assert [r for r in out["reservations"] if r["pid"] == holder.pid] == []


def test_list_runtime_api_sees_ports_handed_out_and_filters_protocol():
    h = Holder("udp", "serve")
    try:
        import portres

        found = [r for r in portres.list_runtime() if r.pid == h.pid]
        assert len(found) == 1 and found[0].protocol == "udp" and found[0].start == h.start
        assert found[0].count == 4 and found[0].in_use == (h.start,)
        assert [r for r in portres.list_runtime(protocol="tcp") if r.pid == h.pid] == []
    finally:
        h.stop()


def test_list_runtime_drops_a_closed_block_and_a_marker_with_no_sockets():
    import portres
    from portres import _runtime_linux

    res = portres.acquire(2)
    ours = [r for r in portres.list_runtime() if r.pid == os.getpid()]
    assert [(r.start, r.count) for r in ours] == [(res.start, 2)]
    res.close()
    assert [r for r in portres.list_runtime() if r.pid == os.getpid()] == []
    # A marker line the kernel does not back (no socket of ours on those
    # ports) is never listed: the kernel is the truth, not the marker.  A
    # second memfd named "portres" in this process is read as a marker too.
    fake = os.memfd_create("portres", os.MFD_CLOEXEC)
    try:
        os.write(fake, _runtime_linux.line("tcp", 40100, 3))
        assert [r for r in portres.list_runtime() if r.pid == os.getpid()] == []
    finally:
        os.close(fake)


def test_check_names_another_process_reservation_and_its_placeholder(holder):
    rep = json.loads(cli("check", str(holder.start + 1), "--json", check_rc=1).stdout)
    assert rep["bindable"] is False
    kinds = {r["kind"]: r for r in rep["reasons"]}
    res = kinds["reservation"]
    assert (res["start"], res["count"], res["pid"]) == (holder.start, 4, holder.pid)
    assert f"inside the runtime reservation {holder.start}-{holder.start + 3} (TCP) held by" in res["message"]
    assert f"(pid {holder.pid})" in res["message"] and "not handed out" in res["message"]
    ph = kinds["placeholder"]
    assert ph["pid"] == holder.pid and isinstance(ph["fd"], int) and ph["local"] == "::"
    assert os.readlink(f"/proc/{holder.pid}/fd/{ph['fd']}") == f"socket:[{ph['inode']}]"
    assert "bound before use" not in json.dumps(rep)  # no guessing any more


def test_check_listener_gives_address_pid_process_fd_like_ss():
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen()
    port = lsock.getsockname()[1]
    fd = lsock.fileno()
    try:
        rep = json.loads(cli("check", str(port), "--json").stdout)
        text = cli("check", str(port)).stdout
    finally:
        lsock.close()
    listener = [r for r in rep["reasons"] if r["kind"] == "listener"][0]
    assert listener["local"] == "127.0.0.1" and listener["local_port"] == port
    assert (listener["pid"], listener["fd"]) == (os.getpid(), fd)
    assert listener["process"] == open("/proc/self/comm").read().strip()
    assert f"127.0.0.1:{port}: listening IPv4 socket of {listener['process']} (pid {os.getpid()}, fd " in text


def test_check_time_wait_is_bindable_by_a_server_and_names_the_failing_plain_bind():
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    cl = socket.create_connection(("127.0.0.1", port))
    conn, _ = srv.accept()
    conn.close()  # the server side closes first: its end goes to TIME_WAIT on PORT
    srv.close()
    time.sleep(0.2)
    cl.close()
    proc = cli("check", str(port), "--json")
    rep = json.loads(proc.stdout)
    assert proc.returncode == 0 and rep["bindable"] is True, rep
    kinds = [r["kind"] for r in rep["reasons"]]
    assert "time_wait" in kinds and "plain_bind" in kinds, kinds
    plain = [r for r in rep["reasons"] if r["kind"] == "plain_bind"][0]["message"]
    assert "IPv4 wildcard without SO_REUSEADDR: EADDRINUSE" in plain
    tw = [r for r in rep["reasons"] if r["kind"] == "time_wait"][0]
    assert tw["local"] == "127.0.0.1" and tw["remote"] == "127.0.0.1" and tw["remote_port"] > 0
    # and a real server's bind agrees
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.close()


def test_check_port_zero_and_out_of_range_are_usage_errors():
    zero = cli("check", "0", check_rc=2)
    assert "port 0 is not a port to check" in zero.stderr
    assert "port must be in 0..65535, not 70000" in cli("check", "70000", check_rc=2).stderr
    assert "ends before it starts" in cli("check", "41003-41000", check_rc=2).stderr
    import portres

    with pytest.raises(ValueError, match="not 0"):
        portres.check(0)


def test_check_a_range_reports_each_port(holder):
    rep = json.loads(cli("check", f"{holder.start}-{holder.start + 3}", "--json", check_rc=1).stdout)
    assert [r["port"] for r in rep] == list(range(holder.start, holder.start + 4))
    assert all(not r["bindable"] for r in rep)


def test_public_check_returns_bindable_and_reasons():
    import portres

    s = socket.socket()
    s.bind(("0.0.0.0", 0))
    port = s.getsockname()[1]
    s.close()
    result = portres.check(port)
    assert result.bindable is True and all(isinstance(r, str) for r in result.reasons)
    assert result.reasons == [r["message"] for r in result.report["reasons"]]


def test_version_flag():
    import portres

    assert cli("--version", check_rc=0).stdout.strip() == f"portres {portres.__version__}"


def test_unbuilt_source_tree_says_what_to_do(tmp_path):
    import portres

    src = os.path.dirname(portres.__file__)
    shutil.copytree(src, tmp_path / "portres", ignore=shutil.ignore_patterns("_portres*.so", "__pycache__"))
    # -S: no site, so no installed or editable portres shadows the copy in the cwd
    proc = subprocess.run(
        [sys.executable, "-S", "-c", "import portres"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={k: v for k, v in child_env().items() if k != "PYTHONPATH"},
    )
    assert proc.returncode == 1
    assert "ImportError: portres's C extension (portres._portres) is not built" in proc.stderr
    assert "pip install -e ." in proc.stderr and "run from another directory" in proc.stderr
    assert "circular import" not in proc.stderr


def test_import_portres_loads_no_asyncio_json_pathlib_or_persistent_store():
    code = "import sys; before = set(sys.modules); import portres; print(sorted(m for m in set(sys.modules) - before))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env(), check=True)
    loaded = eval(proc.stdout)  # a list literal printed by the child
    for heavy in ("asyncio", "json", "pathlib", "tempfile", "portres._persistent_linux", "portres._runtime_linux"):
        assert heavy not in loaded, (heavy, loaded)


def test_readme_editable_install_is_visible_to_mypy(tmp_path):
    # The README's install line, done for real into a fresh venv (pip builds
    # it as the README's reader would: setuptools from the package index, as
    # pyproject.toml's build-system asks), then mypy --strict on a file that
    # imports portres from another directory.
    pytest.importorskip("mypy", reason="mypy (requirements-dev.txt) checks the install")
    readme = open(os.path.join(os.path.dirname(__file__), "..", "..", "README.md")).read()
    line = next(ln for ln in readme.splitlines() if ln.startswith("pip install -e"))
    assert "--config-settings editable_mode=strict" in line, line
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    src = tmp_path / "src"
    shutil.copytree(root, src, ignore=shutil.ignore_patterns("build", "*.so", "__pycache__", ".git", "*.egg-info"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    env = {k: v for k, v in child_env().items() if k != "PYTHONPATH"}
    inst = subprocess.run(
        [py, "-m", "pip", "install", "-q", "--no-deps", "-e", str(src),
         "--config-settings", "editable_mode=strict"],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    assert inst.returncode == 0, inst.stderr[-3000:]
    use = tmp_path / "use" / "use.py"
    use.parent.mkdir()
    use.write_text("import portres\n\nres: portres.Reservation = portres.acquire(1)\nres.close()\n")
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--python-executable", py, str(use)],
        capture_output=True, text=True, cwd=use.parent, env=env, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0 and "Success" in out.stdout, out.stdout + out.stderr


def test_the_marker_is_one_descriptor_kept_after_the_last_block():
    # src/linux/marker.c: made with the first block, then kept (no system
    # call per acquire or close); tests/support.open_fds() leaves it out.
    import portres

    def markers() -> int:
        links = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                links.append(os.readlink(f"/proc/self/fd/{fd}"))
            except FileNotFoundError:  # listdir's own descriptor, closed by now
                pass
        return links.count("/memfd:portres (deleted)")

    a = portres.acquire(1)
    b = portres.acquire(1)
    assert markers() == 1
    a.close()
    assert {(r.start, r.count) for r in portres.list_runtime() if r.pid == os.getpid()} == {(b.start, 1)}
    b.close()
    assert markers() == 1
    assert [r for r in portres.list_runtime() if r.pid == os.getpid()] == []
