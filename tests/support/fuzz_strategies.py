"""Shared pieces of the bad-input fuzzing (tests/linux/test_fuzz.py, and
tests/netns_scenarios/fuzz.py which runs inside a private network namespace):
hypothesis settings per profile, value strategies, a zoo of socket-ish
objects, and the harness that decides what "failing well" means.

Profiles (env PORTRES_FUZZ_PROFILE):
  quick (default)  200 examples per target, derandomized: the CI run
  deep             1000 examples per target (>= 14 targets: >= 14,000
                   cases), random, with the example database
PORTRES_FUZZ_EXAMPLES=N overrides the count per target.
PORTRES_FUZZ_REPORT=path.json writes how many calls each target made.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import math
import os
import select
import socket
import sys
import threading
from decimal import Decimal
from enum import IntEnum
from fractions import Fraction
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

PROFILE = os.environ.get("PORTRES_FUZZ_PROFILE", "quick")
if PROFILE not in ("quick", "deep"):
    raise SystemExit(f"PORTRES_FUZZ_PROFILE must be quick or deep, not {PROFILE!r}")
EXAMPLES = int(os.environ.get("PORTRES_FUZZ_EXAMPLES", "0")) or {"quick": 200, "deep": 1000}[PROFILE]

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=PROFILE == "quick",
    database=None if PROFILE == "quick" else settings().database,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)
# A stateful run is many calls: fewer runs, each of up to 40 steps.
FUZZ_STATEFUL = settings(FUZZ, max_examples=max(EXAMPLES // 4, 20), stateful_step_count=40)

ROOT = hasattr(os, "geteuid") and os.geteuid() == 0

# ------------------------------------------------------------- counting

CALLS: Dict[str, int] = {}
OUTCOMES: Dict[str, Dict[str, int]] = {}
_count_lock = threading.Lock()


def tally(target: str, outcome: str) -> None:
    with _count_lock:
        CALLS[target] = CALLS.get(target, 0) + 1
        d = OUTCOMES.setdefault(target, {})
        d[outcome] = d.get(outcome, 0) + 1


def write_report(extra: Optional[dict] = None) -> None:
    path = os.environ.get("PORTRES_FUZZ_REPORT")
    if not path:
        return
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        data = {"calls": {}, "outcomes": {}}
    data["calls"].update(CALLS)
    data["outcomes"].update(OUTCOMES)
    data["profile"] = PROFILE
    data["total_calls"] = sum(data["calls"].values())
    if extra:
        data.update(extra)
    with open(path, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)


# ------------------------------------------------------------- values


class Color(IntEnum):
    RED = 1
    HTTP = 80


class MyInt(int):
    pass


class Indexable:
    """Has __index__ but is not an int: not accepted as a port."""

    def __index__(self) -> int:
        return 80

    def __repr__(self) -> str:
        return "Indexable()"


class Boom(Exception):
    """Raised by user code (a fileno() that fails): must propagate as is."""


class EvilStr(str):
    def lower(self) -> str:  # type: ignore[override]
        raise Boom("EvilStr.lower")


EDGE_INTS = [
    0,
    1,
    -1,
    2,
    80,
    1023,
    1024,
    32768,
    60999,
    65534,
    65535,
    65536,
    65537,
    -65535,
    2**15,
    2**16 + 1,
    2**20,
    2**31 - 1,
    2**31,
    -(2**31),
    -(2**31) - 1,
    2**32 - 1,
    2**32,
    2**63 - 1,
    2**63,
    -(2**63),
    -(2**63) - 1,
    2**64 - 1,
    2**64,
    -(2**64),
    2**64 + 1,
    2**128,
    2**1000,
    -(2**1000),
    10**400,
]
EDGE_FLOATS = [
    math.nan,
    -math.nan,
    math.inf,
    -math.inf,
    0.0,
    -0.0,
    0.5,
    1.0,
    1e-9,
    5e-324,
    80.0,
    65535.0,
    1e15,
    9e15,
    1e16,
    1e308,
    1.7976931348623157e308,
    -1.0,
    2.0**63,
]

# 10**5000 has more digits than str() converts by default (CPython 3.11+):
# built, so that hypothesis never needs its repr.
ints = st.one_of(
    st.sampled_from(EDGE_INTS), st.integers(-70000, 70000), st.integers(), st.builds(pow, st.just(10), st.just(5000))
)
floats = st.one_of(st.sampled_from(EDGE_FLOATS), st.floats())
weird = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=12),
    st.binary(max_size=8),
    st.sampled_from(
        [
            "80",
            "tcp",
            "udp",
            "TCP",
            "",
            " ",
            "0x50",
            "\0",
            "\ud800",
            b"tcp",
            bytearray(b"1"),
            [],
            [80],
            (),
            (80,),
            {},
            {80},
            object(),
            Decimal("80"),
            Decimal("NaN"),
            Fraction(1, 2),
            complex(80, 0),
            Color.HTTP,
            Color.RED,
            MyInt(80),
            MyInt(-1),
            MyInt(2**64),
            Indexable(),
            memoryview(b"80"),
            range(3),
            int,
            socket.AF_INET,
            socket.SOCK_STREAM,
            EvilStr("tcp"),
        ]
    ),
)
any_value = st.one_of(ints, floats, weird)

# Small valid values mixed in so that validation passes often enough to
# reach the system calls behind it.
small_count = st.integers(1, 64)


def bounded(strategy: st.SearchStrategy, valid: st.SearchStrategy, weight_valid: int = 1):
    """VALID with probability weight_valid/(weight_valid+1), else STRATEGY."""
    return st.integers(0, weight_valid).flatmap(lambda i: strategy if i == 0 else valid)


# Hosts: IP literals (good and bad), names, junk.  Resolution is made
# hermetic by hermetic_getaddrinfo().
hosts = st.one_of(
    st.sampled_from(
        [
            "",
            "0.0.0.0",
            "127.0.0.1",
            "127.1",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "fe80::1%lo",
            "fe80::1%999",
            "1.2.3.4",
            "255.255.255.255",
            "224.0.0.1",
            "10.255.255.254",
            "1.2.3.4.5",
            "999.1.1.1",
            ":::",
            "::1%",
            "localhost",
            "no.such.host.invalid",
            "a" * 64,
            "a" * 300,
            "a..b",
            ".",
            "-",
            "\0",
            "127.0.0.1\0",
            "\ud800",
            "é.example",
            "xn--",
            " 127.0.0.1",
            "127.0.0.1 ",
            "[::1]",
            "::1/128",
        ]
    ),
    st.text(max_size=40),
    st.text(alphabet="0123456789abcdef:.%[]", max_size=40),
)
any_host = st.one_of(hosts, any_value)


@contextlib.contextmanager
def hermetic_getaddrinfo() -> Iterator[None]:
    """Name lookups never leave the machine: every lookup but of
    'localhost' gets AI_NUMERICHOST (errors keep their real types)."""
    real = socket.getaddrinfo

    def numeric(host, port, family=0, type=0, proto=0, flags=0):
        if host not in ("localhost",):
            flags |= socket.AI_NUMERICHOST
        return real(host, port, family, type, proto, flags)

    socket.getaddrinfo = numeric
    try:
        yield
    finally:
        socket.getaddrinfo = real


# ------------------------------------------------------------- the zoo


class FakeFileno:
    """Anything with a fileno(): returns VALUE (or raises it)."""

    def __init__(self, value: Any, family: Any = None) -> None:
        self.value = value
        if family is not None:
            self.family = family

    def fileno(self) -> Any:
        if isinstance(self.value, BaseException):
            raise self.value
        return self.value

    def __repr__(self) -> str:
        return f"FakeFileno({self.value!r})"


class Lying:
    """A real socket's fileno() with a made-up .family attribute."""

    def __init__(self, sock: socket.socket, family: Any) -> None:
        self._sock = sock
        self.family = family

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()

    def __repr__(self) -> str:
        return f"Lying({self._sock!r}, family={self.family!r})"


def _sock(
    family: int,
    type_: int,
    proto: int = 0,
    v6only: Optional[int] = None,
    bind: Optional[tuple] = None,
    listen: bool = False,
    connect: Optional[tuple] = None,
    close: bool = False,
) -> Callable[[List[Any]], Any]:
    def make(keep: List[Any]) -> Any:
        s = socket.socket(family, type_, proto)
        keep.append(s)
        if v6only is not None:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
        if bind is not None:
            s.bind(bind)
        if listen:
            s.listen()
        if connect is not None:
            s.connect(connect)
        if close:
            s.close()
        return s

    return make


def _pair(type_: int) -> Callable[[List[Any]], Any]:
    def make(keep: List[Any]) -> Any:
        a, b = socket.socketpair(socket.AF_UNIX, type_)
        keep += [a, b]
        return a

    return make


def _pipe(keep: List[Any]) -> Any:
    r, w = os.pipe()
    fr, fw = os.fdopen(r, "rb"), os.fdopen(w, "wb")
    keep += [fr, fw]
    return fr


def _file(path: str, mode: str = "rb") -> Callable[[List[Any]], Any]:
    def make(keep: List[Any]) -> Any:
        f = open(path, mode)
        keep.append(f)
        return f

    return make


def _epoll(keep: List[Any]) -> Any:
    e = select.epoll()
    keep.append(e)
    return e


def _closed_fd(keep: List[Any]) -> Any:
    s = socket.socket()
    fd = s.fileno()
    s.close()  # FakeFileno(fd): a descriptor number no longer open
    return FakeFileno(fd)


def _lying(real: Callable[[List[Any]], Any], family: Any) -> Callable[[List[Any]], Any]:
    def make(keep: List[Any]) -> Any:
        return Lying(real(keep), family)

    return make


def _dup_socket(keep: List[Any]) -> Any:
    s = socket.socket()
    keep.append(s)
    d = socket.socket(fileno=os.dup(s.fileno()))  # same socket, second fd
    keep.append(d)
    return d


ZOO: Dict[str, Callable[[List[Any]], Any]] = {
    "tcp4": _sock(socket.AF_INET, socket.SOCK_STREAM),
    "tcp6": _sock(socket.AF_INET6, socket.SOCK_STREAM),
    "tcp6-v6only": _sock(socket.AF_INET6, socket.SOCK_STREAM, v6only=1),
    "udp4": _sock(socket.AF_INET, socket.SOCK_DGRAM),
    "udp6": _sock(socket.AF_INET6, socket.SOCK_DGRAM),
    "udp6-v6only": _sock(socket.AF_INET6, socket.SOCK_DGRAM, v6only=1),
    "tcp4-nonblocking": lambda keep: (lambda s: (s.setblocking(False), s)[1])(
        _sock(socket.AF_INET, socket.SOCK_STREAM)(keep)
    ),
    "tcp4-bound": _sock(socket.AF_INET, socket.SOCK_STREAM, bind=("127.0.0.1", 0)),
    "udp6-bound": _sock(socket.AF_INET6, socket.SOCK_DGRAM, bind=("::1", 0)),
    "tcp4-listening": _sock(socket.AF_INET, socket.SOCK_STREAM, listen=True),
    "udp4-connected": _sock(socket.AF_INET, socket.SOCK_DGRAM, connect=("127.0.0.1", 9)),
    "tcp4-closed": _sock(socket.AF_INET, socket.SOCK_STREAM, close=True),
    "tcp-dup": _dup_socket,
    "netlink": _sock(socket.AF_NETLINK, socket.SOCK_DGRAM, 0)
    if hasattr(socket, "AF_NETLINK")
    else _sock(socket.AF_INET, socket.SOCK_DGRAM),
    "pipe": _pipe,
    "file": _file(__file__),
    "devnull": _file(os.devnull, "wb"),
    "epoll": _epoll,
    "closed-fd-number": _closed_fd,
    "lying-family-str": _lying(_sock(socket.AF_INET, socket.SOCK_STREAM), "inet"),
    "lying-family-v6": _lying(_sock(socket.AF_INET, socket.SOCK_DGRAM), socket.AF_INET6),
    "lying-pipe-as-inet": lambda keep: Lying(_pipe(keep), socket.AF_INET),
    "fileno-minus-1": lambda keep: FakeFileno(-1),
    "fileno-minus-huge": lambda keep: FakeFileno(-(2**70)),
    "fileno-2**31": lambda keep: FakeFileno(2**31),
    "fileno-2**64": lambda keep: FakeFileno(2**64),
    "fileno-10**6": lambda keep: FakeFileno(10**6),
    "fileno-str": lambda keep: FakeFileno("3"),
    "fileno-float": lambda keep: FakeFileno(3.0),
    "fileno-none": lambda keep: FakeFileno(None),
    "fileno-true": lambda keep: FakeFileno(True),
    "fileno-myint": lambda keep: FakeFileno(MyInt(0)),
    "fileno-raises": lambda keep: FakeFileno(Boom("fileno")),
    "fileno-attr-int": lambda keep: type("NotCallable", (), {"fileno": 3})(),
    "int-fd": lambda keep: 0,
    "none": lambda keep: None,
    "str": lambda keep: "socket",
    "bytes": lambda keep: b"\x03",
}
if hasattr(socket, "AF_UNIX"):  # not on Windows Python: the module must import there
    ZOO.update(
        {
            "unix-stream": _pair(socket.SOCK_STREAM),
            "unix-dgram": _pair(socket.SOCK_DGRAM),
            "unix-seqpacket": _pair(socket.SOCK_SEQPACKET),
            "unix-unbound": _sock(socket.AF_UNIX, socket.SOCK_STREAM),
            "lying-family-unix": _lying(_sock(socket.AF_INET, socket.SOCK_STREAM), socket.AF_UNIX),
            "lying-unix-as-inet": _lying(_sock(socket.AF_UNIX, socket.SOCK_STREAM), socket.AF_INET),
        }
    )
if ROOT:
    ZOO["raw-udp"] = _sock(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
    ZOO["raw-tcp6"] = _sock(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_TCP)
    if hasattr(socket, "AF_PACKET"):
        ZOO["packet-dgram"] = _sock(socket.AF_PACKET, socket.SOCK_DGRAM, 0)
# (No SCTP socket: creating one may load the sctp kernel module on the host.)

INET_SOCKETS = sorted(n for n in ZOO if n.startswith(("tcp", "udp")))
# half the draws are TCP/UDP sockets, so that calls get past the checks
zoo_names = bounded(st.sampled_from(sorted(ZOO)), st.sampled_from(INET_SOCKETS), 1)


@contextlib.contextmanager
def zoo_member(name: str) -> Iterator[Any]:
    keep: List[Any] = []
    try:
        yield ZOO[name](keep)
    finally:
        for obj in keep:
            with contextlib.suppress(Exception):
                obj.close()


# ------------------------------------------------------------- judging

ALLOWED = (TypeError, ValueError, OSError)  # TimeoutError is an OSError

# Defects found by this fuzzing that are not fixed yet: the generic fuzz
# tolerates exactly these signatures (each also has a strict xfail test) so
# it keeps hunting for new ones.  Empty: the ones found (OverflowError from a
# timeout of 10**400 or a fileno() past a C long) are fixed.
KNOWN_DEFECTS: Dict[str, Callable[[BaseException], bool]] = {}


def known_defect(exc: BaseException) -> Optional[str]:
    for name, match in KNOWN_DEFECTS.items():
        if match(exc):
            return name
    return None


# Messages must say which argument/what failed.  Defects that produced
# messages naming nothing (str(10**5000) inside the validator's f-string; the
# idna codec's UnicodeError) are fixed: none tolerated.
MESSAGE_DEFECTS: Dict[str, Callable[[BaseException], bool]] = {}


def judge(target: str, exc: Optional[BaseException], words: Tuple[str, ...] = ()) -> str:
    """Classify one call's outcome; raise AssertionError when it broke the
    contract.  WORDS: for TypeError/ValueError, at least one must appear in
    the message (it names the argument or what is wrong)."""
    if exc is None:
        tally(target, "ok")
        return "ok"
    if isinstance(exc, Boom):
        tally(target, "user-exception")
        return "boom"
    name = known_defect(exc)
    if name:
        tally(target, "known-defect:" + name)
        return name
    if not isinstance(exc, ALLOWED):
        raise AssertionError(f"{target}: undocumented exception {type(exc).__name__}: {exc!r}") from exc
    msg = str(exc)
    if not msg.strip():
        raise AssertionError(f"{target}: {type(exc).__name__} with an empty message")
    if isinstance(exc, OSError) and not isinstance(exc, TimeoutError):
        # an OSError says what failed, not only the system's "[Errno N] strerror"
        if exc.errno is not None and (exc.strerror or "") in ("", os.strerror(exc.errno)):
            raise AssertionError(f"{target}: OSError without a description of the call: {msg!r}")
    for mname, match in MESSAGE_DEFECTS.items():
        if match(exc):
            tally(target, "message-defect:" + mname)
            return mname
    if isinstance(exc, (TypeError, ValueError)) and words:
        low = msg.lower()
        if not any(w in low for w in words):
            raise AssertionError(f"{target}: message names none of {words}: {msg!r}")
    kind = type(exc).__name__
    if isinstance(exc, OSError) and not isinstance(exc, TimeoutError) and exc.errno is not None:
        kind = "OSError:" + errno.errorcode.get(exc.errno, str(exc.errno))
    tally(target, kind)
    return kind


def run(target: str, fn: Callable[[], Any], words: Tuple[str, ...] = ()) -> Tuple[str, Any]:
    """Call fn(); return (outcome, result-or-None)."""
    try:
        result = fn()
    except BaseException as exc:  # noqa: B902 - judged below
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        outcome = judge(target, exc, words)
        del exc
        return outcome, None
    judge(target, None)
    return "ok", result


def call_cli(argv: List[str]) -> Tuple[Any, str, str]:
    """portres.__main__.main(argv) in-process: (rc, stdout, stderr)."""
    from portres import __main__ as cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli.main(list(argv))
        except SystemExit as exc:  # argparse: 2 on a usage error, 0 for --help
            rc = exc.code if isinstance(exc.code, int) else 2
    return rc, out.getvalue(), err.getvalue()


def check_cli(target: str, argv: List[str]) -> Any:
    rc, out, err = call_cli(argv)
    if isinstance(rc, str):
        tally(target, rc)
        return rc
    assert rc in (0, 1, 2, 3), (argv, rc, out, err)
    assert "Traceback" not in out + err, (argv, out, err)
    if rc in (2, 3) or (rc == 1 and argv and argv[0] in ("lookup", "delete")):
        # a usage error or a refusal is explained (bare `portres` prints its help)
        assert err.strip() or '"error"' in out or (not argv and "usage" in out), (argv, rc, out, err)
    tally(target, f"rc{rc}")
    return rc


def short(value: Any, limit: int = 80) -> str:
    """repr() that never fails (ints past 4300 digits) and stays short."""
    try:
        text = repr(value)
    except ValueError:
        text = f"<int of {value.bit_length()} bits>"
    return text if len(text) <= limit else text[:limit] + "..."


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd")) if sys.platform.startswith("linux") else 0


_programs_loaded = False


def _load_udp_programs() -> None:
    """The Linux backend loads its two UDP steering programs once per process
    and keeps their descriptors: load them before the first count."""
    global _programs_loaded
    _programs_loaded = True
    if not sys.platform.startswith("linux"):
        return
    import socket

    import portres

    try:
        with portres.acquire(1, protocol="udp") as res:
            res.socket(socket.AF_INET6).close()  # steered: the second program too
    except OSError:
        pass


class FdGuard:
    """Open descriptor count flat across one example (a gc pass only when
    a plain count differs: reference cycles may hold a socket briefly)."""

    def __enter__(self) -> "FdGuard":
        if not _programs_loaded:
            _load_udp_programs()
        self.before = fd_count()
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:
            return
        after = fd_count()
        if after != self.before:
            import gc

            gc.collect()
            after = fd_count()
        if after != self.before:
            raise AssertionError(f"open descriptors {self.before} -> {after}: something stayed held")
