"""Persistent reservations on Linux follow what the kernel enforces, never
portres's own notes (issue 12).  One test per defect found by adversarial
testing; each ran against the code before its fix and failed (the failure
is in the test's docstring).  Everything runs as root inside private
network namespaces the tests create; state and boot files go to temp dirs
(the one test that needs the default /etc/sysctl.d path also gets a private
mount namespace with a tmpfs there)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import needs_netns, run_in_netns

pytestmark = [
    needs_netns,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux persistent backend"),
]

PROLOGUE = textwrap.dedent(
    """
    import json, os, socket, subprocess, sys
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    def sysctl(name, value=None):
        path = "/proc/sys/" + name.replace(".", "/")
        if value is not None:
            with open(path, "w") as f:
                f.write(str(value))
        with open(path) as f:
            return f.read().strip()
    def outcome(fn, *args, **kw):
        try:
            return ["ok", fn(*args, **kw)]
        except Exception as e:
            return [type(e).__name__, getattr(e, "errno", None), str(e), getattr(e, "filename", None)]
    """
)


@pytest.fixture
def env(tmp_path):
    return {
        "PORTRES_STATE_DIR": str(tmp_path / "run"),
        "PORTRES_BOOT_DIR": str(tmp_path / "etc"),
        "PORTRES_SYSCTL_D_FILE": str(tmp_path / "sysctl.d" / "99-portres.conf"),
    }


def script(body):
    return PROLOGUE + textwrap.dedent(body)


def in_new_netns(body, env, *, unshare=("--net",), timeout=120):
    """Run SCRIPT in a network namespace of its own (made by unshare(1));
    return the JSON of its last line of output."""
    proc = subprocess.run(["unshare", *unshare, "--", sys.executable, "-c",
                           script(body)],
                          capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **env))
    if proc.returncode != 0:
        raise AssertionError(f"netns script failed ({proc.returncode}):\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


NS_INODE = 'st = os.stat("/proc/self/ns/net"); ino = [st.st_dev, st.st_ino]\n'


# ------------------------------------------------- 1. namespace identity

def test_a_new_namespace_that_reuses_a_dead_ones_inode_starts_empty(env):
    """Before the fix (state keyed by the namespace's inode, which the kernel
    reuses at once): the new namespace listed [50000, 10], looked up the old
    token, refused create_persistent(50000, 10) with EADDRINUSE, and bound
    from the ghost token, while its ip_local_reserved_ports was empty."""
    first = in_new_netns(NS_INODE + textwrap.dedent("""
        import portres
        token = portres.create_persistent(50000, 10)
        print(json.dumps(dict(ino=ino, token=token)))
        """), env)
    second = None
    for _ in range(20):   # the kernel hands the freed inode number out again
        second = in_new_netns(NS_INODE + textwrap.dedent("""
            import portres
            token = %d
            kernel = sysctl("net.ipv4.ip_local_reserved_ports")
            listed = outcome(portres.list_persistent)
            looked = outcome(portres.lookup_persistent, 50000, 10)
            s = socket.socket()
            def assoc_bind():
                portres.associate(s, token)
                return portres.bind(s, ("127.0.0.1", 0))
            bound = outcome(assoc_bind)
            created = outcome(portres.create_persistent, 50000, 10)
            print(json.dumps(dict(ino=ino, kernel=kernel, listed=listed, looked=looked,
                                  bound=bound, created=created)))
            """ % first["token"]), env)
        if second["ino"] == first["ino"]:
            break
    assert second["ino"] == first["ino"], "the kernel never reused the namespace inode"
    assert second["kernel"] == ""
    assert second["listed"] == ["ok", []]
    assert second["looked"][:2] == ["FileNotFoundError", 2], second["looked"]
    assert second["bound"][:2] == ["FileNotFoundError", 2], second["bound"]
    assert second["created"][0] == "ok" and second["created"][1] != first["token"]


# ------------------------------------------- 2. the administrator's edit

def test_an_administrator_clearing_the_sysctl_removes_the_block(env):
    """Before the fix: after `echo > ip_local_reserved_ports` portres still
    listed [50000, 10], looked up its token, `check 50003` said the kernel's
    port choice skips it (made by portres), and associate + bind succeeded."""
    out = run_in_netns(script("""
        import portres
        token = portres.create_persistent(50000, 10)
        sysctl("net.ipv4.ip_local_reserved_ports", "\\n")     # the administrator clears it
        listed = outcome(portres.list_persistent)
        looked = outcome(portres.lookup_persistent, 50000, 10)
        s = socket.socket()
        assoc = outcome(portres.associate, s, token)
        check = subprocess.run([sys.executable, "-m", "portres", "check", "50003", "--json"],
                               capture_output=True, text=True)
        again = outcome(portres.create_persistent, 50000, 10)
        print(json.dumps(dict(listed=listed, looked=looked, assoc=assoc,
                              check=json.loads(check.stdout), again=again,
                              kernel=sysctl("net.ipv4.ip_local_reserved_ports"))))
        """), env=env)
    assert out["listed"] == ["ok", []]
    assert out["looked"][:2] == ["FileNotFoundError", 2], out["looked"]
    assert out["assoc"][:2] == ["FileNotFoundError", 2], out["assoc"]
    assert [r for r in out["check"]["reasons"] if r["kind"] == "persistent"] == [], out["check"]
    assert out["again"][0] == "ok" and out["kernel"] == "50000-50009"


def test_a_block_partly_removed_by_an_administrator_is_gone_and_its_rest_kept(env):
    """The documented partial-block rule: a block whose ports the kernel no
    longer all reserves is gone (lookup, associate and delete refuse its
    token); the ports still reserved are listed as the kernel's own entries
    and portres never removes them.  Before the fix: the block was listed
    and looked up, and delete removed the administrator's remaining ports."""
    out = run_in_netns(script("""
        import portres
        token = portres.create_persistent(50000, 10, protocol="udp")
        sysctl("net.ipv4.ip_local_reserved_ports", "50000-50004,50006-50009")   # 50005 removed
        listed = outcome(portres.list_persistent, protocol="udp")
        looked = outcome(portres.lookup_persistent, 50000, 10, protocol="udp")
        s = socket.socket(type=socket.SOCK_DGRAM)
        assoc = outcome(portres.associate, s, token)
        deleted = outcome(portres.delete_persistent, 50000, 10, protocol="udp")
        after = sysctl("net.ipv4.ip_local_reserved_ports")
        again = outcome(portres.create_persistent, 50000, 10, protocol="udp")
        rm = outcome(portres.delete_persistent, 50000, 10, protocol="udp")
        print(json.dumps(dict(listed=listed, looked=looked, assoc=assoc, deleted=deleted,
                              after=after, again=again, rm=rm,
                              end=sysctl("net.ipv4.ip_local_reserved_ports"))))
        """), env=env)
    assert out["listed"] == ["ok", [[50000, 5], [50006, 4]]], out["listed"]
    assert out["looked"][:2] == ["FileNotFoundError", 2]
    assert out["assoc"][:2] == ["FileNotFoundError", 2]
    assert out["deleted"][:2] == ["FileNotFoundError", 2]
    assert out["after"] == "50000-50004,50006-50009"
    # a new block over them adds only 50005, and its delete removes only that
    assert out["again"][0] == "ok" and out["rm"][0] == "ok"
    assert out["end"] == "50000-50004,50006-50009"


# ---------------------------------------------------- 3. foreign writers

HERE = os.path.dirname(os.path.abspath(__file__))
RACE = """
import sys
sys.path.insert(0, {here!r})
import race_lib
print(json.dumps(race_lib.foreign_writer_race({trials}, seed={seed})))
"""


def test_a_foreign_writer_racing_create_and_delete_never_loses_its_port(env):
    """Another program adds a port (read, add, write) at a random moment of
    a create + delete.  Before the fix: its port vanished in 48 of 200
    trials (the sysctl was read, then the journal fsynced, then written;
    164 of 300 with stress/persistent_race.py).  The stress script runs
    1,000 trials for RELIABILITY.md."""
    out = run_in_netns(RACE.format(here=HERE, trials=200, seed=12), env=env, timeout=600)
    assert out["trials"] == 200 and out["lost"] == 0, out


# ----------------------------------------------------- 4. schema checks

MALFORMED = {
    "null": "null",
    "list": "[]",
    "empty": "{}",
    "no_entries": '{"version": 2, "owned": "", "journal": null}',
    "entry_missing_key": '{"version": 2, "entries": [{"protocol": "tcp", "start": 50000}], '
                         '"owned": "", "journal": null}',
    "start_not_a_number": '{"version": 2, "entries": [{"protocol": "tcp", "start": "x", "count": 2, '
                          '"token": 7, "boot": false}], "owned": "", "journal": null}',
    "token_a_string": '{"version": 2, "entries": [{"protocol": "tcp", "start": 50000, "count": 2, '
                      '"token": "7", "boot": false}], "owned": "", "journal": null}',
    "owned_garbage": '{"version": 2, "entries": [], "owned": "a-b", "journal": null}',
    "journal_a_list": '{"version": 2, "entries": [], "owned": "", "journal": [1]}',
    "not_json": "{entries",
    "not_utf8": b"\xff\xfe{",
}


def test_malformed_state_raises_an_oserror_naming_the_file_and_the_cli_no_traceback(env):
    """Before the fix: AttributeError, KeyError, TypeError or ValueError from
    lookup, list, create and associate(sock, unknown token); the CLI ended
    in a traceback."""
    body = """
        import portres
        from portres import _persistent_linux as pl
        cases = %r
        results = {}
        for name, text in cases.items():
            state, _lock = pl._paths()
            os.makedirs(os.path.dirname(state), exist_ok=True)
            with open(state, "wb") as f:
                f.write(text.encode("latin-1") if isinstance(text, str) else text)
            open(_lock, "a").close()
            s = socket.socket()
            r = dict(
                lookup=outcome(portres.lookup_persistent, 50000, 2),
                list=outcome(portres.list_persistent),
                create=outcome(portres.create_persistent, 50000, 2),
                delete=outcome(portres.delete_persistent, 50000, 2),
                associate=outcome(portres.associate, s, 12345),
                state=state,
            )
            s.close()
            for cmd in (["list"], ["lookup", "50000", "2"], ["add", "50000", "2"],
                        ["delete", "50000", "2"], ["check", "50000"], ["list", "--json"]):
                p = subprocess.run([sys.executable, "-m", "portres", *cmd],
                                   capture_output=True, text=True)
                r["cli " + " ".join(cmd)] = [p.returncode, p.stdout + p.stderr]
            results[name] = r
        print(json.dumps(results))
        """ % ({k: (v if isinstance(v, str) else v.decode("latin-1")) for k, v in MALFORMED.items()},)
    out = run_in_netns(script(body), env=env, timeout=300)
    for name, r in out.items():
        for op in ("lookup", "list", "create", "delete", "associate"):
            kind, errno_, message, filename = (r[op] + [None] * 4)[:4]
            assert kind == "OSError" and errno_ == 5, (name, op, r[op])
            assert filename == r["state"] and r["state"] in message, (name, op, r[op])
            assert "remove" in message or "delete" in message, (name, op, message)  # how to recover
        for cmd, result in r.items():
            if not cmd.startswith("cli "):
                continue
            rc, text = result
            assert "Traceback" not in text, (name, cmd, text)
            if cmd != "cli check 50000":   # check reports what it can, and says the state is unreadable
                assert rc == 3 and r["state"] in text, (name, cmd, rc, text)


# ---------------------------------------------------------- 5. --boot

def test_boot_inside_a_namespace_needs_an_explicit_target(tmp_path):
    """Before the fix: `portres add --boot` inside a network namespace wrote
    the host's /etc/sysctl.d/99-portres.conf.  Here /etc/sysctl.d is a tmpfs
    of a private mount namespace, so the host's is never touched either way."""
    env = {"PORTRES_STATE_DIR": str(tmp_path / "run"), "PORTRES_BOOT_DIR": str(tmp_path / "etc")}
    target = tmp_path / "chosen" / "90-portres.conf"
    out = in_new_netns("""
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/etc/sysctl.d"], check=True)
        def cli(*args):
            p = subprocess.run([sys.executable, "-m", "portres", *args], capture_output=True, text=True)
            return [p.returncode, p.stdout + p.stderr]
        import portres
        refused_api = outcome(portres.create_persistent, 46000, 4, boot=True)
        refused_cli = cli("add", "46000", "4", "--boot")
        written = sorted(os.listdir("/etc/sysctl.d"))
        kernel = sysctl("net.ipv4.ip_local_reserved_ports")
        explicit = cli("add", "46000", "4", "--boot-file", %r)
        conf = open(%r).read()
        print(json.dumps(dict(refused_api=refused_api, refused_cli=refused_cli, written=written,
                              kernel=kernel, explicit=explicit, conf=conf)))
        """ % (str(target), str(target)), env, unshare=("--net", "--mount"))
    assert out["refused_api"][0] == "OSError" and "initial network namespace" in out["refused_api"][2]
    assert "--boot-file" in out["refused_api"][2]
    assert out["refused_cli"][0] == 3 and "Traceback" not in out["refused_cli"][1]
    assert out["written"] == [] and out["kernel"] == ""
    assert out["explicit"][0] == 0, out["explicit"]
    assert "net.ipv4.ip_local_reserved_ports = 46000-46003" in out["conf"]


def test_boot_file_holds_only_portres_boot_blocks_and_the_boot_config_it_overrides(env, tmp_path):
    """Before the fix: the boot file held every entry of the running kernel,
    an administrator's runtime-only 7000 and portres's non-boot 46100-46103
    too.  Now it holds portres's boot blocks plus what the sysctl.d file read
    before it sets (8000-8001 here: this file, read later, would replace it),
    and it is removed with the last boot block."""
    d = tmp_path / "sysctl.d"
    d.mkdir()
    (d / "50-admin.conf").write_text("# theirs\nnet.ipv4.ip_local_reserved_ports = 8000-8001\n")
    out = run_in_netns(script("""
        import portres
        sysctl("net.ipv4.ip_local_reserved_ports", "7000,8000-8001")   # 7000: runtime only
        portres.create_persistent(46000, 4, boot=True)
        portres.create_persistent(46100, 4)                               # not kept at boot
        conf = open(os.environ["PORTRES_SYSCTL_D_FILE"]).read()
        portres.delete_persistent(46000, 4)
        left = sorted(os.listdir(os.path.dirname(os.environ["PORTRES_SYSCTL_D_FILE"])))
        print(json.dumps(dict(conf=conf, left=left)))
        """), env=env)
    line = [x for x in out["conf"].splitlines() if x.startswith("net.")]
    assert line == ["net.ipv4.ip_local_reserved_ports = 8000-8001,46000-46003"], out["conf"]
    assert out["left"] == ["50-admin.conf"]     # no boot block left: portres's file goes


# ------------------------------------- 6. a token outlives its deletion

def test_a_token_deleted_by_another_process_is_refused(env):
    """Before the fix: the C layer cached the token at the first associate
    and only this process's own delete cleared it, so after another process
    deleted the reservation associate + bind still succeeded."""
    out = run_in_netns(script("""
        import portres
        token = portres.create_persistent(50000, 4)
        s = socket.socket()
        portres.associate(s, token)                 # known to this process now
        first = portres.bind(s, ("127.0.0.1", 0))
        p = subprocess.run([sys.executable, "-m", "portres", "delete", "50000", "4"],
                           capture_output=True, text=True)
        t = socket.socket()
        again = outcome(portres.associate, t, token)
        u = socket.socket()
        def nowait():
            portres.associate_nowait(u, token).result(1)
        again_nowait = outcome(nowait)
        print(json.dumps(dict(first=first, rc=p.returncode, again=again, again_nowait=again_nowait)))
        """), env=env)
    assert 50000 <= out["first"] <= 50003 and out["rc"] == 0
    assert out["again"][:2] == ["FileNotFoundError", 2], out["again"]
    assert out["again_nowait"][:2] == ["FileNotFoundError", 2], out["again_nowait"]


STALE = """
import portres
from portres import _persistent_linux as pl
P = "/proc/sys/net/ipv4/ip_local_reserved_ports"
real = pl._pwrite_all
def once_after_our_write(text):
    # another program writes TEXT (the whole list) right after portres's next write
    def pwrite_all(fd, data, offset):
        real(fd, data, offset)
        pl._pwrite_all = real
        with open(P, "w") as f:
            f.write(text)
    pl._pwrite_all = pwrite_all
r = {}
sysctl("net.ipv4.ip_local_reserved_ports", "1000,2000")
once_after_our_write("1000,2000")                   # a copy read before the create
portres.create_persistent(40000, 4)
r["create_stale"] = sysctl("net.ipv4.ip_local_reserved_ports")
once_after_our_write("1000,2000,3000,40000-40003")  # a copy read before the delete, plus its 3000
portres.delete_persistent(40000, 4)
r["delete_stale"] = sysctl("net.ipv4.ip_local_reserved_ports")
portres.create_persistent(40000, 4)
once_after_our_write("1000,2000,3000,40002")        # someone reserves 40002 as soon as it is free
portres.delete_persistent(40000, 4)
r["delete_new_entry"] = sysctl("net.ipv4.ip_local_reserved_ports")
portres.create_persistent(41000, 4)
once_after_our_write("1000,3000,40002,41000-41003")  # 2000 vanishes during portres's edit
portres.delete_persistent(41000, 4)
r["vanished"] = sysctl("net.ipv4.ip_local_reserved_ports")
print(json.dumps(r))
"""


def test_stale_writes_of_the_whole_list_are_undone_and_new_entries_kept(env):
    """The re-read after each write, made deterministic: another program
    writes a whole list right after portres's write.  Before the fix
    (write, read back, compare) the create failed with EIO "did not keep
    what was written (missing 40000-40003)" and left the block unreserved,
    and the delete failed with EIO and left 40000-40003 reserved."""
    out = run_in_netns(script(STALE), env=env)
    assert out["create_stale"] == "1000,2000,40000-40003"          # our block put back
    assert out["delete_stale"] == "1000,2000,3000"                 # removed again, 3000 kept
    assert out["delete_new_entry"] == "1000,2000,3000,40002"       # a new entry is theirs
    assert out["vanished"] == "1000,2000,3000,40002"               # restored


def test_namespace_names_are_cookies_and_the_fallback_is_the_inode(env):
    out = run_in_netns(script("""
        from portres import _persistent_linux as pl
        cookie = pl.netns_id()
        pl.SO_NETNS_COOKIE = 0x7fff          # an option no kernel knows: as before Linux 5.14
        fallback = pl.netns_id()
        st = os.stat("/proc/self/ns/net")
        print(json.dumps(dict(cookie=cookie, fallback=fallback, ino=f"ino-{st.st_dev:x}-{st.st_ino}")))
        """), env=env)
    assert out["cookie"].startswith("cookie-") and int(out["cookie"][7:]) > 0
    assert out["fallback"] == out["ino"]


def test_boot_blocks_restored_after_a_reboot_keep_one_token_in_every_process(env):
    """Before: each reader drew a new random token for a block restored from
    the boot file until some writer saved the state."""
    out = run_in_netns(script("""
        import glob, portres
        portres.create_persistent(46000, 4, boot=True)
        for f in glob.glob(os.environ["PORTRES_STATE_DIR"] + "/*"):
            os.remove(f)                      # reboot: /run is empty, the kernel keeps the ports
        tokens = [portres.lookup_persistent(46000, 4)]
        for _ in range(2):
            p = subprocess.run([sys.executable, "-m", "portres", "lookup", "46000", "4", "--json"],
                               capture_output=True, text=True)
            tokens.append(json.loads(p.stdout)["token"])
        portres.create_persistent(47000, 1)   # a writer saves the state
        tokens.append(portres.lookup_persistent(46000, 4))
        print(json.dumps(tokens))
        """), env=env)
    assert len(set(out)) == 1 and out[0] > 0, out
