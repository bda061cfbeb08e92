#!/usr/bin/env python3
"""Fail when a test module would touch a Linux-only API at import, so that
pytest can collect the suite on Windows.

Each test module (and the conftest.py files pytest would import before it)
is imported in a fresh interpreter in which the Linux-only APIs are gone, as
on Windows Python:

  * the modules Windows Python does not have (fcntl, resource, termios, pwd,
    grp, posix, ...) cannot be imported;
  * os, socket, signal and select lose the attributes Windows Python lacks
    (os.fork, os.geteuid, os.sysconf, socket.AF_UNIX, socket.SO_REUSEPORT,
    signal.SIGKILL, signal.pthread_kill, select.epoll, ...);
  * ctypes.util.find_library finds nothing and ctypes.CDLL loads nothing
    (there is no libc.so.6);
  * /proc and /sys do not exist (open, os.open, os.listdir, os.stat, ...);
  * sys.platform is "win32", so the suite's own platform checks (and skip
    marks) take their Windows branch.

The third-party and standard modules the tests import are imported first,
on the real platform (they have Windows branches of their own, which cannot
run here): what is checked is the code of the test modules and of the
helpers they import from tests/.  pytest imports a module as its default
"prepend" import mode does: the first directory above it without an
__init__.py goes first on sys.path.

    python .ci/check_collect_windows.py [--root DIR]    # DIR: the project, default: this one

Exit status 1 and one report per offending module when any fails.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
from typing import Dict, Iterator, List, Set, Tuple

# Run in the child, before the module is imported.  ARGS: JSON [sys.path
# entries, modules to pre-import, [(module name, file)] to import in turn].
CHILD = r"""
import builtins, ctypes, ctypes.util, importlib, io, json, os, select, signal, socket, sys
path_entries, preload, targets = json.loads(sys.argv[1])
for entry in reversed(path_entries):
    sys.path.insert(0, entry)
for name in preload:
    try:
        importlib.import_module(name)
    except Exception:
        pass

LINUX_ONLY_MODULES = ("fcntl", "resource", "termios", "tty", "pty", "pwd", "grp", "spwd", "crypt",
                      "posix", "syslog", "_posixsubprocess", "_posixshmem", "readline", "curses")
for name in LINUX_ONLY_MODULES:
    sys.modules[name] = None   # import raises ImportError

def drop(module, names):
    for name in names:
        if hasattr(module, name):
            delattr(module, name)

drop(os, ["fork", "forkpty", "register_at_fork", "setuid", "setgid", "seteuid", "setegid", "setgroups",
          "getuid", "geteuid", "getgid", "getegid", "getgroups", "initgroups", "setsid", "getpgid",
          "killpg", "sysconf", "sysconf_names", "pipe2", "O_CLOEXEC", "O_NONBLOCK", "WEXITSTATUS",
          "WIFEXITED", "WIFSIGNALED", "WTERMSIG", "wait", "wait3", "wait4", "sched_getaffinity",
          "sched_setaffinity", "getloadavg", "statvfs", "mkfifo", "mknod", "fchown", "chown", "lchown",
          "getrlimit", "memfd_create", "eventfd", "pidfd_open", "splice", "sendfile"])
drop(socket, [n for n in dir(socket) if n.startswith(("AF_UNIX", "AF_NETLINK", "AF_PACKET", "NETLINK_",
                                                     "SO_REUSEPORT", "SOCK_CLOEXEC", "SOCK_NONBLOCK",
                                                     "SO_PEERCRED", "SO_BINDTODEVICE", "SCM_", "CMSG_",
                                                     "SO_ATTACH", "SO_DETACH", "SO_COOKIE", "TCP_CORK",
                                                     "AF_VSOCK", "AF_CAN", "AF_ALG", "AF_TIPC"))]
               + ["sethostname", "if_nameindex", "sendmsg_afalg", "CAN_RAW"])
WINDOWS_SIGNALS = {"SIGABRT", "SIGFPE", "SIGILL", "SIGINT", "SIGSEGV", "SIGTERM", "SIGBREAK",
                   "SIG_DFL", "SIG_IGN", "NSIG", "CTRL_C_EVENT", "CTRL_BREAK_EVENT"}
drop(signal, [n for n in dir(signal) if n.startswith("SIG") and n not in WINDOWS_SIGNALS]
     + ["pthread_kill", "pthread_sigmask", "sigwait", "sigwaitinfo", "sigtimedwait", "sigpending",
        "alarm", "pause", "setitimer", "getitimer", "siginterrupt", "ITIMER_REAL", "ITIMER_VIRTUAL",
        "ITIMER_PROF", "pidfd_send_signal"])
drop(select, ["epoll", "poll", "devpoll", "kqueue", "EPOLLIN", "EPOLLOUT", "POLLIN", "POLLOUT"])

ctypes.util.find_library = lambda name: None
class _NoLibrary:
    def __init__(self, name, *args, **kwargs):
        raise OSError(f"check_collect_windows: no shared library {name!r} on Windows")
    def __getattr__(self, name):
        raise OSError(f"check_collect_windows: no shared library {name!r} on Windows")
ctypes.CDLL = ctypes.PyDLL = _NoLibrary
ctypes.cdll = ctypes.LibraryLoader(_NoLibrary)

def linux_path(path):
    try:
        p = os.fsdecode(os.fspath(path))
    except TypeError:
        return False
    return p == "/proc" or p == "/sys" or p.startswith(("/proc/", "/sys/"))

def guard(fn):
    def wrapper(path, *args, **kwargs):
        if linux_path(path):
            raise FileNotFoundError(2, "check_collect_windows: no such file on Windows", str(path))
        return fn(path, *args, **kwargs)
    return wrapper
builtins.open = io.open = guard(io.open)
for name in ("open", "listdir", "stat", "lstat", "scandir", "readlink", "access"):
    setattr(os, name, guard(getattr(os, name)))
os.path.exists = guard(os.path.exists)

sys.platform = "win32"
failed = []
for name, path in targets:
    try:
        importlib.import_module(name)
    except BaseException as exc:   # pytest would report a collection error
        import traceback
        failed.append((name, path, "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))))
        break
sys.platform = "linux"
print(json.dumps(failed))
"""


def test_modules(root: str) -> Iterator[str]:
    for top, dirs, files in os.walk(os.path.join(root, "tests")):
        dirs[:] = sorted(d for d in dirs if d not in ("__pycache__",) and not d.startswith("."))
        for f in sorted(files):
            if f.startswith("test_") and f.endswith(".py"):
                yield os.path.join(top, f)


def module_name(path: str) -> Tuple[str, str]:
    """(dotted name, sys.path entry) as pytest's prepend import mode."""
    directory, base = os.path.split(os.path.abspath(path))
    parts = [os.path.splitext(base)[0]]
    while os.path.exists(os.path.join(directory, "__init__.py")):
        directory, pkg = os.path.split(directory)
        parts.insert(0, pkg)
    return ".".join(parts), directory


def conftests(root: str, path: str) -> List[str]:
    """The conftest.py files pytest imports before PATH, outermost first."""
    out = []
    directory = os.path.dirname(os.path.abspath(path))
    stop = os.path.abspath(root)
    while True:
        c = os.path.join(directory, "conftest.py")
        if os.path.exists(c):
            out.insert(0, c)
        if directory == stop or os.path.dirname(directory) == directory:
            return out
        directory = os.path.dirname(directory)


def imported_names(root: str) -> Set[str]:
    """Every module imported by a Python file under tests/ that is not part
    of tests/ itself: imported beforehand, on the real platform."""
    local = {os.path.splitext(f)[0] for _, _, files in os.walk(os.path.join(root, "tests")) for f in files}
    local |= {"tests", "conftest"}
    names: Set[str] = {"pytest", "portres"}
    for top, _, files in os.walk(os.path.join(root, "tests")):
        for f in files:
            if not f.endswith(".py"):
                continue
            with open(os.path.join(top, f), encoding="utf-8") as fh:
                tree = ast.parse(fh.read())
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    found = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                elif (
                    isinstance(node, ast.Call)
                    and getattr(node.func, "attr", None) == "importorskip"
                    and node.args
                    and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)
                ):  # pytest.importorskip("trio"): a third-party import too
                    found = [node.args[0].value]
                else:
                    continue
                names.update(n for n in found if n.split(".")[0] not in local)
    return names


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    args = ap.parse_args()
    root = os.path.abspath(args.root)
    preload = sorted(imported_names(root))
    failures: Dict[str, str] = {}
    modules = list(test_modules(root))
    if not modules:
        print(f"check_collect_windows: no test modules under {root}/tests", file=sys.stderr)
        return 1
    for path in modules:
        targets = []
        entries: List[str] = []
        for f in conftests(root, path) + [path]:
            name, entry = module_name(f)
            if entry not in entries:
                entries.append(entry)
            targets.append((name, f))
        p = subprocess.run(
            [sys.executable, "-c", CHILD, json.dumps([entries, preload, targets])],
            capture_output=True,
            text=True,
            cwd=root,
            timeout=300,
        )
        rel = os.path.relpath(path, root)
        if p.returncode != 0:
            failures[rel] = p.stderr or p.stdout
            continue
        failed = json.loads(p.stdout.strip().splitlines()[-1])
        if failed:
            failures[rel] = failed[0][2]
    for rel, why in failures.items():
        print(f"== {rel}: would not be collected on Windows\n{why}")
    print(
        f"check_collect_windows: {len(modules) - len(failures)} of {len(modules)} test modules "
        f"import without a Linux-only API"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
