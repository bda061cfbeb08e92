"""Persistent reservations on Linux (net.ipv4.ip_local_reserved_ports), run
as root inside a private network namespace each test creates: the host's
settings are never touched.  portres's bookkeeping goes to a temp dir."""

import json
import sys
import textwrap

import pytest

from tests.support import needs_netns, run_in_netns

pytestmark = [
    needs_netns,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux persistent backend"),
]


@pytest.fixture
def env(tmp_path):
    return {
        "PORTRES_STATE_DIR": str(tmp_path / "run"),
        "PORTRES_BOOT_DIR": str(tmp_path / "etc"),
        "PORTRES_SYSCTL_D_FILE": str(tmp_path / "sysctl.d" / "99-portres.conf"),
    }


def test_create_lookup_list_bind_delete_round_trip(env):
    out = run_in_netns(
        """
        import portres
        before = sysctl("net.ipv4.ip_local_reserved_ports", "1000-1002,50005")
        token = portres.create_persistent(50000, 10)
        after_create = sysctl("net.ipv4.ip_local_reserved_ports")
        looked = portres.lookup_persistent(50000, 10)
        listed = portres.list_persistent()
        udp_listed = portres.list_persistent(protocol="udp")
        s = socket.socket()
        portres.associate(s, token)
        port = portres.bind(s, ("127.0.0.1", 0))
        t = socket.socket()
        op = portres.associate_nowait(t, token)
        op.result(1)
        port2 = portres.bind(t, ("127.0.0.1", 0))
        s.close(); t.close()
        portres.delete_persistent(50000, 10)
        after_delete = sysctl("net.ipv4.ip_local_reserved_ports")
        try:
            portres.lookup_persistent(50000, 10)
            gone = "still there"
        except OSError as e:
            gone = [e.errno, str(e)]
        print(json.dumps(dict(before=before, token=token, after_create=after_create,
                              looked=looked, listed=listed, udp_listed=udp_listed,
                              port=port, port2=port2, after_delete=after_delete, gone=gone)))
        """,
        env=env,
    )
    assert out["token"] == out["looked"] and 0 < out["token"] < 2**64
    assert out["after_create"] == "1000-1002,50000-50009"
    assert [50000, 10] in out["listed"] and [1000, 3] in out["listed"]
    assert [50000, 10] not in out["udp_listed"] and [1000, 3] in out["udp_listed"]
    assert 50000 <= out["port"] <= 50009 and 50000 <= out["port2"] <= 50009
    assert out["port"] != out["port2"]
    assert out["after_delete"] == out["before"] == "1000-1002,50005"
    assert out["gone"][0] == 2 and "no such persistent reservation" in out["gone"][1]


def test_overlaps_are_refused_per_protocol_and_the_bitmap_is_shared(env):
    out = run_in_netns(
        """
        import portres
        t = portres.create_persistent(40000, 10)
        try:
            portres.create_persistent(40005, 10)
            overlap = "accepted"
        except OSError as e:
            overlap = [e.errno, str(e)]
        u = portres.create_persistent(40005, 10, protocol="udp")   # other protocol: fine
        both = sysctl("net.ipv4.ip_local_reserved_ports")
        portres.delete_persistent(40000, 10)                       # UDP still needs 40005-40009
        after_tcp = sysctl("net.ipv4.ip_local_reserved_ports")
        portres.delete_persistent(40005, 10, protocol="udp")
        print(json.dumps(dict(overlap=overlap, both=both, after_tcp=after_tcp,
                              end=sysctl("net.ipv4.ip_local_reserved_ports"))))
        """,
        env=env,
    )
    assert out["overlap"][0] == 98 and "overlaps the persistent reservation TCP 40000-40009" in out["overlap"][1]
    assert out["both"] == "40000-40014"
    assert out["after_tcp"] == "40005-40014"
    assert out["end"] == ""


def test_32_concurrent_creators_lose_nothing_and_keep_foreign_entries(env):
    out = run_in_netns(
        """
        import portres
        from concurrent.futures import ProcessPoolExecutor
        sysctl("net.ipv4.ip_local_reserved_ports", "2000,2002-2004")
        def create(i):
            import portres
            return portres.create_persistent(30000 + 10 * i, 5, protocol="udp" if i % 2 else "tcp")
        import multiprocessing
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(32) as pool:
            tokens = pool.map(create, range(32))
        kernel = sysctl("net.ipv4.ip_local_reserved_ports")
        found = [portres.lookup_persistent(30000 + 10 * i, 5, protocol="udp" if i % 2 else "tcp")
                 for i in range(32)]
        with ctx.Pool(32) as pool:
            pool.starmap(portres.delete_persistent,
                         [(30000 + 10 * i, 5) for i in range(0, 32, 2)])
        after = sysctl("net.ipv4.ip_local_reserved_ports")
        print(json.dumps(dict(tokens=tokens, found=found, kernel=kernel, after=after)))
        """,
        env=env,
        timeout=300,
    )
    assert out["tokens"] == out["found"] and len(set(out["tokens"])) == 32
    expected = ["2000", "2002-2004"] + [f"{30000 + 10 * i}-{30004 + 10 * i}" for i in range(32)]
    assert out["kernel"] == ",".join(expected)
    expected_after = ["2000", "2002-2004"] + [f"{30000 + 10 * i}-{30004 + 10 * i}" for i in range(1, 32, 2)]
    assert out["after"] == ",".join(expected_after)


def test_unprivileged_caller_gets_permission_error(env):
    out = run_in_netns(
        """
        import portres
        r, w = os.pipe()
        if os.fork() == 0:
            os.setgroups([]); os.setgid(65534); os.setuid(65534)
            try:
                portres.create_persistent(45000, 4)
                res = "created"
            except PermissionError as e:
                res = "PermissionError: " + str(e)
            except Exception as e:
                res = repr(e)
            os.write(w, res.encode()); os._exit(0)
        os.close(w)
        res = os.read(r, 4096).decode(); os.wait()
        print(json.dumps(dict(res=res, kernel=sysctl("net.ipv4.ip_local_reserved_ports"))))
        """,
        env=env,
    )
    assert out["res"].startswith("PermissionError") and "need root" in out["res"]
    assert out["kernel"] == ""


def test_boot_entries_come_back_after_a_simulated_reboot(env):
    out = run_in_netns(
        """
        import glob, portres
        sysctl("net.ipv4.ip_local_reserved_ports", "7000")
        t1 = portres.create_persistent(46000, 4, boot=True)
        t2 = portres.create_persistent(46100, 4)          # not kept at boot
        conf = open(os.environ["PORTRES_SYSCTL_D_FILE"]).read()
        # reboot: /run is empty, the kernel has only what sysctl.d applies
        for f in glob.glob(os.environ["PORTRES_STATE_DIR"] + "/*"):
            os.remove(f)
        line = [l for l in conf.splitlines() if l.startswith("net.")][0]
        sysctl("net.ipv4.ip_local_reserved_ports", line.split("=", 1)[1].strip())
        t1b = portres.lookup_persistent(46000, 4)
        try:
            portres.lookup_persistent(46100, 4); lost = False
        except OSError:
            lost = True
        print(json.dumps(dict(conf=conf, t1=t1, t1b=t1b, lost=lost,
                              kernel=sysctl("net.ipv4.ip_local_reserved_ports"))))
        """,
        env=env,
    )
    assert "net.ipv4.ip_local_reserved_ports = 7000,46000-46003" in out["conf"]
    assert out["t1b"] and out["lost"]
    assert out["kernel"] == "7000,46000-46003"


def test_writer_killed_mid_edit_is_recovered(env):
    # A journal left by a writer killed after writing the sysctl but before
    # committing its bookkeeping: the next writer rolls it forward.
    out = run_in_netns(
        """
        import portres
        from portres import _persistent_linux as pl
        real = pl._write_reserved
        def die_after_write(ports):
            real(ports)
            os._exit(9)
        pid = os.fork()
        if pid == 0:
            pl._write_reserved = die_after_write
            portres.create_persistent(47000, 3)
        _, status = os.waitpid(pid, 0)
        # and one killed before writing the sysctl: rolled back
        pid = os.fork()
        if pid == 0:
            pl._write_reserved = lambda ports: os._exit(9)
            portres.create_persistent(47100, 3)
        os.waitpid(pid, 0)
        t = portres.create_persistent(47200, 3)   # takes the lock, recovers
        listed = portres.list_persistent()
        print(json.dumps(dict(status=os.WEXITSTATUS(status), listed=listed,
                              kernel=sysctl("net.ipv4.ip_local_reserved_ports"),
                              t47000=portres.lookup_persistent(47000, 3))))
        """,
        env=env,
    )
    assert out["status"] == 9
    assert [47000, 3] in out["listed"] and [47100, 3] not in out["listed"]
    assert out["kernel"] == "47000-47002,47200-47202"
    assert out["t47000"]


CLI = """
import subprocess
def cli(*args, user=None):
    if user is None:
        p = subprocess.run([sys.executable, "-m", "portres", *args], capture_output=True, text=True)
        return {"rc": p.returncode, "out": p.stdout, "err": p.stderr}
    # Another uid may not be able to exec this interpreter, nor read its
    # modules (they may live under /root): import everything, fork, switch
    # uid and run the command's entry point.
    import locale, shutil, traceback, portres.__main__, portres._check, portres._persistent_linux
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.setgroups([]); os.setgid(user); os.setuid(user)
        os.dup2(w, 1)
        rc = 99
        try:
            rc = portres.__main__.main(list(args))
        except BaseException:
            import traceback
            traceback.print_exc(file=sys.stdout)
        finally:
            sys.stdout.flush()
            os._exit(rc)
    os.close(w)
    data = b""
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        data += chunk
    _, status = os.waitpid(pid, 0)
    return {"rc": os.WEXITSTATUS(status), "out": data.decode(), "err": ""}
"""


def test_cli_add_list_lookup_delete_with_json(env):
    out = run_in_netns(
        CLI + textwrap.dedent("""
        sysctl("net.ipv4.ip_local_reserved_ports", "3000-3001")
        r = {}
        r["add"] = cli("add", "48000", "8", "--json")
        r["add_udp"] = cli("add", "48100", "2", "--protocol", "udp")
        r["overlap"] = cli("add", "48004", "8")
        r["list"] = cli("list", "--json")
        r["list_text"] = cli("list")
        r["lookup"] = cli("lookup", "48000", "8", "--json")
        r["lookup_missing"] = cli("lookup", "48000", "7")
        r["delete"] = cli("delete", "48000", "8", "--json")
        r["delete_again"] = cli("delete", "48000", "8", "--json")
        r["bad"] = cli("add", "70000", "1")
        r["kernel"] = sysctl("net.ipv4.ip_local_reserved_ports")
        print(json.dumps(r))
        """),
        env=env,
    )
    add = json.loads(out["add"]["out"])
    assert out["add"]["rc"] == 0 and add["start"] == 48000 and add["count"] == 8 and add["token"] > 0
    assert out["add_udp"]["rc"] == 0 and "Reserved UDP ports 48100-48101" in out["add_udp"]["out"]
    assert out["overlap"]["rc"] == 3 and "overlaps" in out["overlap"]["err"]
    listed = json.loads(out["list"]["out"])
    assert {"start": 48000, "count": 8, "token": add["token"]}.items() <= listed[1].items()
    assert listed[0]["start"] == 3000 and listed[0]["source"] == "other"
    assert all(e["protocol"] != "udp" for e in listed)
    assert "48000  48007      8  tcp" in out["list_text"]["out"]
    assert json.loads(out["lookup"]["out"])["token"] == add["token"]
    assert out["lookup_missing"]["rc"] == 1 and "no such persistent reservation" in out["lookup_missing"]["err"]
    assert out["delete"]["rc"] == 0 and json.loads(out["delete"]["out"])["deleted"] is True
    assert out["delete_again"]["rc"] == 1 and json.loads(out["delete_again"]["out"])["errno"] == 2
    assert out["bad"]["rc"] == 2 and "port must be in 0..65535" in out["bad"]["err"]
    assert out["kernel"] == "3000-3001,48100-48101"


def test_cli_check_explains_each_cause(env):
    out = run_in_netns(
        CLI + textwrap.dedent("""
        import portres
        sysctl("net.ipv4.ip_local_port_range", "40000 40999")
        sysctl("net.ipv4.ip_local_reserved_ports", "9000")
        portres.create_persistent(49000, 2)
        res = portres.acquire(2, start=40500)
        listener = socket.socket(); listener.bind(("0.0.0.0", 41000)); listener.listen()
        r = {
          "free": cli("check", "12345", "--json"),
          "portres_persistent": cli("check", "49001", "--json"),
          "foreign_persistent": cli("check", "9000", "--json"),
          "runtime": cli("check", "40501", "--json"),
          "runtime_text": cli("check", "40501"),
          "listener": cli("check", "41000", "--json"),
          "privileged": cli("check", "80", "--json", user=65534),
          "ephemeral": cli("check", "40600", "--json"),
        }
        print(json.dumps(r))
        """),
        env=env,
    )
    rep = {k: json.loads(v["out"]) for k, v in out.items() if k != "runtime_text"}
    kinds = {k: [r["kind"] for r in v["reasons"]] for k, v in rep.items()}
    assert out["free"]["rc"] == 0 and rep["free"]["can_bind"] and "outside the ephemeral range" in rep["free"]["reasons"][-1]["message"]
    assert "persistent" in kinds["portres_persistent"] and "made by portres" in rep["portres_persistent"]["reasons"][0]["message"]
    assert "not made by portres" in rep["foreign_persistent"]["reasons"][0]["message"]
    assert out["runtime"]["rc"] == 1 and not rep["runtime"]["can_bind"] and "bound" in kinds["runtime"]
    assert "python" in out["runtime_text"]["out"] and "runtime reservation" in out["runtime_text"]["out"]
    assert out["listener"]["rc"] == 1 and "listener" in kinds["listener"]
    assert out["privileged"]["rc"] == 1 and "privileged" in kinds["privileged"]
    assert "inside the ephemeral range 40000-40999" in rep["ephemeral"]["reasons"][-1]["message"]
