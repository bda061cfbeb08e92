"""Helpers shared by the test suites (import them as `from tests.support
import ...`): platform flags and skip marks, run code as another uid, try
every bind form, count descriptors, run a scenario of tests/netns_scenarios
inside a private network namespace.

Nothing here touches a Linux-only API at import: the suites must collect on
Windows (.ci/check_collect_windows.py checks it)."""

from __future__ import annotations

import errno
import gc
import json
import os
import socket
import subprocess
import sys
from typing import Any, Dict, Optional

import pytest

LINUX = sys.platform.startswith("linux")
WINDOWS = sys.platform == "win32"
ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
OTHER_UID = 65534  # nobody

needs_root = pytest.mark.skipif(not ROOT, reason="switching to another uid needs root")
linux_only = pytest.mark.skipif(not LINUX, reason="Linux backend behaviour")

# A reservation's protocol -> the socket type of its ports.
KINDS = {"tcp": socket.SOCK_STREAM, "udp": socket.SOCK_DGRAM}


def loopback_usable(family: int, host: str) -> bool:
    """Whether a socket of FAMILY can bind HOST (a loopback address) here."""
    try:
        with socket.socket(family) as s:
            s.bind((host, 0))
        return True
    except OSError:
        return False


def has_ipv6() -> bool:
    return socket.has_ipv6 and loopback_usable(socket.AF_INET6, "::1")


needs_ipv6 = pytest.mark.skipif(not has_ipv6(), reason="no IPv6 loopback on this machine")

# (family, host, IPV6_V6ONLY or None)
BIND_FORMS = {
    "v4-any": (socket.AF_INET, "0.0.0.0", None),
    "v4-loopback": (socket.AF_INET, "127.0.0.1", None),
    "v6-any-dualstack": (socket.AF_INET6, "::", 0),
    "v6-any-v6only": (socket.AF_INET6, "::", 1),
    "v6-loopback": (socket.AF_INET6, "::1", 1),
}
BIND_OPTIONS = {
    "plain": (),
    "SO_REUSEADDR": (socket.SO_REUSEADDR,),
    "SO_REUSEPORT": (socket.SO_REUSEPORT,) if hasattr(socket, "SO_REUSEPORT") else (),
    "both": (socket.SO_REUSEADDR, socket.SO_REUSEPORT) if hasattr(socket, "SO_REUSEPORT") else (),
}


def try_bind(port: int, sock_type: int, form: str, options: str) -> str:
    """Bind a fresh socket to PORT with one form; "ok" or the errno name."""
    family, host, v6only = BIND_FORMS[form]
    s = socket.socket(family, sock_type)
    try:
        if v6only is not None:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
        for opt in BIND_OPTIONS[options]:
            s.setsockopt(socket.SOL_SOCKET, opt, 1)
        s.bind((host, port))
        if sock_type == socket.SOCK_STREAM:
            s.listen()
        return "ok"
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc.errno))
    finally:
        s.close()


def try_all_binds(ports, sock_type: int) -> dict:
    return {
        f"{port}/{form}/{opt}": try_bind(port, sock_type, form, opt)
        for port in ports
        for form in BIND_FORMS
        for opt in BIND_OPTIONS
    }


def import_all_portres() -> None:
    """Import every module of the package that this platform can, before a
    child drops to another uid: portres imports some modules only when first
    needed (import cost), and a checkout or site-packages the root test
    process can read may be closed to that uid."""
    import importlib
    import pkgutil

    import portres

    for info in pkgutil.iter_modules(portres.__path__):
        if info.name == "_windows":  # the other platform's backend (uids are Linux's here)
            continue
        importlib.import_module(f"portres.{info.name}")


def in_child(fn, *args, uid: "Optional[int]" = None):
    """Run fn(*args) in a forked child (running as UID if given); return its
    JSON result.  An exception in the child fails the caller."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            os.close(r)
            if uid is not None:
                import_all_portres()
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
            data = json.dumps({"result": fn(*args)}).encode()
            with os.fdopen(w, "wb") as f:
                f.write(data)
            code = 0
        except BaseException as exc:  # report, never return into pytest
            try:
                os.write(w, json.dumps({"error": repr(exc)}).encode())
            except OSError:
                pass
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    out = json.loads(data.decode() or '{"error": "no output"}')
    if "error" in out:
        who = f"child as uid {uid}" if uid is not None else "forked child"
        raise AssertionError(f"{who} failed: {out['error']}")
    return out["result"]


def as_uid(uid: int, fn, *args):
    """Run fn(*args) in a forked child running as UID; return its JSON result."""
    return in_child(fn, *args, uid=uid)


def other_uid_binds(ports, sock_type: int) -> dict:
    return as_uid(OTHER_UID, try_all_binds, list(ports), sock_type)


def open_fds() -> int:
    """This process's open descriptors, less the ones portres keeps for the
    process's lifetime by design, made at first use whatever the test order:
    the runtime marker (one memfd, src/linux/marker.c) and the two shared
    UDP steering programs (anon_inode:bpf-prog, src/linux/bpf.c).  Neither
    is a leak; every other descriptor counts."""
    gc.collect()
    if not LINUX:
        return 0
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
            if link.startswith("/memfd:portres") or link == "anon_inode:bpf-prog":
                continue
        except OSError:  # the listing's own descriptor, gone now
            continue
        n += 1
    return n


# The directory holding the `tests` package: a child Python started with it
# on its path imports tests.netns_scenarios (and the portres next to it,
# when the suite runs from a source tree).
PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def netns_id() -> str:
    """This process's network namespace, as "dev-inode" of /proc/self/ns/net."""
    st = os.stat("/proc/self/ns/net")
    return f"{st.st_dev}-{st.st_ino}"


def child_env(env: "Optional[Dict[str, str]]" = None) -> Dict[str, str]:
    """os.environ plus ENV, with PROJECT_DIR first on PYTHONPATH."""
    out = dict(os.environ, **(env or {}))
    out["PYTHONPATH"] = os.pathsep.join(p for p in (PROJECT_DIR, out.get("PYTHONPATH", "")) if p)
    return out


def run_in_netns(scenario: str, *args: Any, timeout: float = 120, env: "Optional[Dict[str, str]]" = None) -> Any:
    """Run the scenario function SCENARIO ("module.function" of
    tests/netns_scenarios) with ARGS (JSON values) in a private network
    namespace, so it may change sysctls without touching the host; return
    what it returned (through JSON).  ENV adds environment variables."""
    extra = dict(env or {}, PORTRES_HOST_NETNS=netns_id())
    proc = subprocess.run(
        ["unshare", "--net", "--", sys.executable, "-m", "tests.netns_scenarios", scenario, json.dumps(list(args))],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(extra),
        cwd=PROJECT_DIR,
    )
    if proc.returncode != 0:
        raise AssertionError(f"netns scenario {scenario} failed ({proc.returncode}):\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def netns_available() -> bool:
    if not LINUX or not ROOT:
        return False
    try:
        return subprocess.run(["unshare", "--net", "--", "true"], capture_output=True).returncode == 0
    except OSError:
        return False


needs_netns = pytest.mark.skipif(
    not netns_available(), reason="needs root and unshare(1) to create a private network namespace"
)

# The marks of a module whose tests drive the Linux persistent backend inside
# private network namespaces.
linux_persistent = [
    needs_netns,
    pytest.mark.skipif(not LINUX, reason="Linux persistent backend"),
]


def persistent_env(tmp_path: Any, boot_dir: bool = True) -> Dict[str, str]:
    """The environment that sends portres's persistent bookkeeping (state,
    the sysctl.d file and, with BOOT_DIR, the boot files) to temp dirs under
    TMP_PATH instead of the host's /run and /etc."""
    env = {"PORTRES_STATE_DIR": str(tmp_path / "run")}
    if boot_dir:
        env["PORTRES_BOOT_DIR"] = str(tmp_path / "etc")
    env["PORTRES_SYSCTL_D_FILE"] = str(tmp_path / "sysctl.d" / "99-portres.conf")
    return env


def marker_lines() -> list:
    """The lines of this process's runtime marker (src/linux/marker.c), sorted,
    without the blank (freed) ones; [] when it has none."""
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == "/memfd:portres (deleted)":
                with open(f"/proc/self/fd/{name}", "rb") as f:
                    data = f.read()
                return sorted(x.decode() for x in data.rstrip(b"\0").split(b"\n") if x.strip())
        except OSError:
            pass
    return []
