"""Scenarios that change sysctls, each a function run inside a private
network namespace by tests.support.run_in_netns (never in the host's: the
runner, `python -m tests.netns_scenarios MODULE.FUNCTION JSON-ARGS`, refuses
to run in the namespace of the test that started it).  A scenario returns a
JSON value; the test asserts on it."""

from __future__ import annotations

from typing import Optional, Union


def sysctl(name: str, value: "Optional[Union[str, int]]" = None) -> str:
    """Read NAME (dotted, e.g. "net.ipv4.ip_local_port_range"), after writing
    VALUE to it if given."""
    path = "/proc/sys/" + name.replace(".", "/")
    if value is not None:
        with open(path, "w") as f:
            f.write(str(value))
    with open(path) as f:
        return f.read().strip()


def simulate_reboot() -> str:
    """Do to this namespace and portres's temp dirs what a reboot does: /run
    (PORTRES_STATE_DIR) comes back empty and the kernel has only what the
    sysctl.d file (PORTRES_SYSCTL_D_FILE) applies.  Returns that file's text."""
    import glob
    import os

    with open(os.environ["PORTRES_SYSCTL_D_FILE"]) as f:
        conf = f.read()
    for name in glob.glob(os.environ["PORTRES_STATE_DIR"] + "/*"):
        os.remove(name)
    line = [entry for entry in conf.splitlines() if entry.startswith("net.")][0]
    sysctl("net.ipv4.ip_local_reserved_ports", line.split("=", 1)[1].strip())
    return conf


def kernel_text(path: str) -> str:
    """One big read of a /proc file: the kernel answers only the first read()."""
    import os

    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 1 << 20).decode().strip()
    finally:
        os.close(fd)
