"""Fuzzing that needs a private network namespace: persistent reservations
(API and CLI add/delete/list/lookup) against a model of
net.ipv4.ip_local_reserved_ports, `portres demo`, and acquire with blocks of
any size and start.  The scenario all_targets() is run by
tests/linux/test_fuzz.py::test_fuzz_in_private_netns through
tests.support.run_in_netns, with PORTRES_STATE_DIR, PORTRES_BOOT_DIR and
PORTRES_SYSCTL_D_FILE pointing to a temp dir.  Refuses to run in the host's
namespace.  Returns a summary: how many calls each target made.
"""

from __future__ import annotations

import os
import socket
import sys

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

import portres
from portres import _persistent_linux as pl
from tests.support.fuzz_strategies import (
    CALLS,
    EXAMPLES,
    FUZZ,
    FUZZ_STATEFUL,
    FdGuard,
    any_value,
    bounded,
    check_cli,
    run,
    tally,
    write_report,
)

RESERVED = "/proc/sys/net/ipv4/ip_local_reserved_ports"
FOREIGN = "1000-1002,20050,50005"


def _guard_namespace() -> None:
    if os.environ.get("PORTRES_STATE_DIR", "/run/portres").startswith("/run/portres"):
        raise SystemExit("tests.netns_scenarios.fuzz: set PORTRES_STATE_DIR to a temp dir")
    # PORTRES_HOST_NETNS: the namespace of whoever started us, as dev-inode
    mine = os.stat("/proc/self/ns/net")
    if os.environ.get("PORTRES_HOST_NETNS", f"{mine.st_dev}-{mine.st_ino}") == f"{mine.st_dev}-{mine.st_ino}":
        raise SystemExit(
            "tests.netns_scenarios.fuzz: run me in a private network namespace: "
            "PORTRES_HOST_NETNS=<dev-inode of the caller's /proc/self/ns/net> unshare --net -- ..."
        )


def sysctl_write(text: str) -> None:
    with open(RESERVED, "w") as f:
        f.write(text)


def kernel() -> set:
    return pl.read_reserved()


FOREIGN_PORTS = pl.parse_ports(FOREIGN)

starts = bounded(any_value, st.integers(20040, 20070), 4)
counts = bounded(any_value, st.integers(1, 6), 4)
protocols = bounded(any_value, st.sampled_from(["tcp", "udp", "UDP"]), 4)
boots = bounded(any_value, st.booleans(), 4)
WORDS = ("start", "count", "protocol", "boot", "block", "port")


def _valid(start, count, protocol) -> bool:
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (start, count))
    return (
        ints
        and isinstance(protocol, str)
        and str.lower(protocol) in ("tcp", "udp")
        and 1 <= start <= 65535
        and 1 <= count <= 65535
        and start + count - 1 <= 65535
    )


class PersistentMachine(RuleBasedStateMachine):
    """The model: our entries {(protocol, start, count): token}; the kernel
    must always hold exactly FOREIGN + the ports of our entries."""

    def __init__(self):
        super().__init__()
        sysctl_write(FOREIGN)
        self.entries = {}
        self.fds = FdGuard().__enter__()

    def _overlaps(self, protocol, start, count):
        block = set(range(start, start + count))
        return any(p == protocol and block & set(range(s, s + c)) for (p, s, c) in self.entries)

    @rule(start=starts, count=counts, protocol=protocols, boot=boots)
    def create(self, start, count, protocol, boot):
        outcome, token = run(
            "persistent.create", lambda: portres.create_persistent(start, count, protocol=protocol, boot=boot), WORDS
        )
        if outcome == "boom":  # an EvilStr protocol: user code raised, nothing changed
            return
        if not (_valid(start, count, protocol) and isinstance(boot, bool)):
            assert outcome != "ok", outcome
            return
        key = (str.lower(protocol), start, count)
        if self._overlaps(*key):
            assert outcome == "OSError:EADDRINUSE", outcome
        else:
            assert outcome == "ok" and 0 < token < 2**64, outcome
            self.entries[key] = token

    @rule(start=starts, count=counts, protocol=protocols)
    def lookup(self, start, count, protocol):
        outcome, token = run(
            "persistent.lookup", lambda: portres.lookup_persistent(start, count, protocol=protocol), WORDS
        )
        if _valid(start, count, protocol) and outcome != "boom":
            key = (str.lower(protocol), start, count)
            if key in self.entries:
                assert outcome == "ok" and token == self.entries[key], outcome
            else:
                assert outcome == "OSError:ENOENT", outcome

    @rule(start=starts, count=counts, protocol=protocols)
    def delete(self, start, count, protocol):
        outcome, _ = run("persistent.delete", lambda: portres.delete_persistent(start, count, protocol=protocol), WORDS)
        if _valid(start, count, protocol) and outcome != "boom":
            key = (str.lower(protocol), start, count)
            if key in self.entries:
                assert outcome == "ok", outcome
                del self.entries[key]
            else:
                assert outcome == "OSError:ENOENT", outcome

    @rule(protocol=protocols)
    def list_(self, protocol):
        outcome, blocks = run("persistent.list", lambda: portres.list_persistent(protocol=protocol), WORDS)
        if outcome == "ok":
            ours = {(s, c) for (p, s, c) in self.entries if p == str.lower(protocol)}
            assert ours <= {tuple(b) for b in blocks}

    @rule(data=st.data())
    def bind_from_a_block(self, data):
        if not self.entries:
            return
        (protocol, start, count), token = data.draw(st.sampled_from(sorted(self.entries.items())))
        with socket.socket(type=socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM) as s:
            portres.associate(s, token)
            port = portres.bind(s, ("127.0.0.1", 0))
            assert start <= port < start + count
        tally("persistent.bind", "ok")

    @invariant()
    def kernel_matches_the_model(self):
        want = set(FOREIGN_PORTS)
        for _p, s, c in self.entries:
            want |= set(range(s, s + c))
        assert kernel() == want, (pl.format_ports(kernel()), pl.format_ports(want))

    def teardown(self):
        for p, s, c in list(self.entries):
            portres.delete_persistent(s, c, protocol=p)
        assert kernel() == FOREIGN_PORTS, pl.format_ports(kernel())
        self.fds.__exit__(None, None, None)


# ------------------------------------------------------------------ the CLI

CLI_WORDS = st.one_of(
    st.sampled_from(
        [
            "add",
            "add",
            "delete",
            "delete",
            "lookup",
            "list",
            "check",
            "demo",
            "--json",
            "--protocol",
            "-p",
            "tcp",
            "udp",
            "--boot",
            "--count",
            "--listeners",
            "20040",
            "20045",
            "20050",
            "20060",
            "1",
            "2",
            "4",
            "0",
            "65535",
            "65536",
            "-1",
            "0x4e48",
            "nan",
            "",
            "\udcff",
        ]
    ),
    st.integers(-5, 20070).map(str),
    st.text(max_size=6),
)


CLI_NUMBER = st.one_of(
    st.sampled_from(["20040", "20045", "20050", "20060", "1", "2", "4", "0", "65535", "65536", "-1", "0x4e48", "nan"]),
    st.integers(-2, 20070).map(str),
)
cli_structured = st.tuples(
    st.sampled_from(["add", "add", "delete", "delete", "lookup", "list", "check", "demo"]),
    st.lists(CLI_NUMBER, min_size=0, max_size=3),
    st.lists(
        st.sampled_from(
            ["--json", "--boot", "-p", "udp", "--protocol=tcp", "--count", "4", "--listeners", "2", "sctp"]
        ),
        max_size=3,
    ),
).map(lambda t: [t[0], *t[1], *t[2]])


def _demo_is_cheap(argv) -> bool:
    # demo probes every port of its block in a child process: keep it small
    nums = [int(a) for a in argv if a.isdigit()]
    return all(n <= 64 for n in nums)


@FUZZ
@given(argv=bounded(st.lists(CLI_WORDS, max_size=6), cli_structured, 3))
def fuzz_cli(argv):
    if argv and argv[0] == "demo" and not _demo_is_cheap(argv):
        argv = ["list"] + argv[1:]
    with FdGuard():
        check_cli("cli.netns", argv)
    # whatever happened, portres's entries and the kernel agree
    ours = set()
    for e in pl.entries():
        if e["source"] == "portres":
            ours |= set(range(e["start"], e["start"] + e["count"]))
    assert kernel() == FOREIGN_PORTS | ours, (argv, pl.format_ports(kernel()), pl.format_ports(ours))


# ------------------------------------------------- acquire, any size and start


@settings(FUZZ, max_examples=max(EXAMPLES // 2, 10))
@given(
    count=bounded(any_value, st.one_of(st.integers(1, 65535), st.sampled_from([28232, 28233, 20000])), 3),
    start=bounded(any_value, st.one_of(st.just(0), st.integers(1, 65535)), 3),
    protocol=st.sampled_from(["tcp", "udp"]),
)
def fuzz_acquire_any_block(count, start, protocol):
    with FdGuard():
        outcome, res = run(
            "acquire.netns",
            lambda: portres.acquire(count, protocol=protocol, start=start),
            ("count", "start", "protocol", "block", "port"),
        )
        if res is not None:
            try:
                assert res.count == count and (start == 0 or res.start == start)
                if start == 0:
                    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
                        lo, hi = map(int, f.read().split())
                    assert lo <= res.start and res.start + count - 1 <= hi
            finally:
                res.close()


def all_targets() -> dict:
    _guard_namespace()
    os.makedirs(os.environ["PORTRES_STATE_DIR"], exist_ok=True)
    run_state_machine_as_test(PersistentMachine, settings=FUZZ_STATEFUL)
    sysctl_write(FOREIGN)
    # demo writes to the real stdout: keep the runner's last line its JSON
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        fuzz_cli()
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(devnull)
    fuzz_acquire_any_block()
    write_report()
    return {"calls": CALLS, "ok": True}
