"""``portres run``: start a command with sockets bound from a reservation,
under the systemd socket-activation convention.

A runtime reservation belongs to the process that acquired it, so a child
cannot bind its ports itself; handing it the bound sockets is the race-free
way.  ``portres run`` acquires a block per protocol, binds one socket per
port (TCP ones listening), and starts CMD with them as descriptors 3, 4, ...
(TCP first, then UDP) and

    LISTEN_FDS      the number of descriptors passed
    LISTEN_PID      CMD's own pid (sd_listen_fds() ignores the rest otherwise)
    LISTEN_FDNAMES  one name per descriptor, ``tcp-PORT`` / ``udp-PORT``
    PORTRES_PORTS   the ports, comma-separated, in descriptor order

``{port}`` (= ``{port0}``), ``{port1}``, ... in ARGS become those ports.
The block is held until CMD ends; SIGINT, SIGTERM and SIGHUP sent to
``portres run`` are forwarded to CMD, and CMD's exit status is portres's
(128+N when a signal N ended it, as shells report it).  If ``portres run``
itself dies (SIGKILL), CMD gets SIGTERM (Linux: PR_SET_PDEATHSIG), since
the block is no longer held.

LISTEN_PID must be the pid of the program that reads it, which exists only
after the fork.  ``portres run`` therefore starts a tiny trampoline: a
``python -I -S`` that moves the inherited sockets to 3, 4, ..., sets
LISTEN_PID to its own pid and ``execvp``s CMD, which keeps that pid.  This
needs no ``preexec_fn`` (unsafe when threads run, and it cannot change the
environment ``subprocess`` hands to ``execve``) and no shell.

On Windows there is no socket activation (no descriptor numbering that a
child inherits, and a socket is passed with WSADuplicateSocket /
``socket.share`` to a process that must ask for it), so ``portres run``
exits with status 3 and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
from typing import Any, Dict, List, Optional

from ._platform import backend

EXIT_USAGE = 2
EXIT_ERROR = 3
EXIT_NOT_FOUND = 127      # as shells report a command that cannot be found
EXIT_NOT_EXECUTABLE = 126

SD_LISTEN_FDS_START = 3
FORWARDED = ("SIGINT", "SIGTERM", "SIGHUP")

# argv: [-c, PARENT, N, fd_1 .. fd_N, CMD, ARGS...].  On Linux asks for
# SIGTERM when portres run dies (PR_SET_PDEATHSIG, kept across execve): CMD
# must not outlive the reservation, or the ports it serves would no longer be
# held against others (the placeholders die with portres).  Then moves fd_i
# to 3+i-1 without clobbering a source that sits on a target (all are first
# moved above the targets), sets LISTEN_PID to this process's pid, and execs
# CMD.
_TRAMPOLINE = """\
import os, sys
parent = int(sys.argv[1])
n = int(sys.argv[2]); src = [int(a) for a in sys.argv[3:3 + n]]; argv = sys.argv[3 + n:]
if sys.platform.startswith("linux"):
    import ctypes, signal
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(1, int(signal.SIGTERM), 0, 0, 0) != 0:   # PR_SET_PDEATHSIG
        sys.stderr.write("portres run: prctl(PR_SET_PDEATHSIG) failed: %s\\n"
                         % os.strerror(ctypes.get_errno()))
        os._exit(3)
    if os.getppid() != parent:   # portres run died before the prctl
        os._exit(3)
import fcntl
high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3 + n) for fd in src]
for fd in src:
    os.close(fd)
for i, fd in enumerate(high):
    os.dup2(fd, 3 + i, inheritable=True)
    os.close(fd)
os.environ["LISTEN_PID"] = str(os.getpid())
try:
    os.execvp(argv[0], argv)
except OSError as e:
    sys.stderr.write("portres run: cannot execute %r: %s\\n" % (argv[0], e.strerror))
    os._exit(127 if isinstance(e, FileNotFoundError) else 126)
"""

_PLACEHOLDER = re.compile(r"\{port(\d*)\}")


def add_parser(sub: Any, parents: List[argparse.ArgumentParser]) -> None:
    """Register ``run`` on the ``portres`` subparsers SUB."""
    p = sub.add_parser(
        "run", parents=parents,
        help="start a command with sockets bound from a reservation (socket activation)",
        description="Acquire a block per protocol, bind one socket per port (TCP ones "
        "listening) and start CMD with them as descriptors 3, 4, ... (TCP first) under the "
        "systemd socket-activation convention: LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES "
        "(tcp-PORT, udp-PORT); PORTRES_PORTS lists the ports.  {port}/{port0}, {port1}... "
        "in ARGS become the ports.  The block lives as long as CMD; SIGINT/SIGTERM/SIGHUP "
        "are forwarded, and CMD's exit status is returned (128+N if signal N ended it).  "
        "Not available on Windows (exit status 3).",
        epilog="example: portres run --tcp 1 -- uvicorn --fd 3 app:app")
    p.add_argument("--tcp", type=_count0, default=None, metavar="N",
                   help="TCP ports to reserve and listen on (default 1 when --udp is not given)")
    p.add_argument("--udp", type=_count0, default=0, metavar="N", help="UDP ports to reserve and bind")
    p.add_argument("--host", default="",
                   help="address to bind (default: all IPv4 addresses; '::' for IPv6, "
                   "dual-stack where the system allows)")
    p.add_argument("--backlog", type=int, default=128, help="listen() backlog (default 128)")
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ARGS",
                   help="the command to start")


def _count0(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a count: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"count must be in 0..65535, not {value}")
    return value


def substitute(args: List[str], ports: List[int]) -> List[str]:
    """{port}, {port0}, {port1}... in ARGS replaced by PORTS; an index past
    the end raises ValueError."""
    def one(m: "re.Match[str]") -> str:
        i = int(m.group(1) or 0)
        if i >= len(ports):
            raise ValueError(f"{m.group(0)} in the command, but only {len(ports)} "
                             f"port{'s' if len(ports) != 1 else ''} reserved")
        return str(ports[i])
    return [_PLACEHOLDER.sub(one, a) for a in args]


def _family(host: str) -> int:
    if host:
        try:
            socket.inet_pton(socket.AF_INET6, host.split("%", 1)[0])
            return socket.AF_INET6
        except (OSError, ValueError):
            pass
    return socket.AF_INET


def command(args: argparse.Namespace) -> int:
    """The ``portres run`` command; returns the exit status."""
    cmd = list(args.cmd)
    if cmd[:1] == ["--"]:
        cmd = cmd[1:]
    if not cmd:
        print("portres run: no command given (portres run [--tcp N] [--udp N] -- CMD ARGS...)",
              file=sys.stderr)
        return EXIT_USAGE
    if backend.RUN_UNSUPPORTED:
        print(backend.RUN_UNSUPPORTED, file=sys.stderr)
        return EXIT_ERROR
    tcp = args.tcp if args.tcp is not None else (0 if args.udp else 1)
    if tcp + args.udp == 0:
        print("portres run: nothing to reserve (--tcp 0 and --udp 0)", file=sys.stderr)
        return EXIT_USAGE
    return run(cmd, tcp=tcp, udp=args.udp, host=args.host, backlog=args.backlog,
               as_json=args.json)


def run(cmd: List[str], *, tcp: int = 1, udp: int = 0, host: str = "", backlog: int = 128,
        as_json: bool = False) -> int:
    import portres

    family = _family(host)
    reservations = []
    socks: List[socket.socket] = []
    bound: List[Dict[str, Any]] = []
    try:
        try:
            for protocol, n in (("tcp", tcp), ("udp", udp)):
                if not n:
                    continue
                res = portres.acquire(n, protocol=protocol)
                reservations.append(res)
                for _ in range(n):
                    s = res.socket(family, host=host)
                    socks.append(s)
                    if protocol == "tcp":
                        s.listen(backlog)
                    port = s.getsockname()[1]
                    bound.append({"fd": SD_LISTEN_FDS_START + len(bound), "protocol": protocol,
                                  "port": port, "host": host, "name": f"{protocol}-{port}"})
        except (OSError, ValueError) as exc:
            print(f"portres run: {exc}", file=sys.stderr)
            return EXIT_ERROR
        ports = [b["port"] for b in bound]
        try:
            argv = substitute(cmd, ports)
        except ValueError as exc:
            print(f"portres run: {exc}", file=sys.stderr)
            return EXIT_USAGE
        if as_json:
            print(json.dumps({"sockets": bound, "command": argv,
                              "reservations": [{"protocol": r.protocol, "start": r.start,
                                                "count": r.count} for r in reservations]}),
                  flush=True)
        env = dict(os.environ)
        env.pop("LISTEN_PID", None)
        env.update(LISTEN_FDS=str(len(socks)),
                   LISTEN_FDNAMES=":".join(b["name"] for b in bound),
                   PORTRES_PORTS=",".join(map(str, ports)))
        fds = [s.fileno() for s in socks]
        tramp = [sys.executable, "-I", "-S", "-c", _TRAMPOLINE, str(os.getpid()), str(len(fds)),
                 *map(str, fds), *argv]
        return _spawn_and_wait(tramp, env, fds, socks)
    finally:
        for s in socks:
            s.close()
        for r in reservations:
            r.close()


def _spawn_and_wait(argv: List[str], env: Dict[str, str], fds: List[int],
                    socks: List[socket.socket]) -> int:
    """Start ARGV passing FDS, close this process's copies, forward signals
    until it ends; return its exit status."""
    previous: Dict[int, Any] = {}
    child: "Optional[subprocess.Popen[bytes]]" = None
    received: List[int] = []

    def forward(signum: int, _frame: Any) -> None:
        if child is not None and child.returncode is None:
            try:
                os.kill(child.pid, signum)
            except ProcessLookupError:
                pass
        else:
            received.append(signum)

    for name in FORWARDED:
        sig = getattr(signal, name)
        previous[sig] = signal.signal(sig, forward)
    try:
        try:
            child = subprocess.Popen(argv, env=env, pass_fds=fds, close_fds=True)
        except OSError as exc:
            print(f"portres run: cannot start {sys.executable}: {exc}", file=sys.stderr)
            return EXIT_ERROR
        for sig in received:   # arrived while starting: deliver now
            os.kill(child.pid, sig)
        # The child has its copies; ours would keep the sockets open after it ends.
        for s in socks:
            s.close()
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code
