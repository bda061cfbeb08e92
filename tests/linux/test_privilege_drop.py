"""Reserve as root, drop to a service uid, then bind (issue 11, defect 5).

A placeholder shares its port only with sockets of its own uid (SO_REUSEPORT).
portres.acquire(..., owner=UID) gives the block's placeholders to UID
(fchown(2) of a socket moves its owner, Linux 4.10+), so a process that
drops to UID after acquire() binds from the block as before.  Without it
the bind is refused with a message that names both uids and what to do,
the socket is left unbound and the block is not spoiled: back as root it
hands out every port.  docs/platforms.md has the row."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import textwrap

import pytest

import portres
from tests.support import LINUX, as_uid, needs_root, try_all_binds

pytestmark = [pytest.mark.skipif(not LINUX, reason="uids and placeholders: Linux"), needs_root]

SERVICE_UID = 65534  # nobody
THIRD_UID = 65533  # another program: must never bind a held port


def _run(script: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_bind_after_the_drop_without_owner_is_refused_clearly_and_spoils_nothing(protocol):
    out = _run(f"""
        import json, os, socket, portres
        res = portres.acquire(4, protocol={protocol!r})
        kind = socket.SOCK_STREAM if {protocol!r} == "tcp" else socket.SOCK_DGRAM
        os.setresgid({SERVICE_UID}, {SERVICE_UID}, 0)
        os.setresuid({SERVICE_UID}, {SERVICE_UID}, 0)   # saved uid 0: root again below
        errors, unbound = [], []
        for attempt in range(6):
            try:
                res.socket(socket.AF_INET6).close()
                errors.append("bound")
            except OSError as exc:
                errors.append([exc.errno, str(exc)])
            s = socket.socket(socket.AF_INET, kind)
            try:
                res.bind(s)
                errors.append("bound")
            except OSError as exc:
                errors.append([exc.errno, str(exc)])
            unbound.append(s.getsockname()[1] == 0)
            s.close()
        os.setresuid(0, 0, 0)
        os.setresgid(0, 0, 0)
        again = [res.socket() for _ in range(4)]
        print(json.dumps({{"errors": errors, "unbound": unbound,
                          "again": sorted(s.getsockname()[1] for s in again),
                          "ports": list(res.ports)}}))
        """)
    assert all(e != "bound" for e in out["errors"]), out["errors"]
    assert all(out["unbound"]), "a refused socket was left bound"
    for code, msg in out["errors"]:
        assert code == errno.EPERM, (code, msg)
        assert "uid 0" in msg and f"uid {SERVICE_UID}" in msg, msg
        assert "owner=" in msg, msg
    assert out["again"] == out["ports"], "the refusals spoiled ports of the block"


@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_owner_lets_the_service_uid_bind_and_nobody_else(protocol):
    script = f"""
        import json, os, select, socket, sys, portres
        proto = {protocol!r}
        res = portres.acquire(4, protocol=proto, owner={SERVICE_UID})
        os.setgroups([])
        os.setresgid({SERVICE_UID}, {SERVICE_UID}, {SERVICE_UID})
        os.setresuid({SERVICE_UID}, {SERVICE_UID}, {SERVICE_UID})   # for good
        got = {{}}
        forms = [(socket.AF_INET6, "", None), (socket.AF_INET, "", None),
                 (socket.AF_INET6, "::", 1), (socket.AF_INET6, "::1", None)]
        for rnd in range(2):   # twice: every port handed out again after the drop
            for family, host, v6only in forms:
                kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
                s = socket.socket(family, kind)
                if v6only is not None:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
                port = res.bind(s, host)
                dest = "::1" if family == socket.AF_INET6 and (v6only or host) else "127.0.0.1"
                fam = socket.AF_INET6 if ":" in dest else socket.AF_INET
                if kind == socket.SOCK_STREAM:
                    s.listen()
                    c = socket.socket(fam, socket.SOCK_STREAM)   # no name lookup: the stdlib
                    c.settimeout(2)                               # may be unreadable as nobody
                    c.connect((dest, port))
                    ok = bool(select.select([s], [], [], 2)[0])
                    c.close()
                else:
                    with socket.socket(fam, socket.SOCK_DGRAM) as tx:
                        for i in range(20):
                            tx.sendto(b"x", (dest, port))
                    s.settimeout(1)
                    n = 0
                    try:
                        while n < 20:
                            s.recv(8); n += 1
                    except socket.timeout:
                        pass
                    ok = n == 20
                got["%d/%d/%s/%s" % (rnd, family, host, v6only)] = ok
                s.close()
        held = [res.socket(socket.AF_INET6) for _ in range(2)]   # two in use, two given back
        print(json.dumps({{"got": got, "ports": list(res.ports)}}), flush=True)
        sys.stdin.readline()   # hold the block while the test probes it
        """
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        out = json.loads(line)
        assert all(out["got"].values()), out["got"]
        sock_type = 1 if protocol == "tcp" else 2
        binds = as_uid(THIRD_UID, try_all_binds, out["ports"], sock_type)
        taken = {k: v for k, v in binds.items() if v != "EADDRINUSE"}
        assert taken == {}, f"a third uid binds held ports: {sorted(taken.items())[:5]}"
    finally:
        proc.stdin.close()
        proc.wait(30)


def test_owner_needs_the_right_to_give_sockets_away():
    # As an unprivileged uid, owner= another uid fails with EPERM naming
    # fchown, and no placeholder is left open.
    def attempt():
        import errno

        from tests.support import open_fds  # leaves out the runtime marker (made once, kept)

        before = open_fds()
        try:
            portres.acquire(4, owner=0)
            return "acquired"
        except OSError as exc:
            if exc.errno != errno.EPERM:
                return repr(exc)
            return ["fchown" in str(exc), str(exc), open_fds() - before]

    out = as_uid(SERVICE_UID, attempt)
    assert out != "acquired"
    assert isinstance(out, list) and out[0], out
    assert out[2] == 0, f"{out[2]} descriptors left open"
