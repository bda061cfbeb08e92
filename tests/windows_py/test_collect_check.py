""".ci/check_collect_windows.py, which stands in for pytest's collection on
Windows, catches each kind of Linux-only API touched at import and lets a
module through that looks its Linux-only APIs up only where it uses them."""

import os
import subprocess
import sys

import pytest

from tests.support import PROJECT_DIR, WINDOWS

CHECK = os.path.join(PROJECT_DIR, ".ci", "check_collect_windows.py")

pytestmark = [
    pytest.mark.skipif(not os.path.exists(CHECK), reason=".ci/ is not shipped with the sdist or the wheels' tests"),
    pytest.mark.skipif(WINDOWS, reason="on Windows, pytest's own collection is the check"),
]

OFFENDERS = {
    "test_fcntl.py": ("import fcntl\n", "fcntl"),
    "test_libc.py": (
        'import ctypes, ctypes.util\nLIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")\n',
        "no shared library",
    ),
    "test_unix.py": ("import socket\nFAMILY = socket.AF_UNIX\n", "AF_UNIX"),
    "test_proc.py": ('N = len(open("/proc/self/statm").read())\n', "/proc/self/statm"),
    "test_fork.py": ("import os\nFORK = os.fork\n", "fork"),
}
CLEAN = (
    "import os, socket, sys\n"
    'LINUX = sys.platform.startswith("linux")\n'
    "if LINUX:\n"
    "    import fcntl  # noqa: F401\n"
    'ROOT = hasattr(os, "geteuid") and os.geteuid() == 0\n'
    "def test_later():\n"
    "    assert socket.AF_UNIX\n"
)


def test_each_linux_only_api_at_import_fails_the_check_and_a_guarded_module_passes(tmp_path):
    tests = tmp_path / "tests"
    tests.mkdir()
    for name, (code, _) in OFFENDERS.items():
        (tests / name).write_text(code)
    (tests / "test_clean.py").write_text(CLEAN)
    p = subprocess.run([sys.executable, CHECK, "--root", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 1, p.stdout + p.stderr
    reports = {block.split(":", 1)[0]: block for block in p.stdout.split("== tests/")[1:]}
    assert sorted(reports) == sorted(OFFENDERS), p.stdout
    for name, (_, why) in OFFENDERS.items():
        assert why in reports[name], reports[name]
    assert f"1 of {len(OFFENDERS) + 1} test modules import without a Linux-only API" in p.stdout
