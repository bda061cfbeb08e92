"""Each place Linux behaviour differs from Windows (docs/platforms.md), shown
as documented."""

import errno
import socket
import subprocess
import sys
import textwrap

import pytest

import portres
from tests.support import as_uid, needs_netns, needs_root, run_in_netns

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux divergences")


def test_sockets_bound_from_a_block_carry_so_reuseport():
    with portres.acquire(1) as res:
        s = res.socket()
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
        s.close()


def test_same_uid_with_so_reuseport_can_share_a_reserved_port():
    # Windows refuses every other program; Linux cannot tell a program of the
    # same uid that sets SO_REUSEPORT from the reservation's owner.
    with portres.acquire(1) as res:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(("0.0.0.0", res.start))
        s.close()
        plain = socket.socket()
        with pytest.raises(OSError) as info:
            plain.bind(("0.0.0.0", res.start))
        assert info.value.errno == errno.EADDRINUSE
        plain.close()


def test_tokens_are_valid_only_in_the_acquiring_process():
    with portres.acquire(1) as res:
        code = textwrap.dedent(f"""
            import socket, portres
            try:
                portres.associate(socket.socket(), {res.token})
            except OSError as e:
                print("refused:", e)
        """)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert "refused:" in out.stdout and "no reservation with token" in out.stdout


@needs_root
def test_privileged_ports_need_cap_net_bind_service():
    def attempt():
        import portres as p

        try:
            p.acquire(2, start=80)
            return "acquired"
        except PermissionError as e:
            return "PermissionError: " + str(e)

    out = as_uid(65534, attempt)
    assert out.startswith("PermissionError") and "CAP_NET_BIND_SERVICE" in out


@needs_netns
def test_persistent_ports_are_kept_from_autobind_but_not_from_explicit_binds(tmp_path):
    out = run_in_netns(
        "platform.persistent_ports_kept_from_autobind",
        env={"PORTRES_STATE_DIR": str(tmp_path)},
    )
    assert sorted(out["auto"]) == list(range(43005, 43010))
