"""The `portres` command line (also `python -m portres`).

Modelled on what `netsh int ipv4 ... excludedportrange` users know: list,
add, delete and look up persistent reservations, and `check` a port to learn
why it cannot be bound.  `demo` is the tour.
"""

from __future__ import annotations

import argparse
import errno
import json
import sys
from typing import Any, Callable, Dict, List, Optional

from . import _validate as check  # the argument rules, shared with the API

EXIT_OK = 0
EXIT_NO = 1       # a negative answer: check says the port cannot be bound; no such reservation
EXIT_USAGE = 2    # bad command line (argparse's own code)
EXIT_ERROR = 3    # the system refused: permission, I/O...

EPILOG = """\
exit status:
  0  success (check: the port can be bound now)
  1  a negative answer: check says the port cannot be bound now; lookup or
     delete found no persistent reservation with exactly that block
  2  bad command line
  3  the system refused (e.g. not administrator/root for add/delete) or failed

Persistent reservations need administrator rights on Windows and root on
Linux (where they live in net.ipv4.ip_local_reserved_ports).  Every command
takes --json for machine-readable output.
"""


def _port(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    try:
        return check.port(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _port_or_range(text: str) -> range:
    lo_text, sep, hi_text = text.partition("-")
    lo = _port(lo_text)
    hi = _port(hi_text) if sep else lo
    if lo == 0 or hi == 0:
        raise argparse.ArgumentTypeError("port 0 is not a port to check (it asks the kernel for "
                                         "any port): give 1..65535")
    if hi < lo:
        raise argparse.ArgumentTypeError(f"the range {text} ends before it starts")
    return range(lo, hi + 1)


def _count(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a count: {text!r}") from None
    try:
        return check.count(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _version() -> str:
    from . import __version__

    return __version__


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON instead of text")
    proto = argparse.ArgumentParser(add_help=False)
    proto.add_argument("--protocol", "-p", choices=("tcp", "udp"), default="tcp",
                       help="tcp (default) or udp")
    block = argparse.ArgumentParser(add_help=False)
    block.add_argument("start", type=_port, help="first port of the block (1..65535)")
    block.add_argument("count", type=_count, help="number of ports (1..65535)")

    parser = argparse.ArgumentParser(
        prog="portres",
        description="Port reservations: blocks of TCP/UDP ports that belong to one program.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"portres {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser(
        "demo", parents=[common],
        help="reserve a block, serve from it, show another program cannot take it",
        description="Acquire a wildcard TCP block, bind listeners from it, show that another "
        "program's bind into the block fails, connect to each listener, print a table, and "
        "release.  Exit status 0 when everything behaved as a reservation should.")
    demo.add_argument("--count", type=_count, default=8, help="ports to reserve (default 8)")
    demo.add_argument("--listeners", type=_count, default=4, help="listeners to bind (default 4)")

    list_proto = argparse.ArgumentParser(add_help=False)
    list_proto.add_argument("--protocol", "-p", choices=("tcp", "udp"), default=None,
                            help="tcp (the default for persistent blocks) or udp; --runtime: "
                            "both unless given")
    lst = sub.add_parser(
        "list", parents=[common, list_proto], help="list persistent (or, with --runtime, runtime) reservations",
        description="List the persistently reserved blocks that apply to the protocol.  On "
        "Linux this is net.ipv4.ip_local_reserved_ports: blocks made by portres show their "
        "protocol and token; other entries apply to TCP and UDP alike.  With --runtime: the "
        "runtime reservations held now, with their process and the ports handed out (Linux: "
        "every process this user may inspect, all as root; Windows: this process only).")
    lst.add_argument("--runtime", action="store_true",
                     help="list runtime reservations (both protocols unless --protocol is given)")
    add = sub.add_parser(
        "add", parents=[common, proto, block], help="create a persistent reservation",
        description="Reserve START..START+COUNT-1 system-wide and print its token "
        "(administrator/root).  Overlapping an existing reservation is refused.")
    add.add_argument("--boot", action="store_true",
                     help="Linux: also keep it across reboots (writes a sysctl.d file); "
                     "Windows reservations always survive reboots")
    # --boot-file (issue 12): where --boot writes; needed outside the initial network namespace
    add.add_argument("--boot-file", metavar="PATH",
                     help="Linux: keep it across reboots in this sysctl.d file (implies --boot; "
                     "required outside the initial network namespace)")
    sub.add_parser(
        "delete", parents=[common, proto, block], help="delete a persistent reservation",
        description="Delete the persistent reservation with exactly this START and COUNT "
        "(administrator/root).  Ports that were reserved by others before stay reserved.")
    sub.add_parser(
        "lookup", parents=[common, proto, block], help="print the token of a persistent reservation",
        description="Print the token of the persistent reservation with exactly this START "
        "and COUNT; a program passes it to portres.associate() to bind from the block.")
    check = sub.add_parser(
        "check", parents=[common, proto], help="say whether this program could bind a port now, and why not",
        description="Try to bind PORT now (IPv4 and IPv6, as a server would) and explain "
        "what stands in the way: a persistent or excluded range (and whose), a runtime "
        "reservation, a listener or connection (with its process), a privileged port, "
        "TIME_WAIT; and whether the port is in the ephemeral range.")
    check.add_argument("port", type=_port_or_range, help="the port to check, or a range A-B")
    from . import _run
    _run.add_parser(sub, [common])
    return parser


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True))


def _error(args: argparse.Namespace, exc: OSError) -> int:
    not_found = exc.errno == errno.ENOENT or getattr(exc, "winerror", None) == 1168
    if args.json:
        _print_json({"error": str(exc), "errno": exc.errno,
                     "winerror": getattr(exc, "winerror", None)})
    else:
        print(f"portres {args.command}: {exc}", file=sys.stderr)
    return EXIT_NO if not_found else EXIT_ERROR


def _cmd_list(args: argparse.Namespace) -> int:
    if args.runtime:
        return _list_runtime(args)
    from portres import _persistent

    args.protocol = args.protocol or "tcp"
    rows: List[Dict[str, Any]] = [dict(e, end=e["start"] + e["count"] - 1)
                                  for e in _persistent.persistent_entries(args.protocol)]
    if args.json:
        _print_json(rows)
        return EXIT_OK
    print(f"Persistent {args.protocol.upper()} port reservations:\n")
    if not rows:
        print("  (none)")
        return EXIT_OK
    print(f"  {'start':>5}  {'end':>5}  {'count':>5}  {'protocol':<8}  {'token':<18}  source")
    for r in rows:
        token = f"{r['token']:#018x}" if r.get("token") else "-"
        source = r.get("source", "system")
        if r.get("boot"):
            source += " (kept at boot)"
        print(f"  {r['start']:>5}  {r['end']:>5}  {r['count']:>5}  {r['protocol']:<8}  "
              f"{token:<18}  {source}")
    return EXIT_OK


def _list_runtime(args: argparse.Namespace) -> int:
    from portres import _runtime

    rows = _runtime.entries(args.protocol)  # None: both protocols
    if args.json:
        _print_json({"scope": _runtime.scope(), "reservations": rows})
        return EXIT_OK
    print(f"Runtime port reservations ({_runtime.scope()}):\n")
    if not rows:
        print("  (none)")
        return EXIT_OK
    print(f"  {'pid':>7}  {'process':<15}  {'proto':<5}  {'start':>5}  {'end':>5}  {'count':>5}  "
          f"handed out")
    for r in rows:
        used = ", ".join(str(p) for p in r["in_use"]) or "-"
        print(f"  {r['pid']:>7}  {r['process'][:15]:<15}  {r['protocol']:<5}  {r['start']:>5}  "
              f"{r['end']:>5}  {r['count']:>5}  {used}")
    return EXIT_OK


def _cmd_add(args: argparse.Namespace) -> int:
    import portres

    # --boot-file (issue 12): the backend writes the file PORTRES_SYSCTL_D_FILE names
    if args.boot_file:
        if sys.platform == "win32":
            print("portres add: --boot-file is for Linux (Windows keeps every persistent "
                  "reservation across reboots)", file=sys.stderr)
            return EXIT_USAGE
        import os

        os.environ["PORTRES_SYSCTL_D_FILE"] = args.boot_file
        args.boot = True
    token = portres.create_persistent(args.start, args.count, protocol=args.protocol,
                                      boot=args.boot)
    end = args.start + args.count - 1
    if args.json:
        _print_json({"protocol": args.protocol, "start": args.start, "count": args.count,
                     "end": end, "token": token, "boot": args.boot})
    else:
        print(f"Reserved {args.protocol.upper()} ports {args.start}-{end} persistently; "
              f"token {token:#018x} ({token})")
    return EXIT_OK


def _cmd_delete(args: argparse.Namespace) -> int:
    import portres

    portres.delete_persistent(args.start, args.count, protocol=args.protocol)
    end = args.start + args.count - 1
    if args.json:
        _print_json({"protocol": args.protocol, "start": args.start, "count": args.count,
                     "end": end, "deleted": True})
    else:
        print(f"Deleted the persistent {args.protocol.upper()} reservation {args.start}-{end}")
    return EXIT_OK


def _cmd_lookup(args: argparse.Namespace) -> int:
    import portres

    token = portres.lookup_persistent(args.start, args.count, protocol=args.protocol)
    if args.json:
        _print_json({"protocol": args.protocol, "start": args.start, "count": args.count,
                     "token": token})
    else:
        print(f"{token:#018x} ({token})")
    return EXIT_OK


def _cmd_check(args: argparse.Namespace) -> int:
    from portres import _check

    reports = [_check.explain(port, args.protocol) for port in args.port]
    if args.json:
        _print_json(reports[0] if len(reports) == 1 else reports)
    else:
        for i, report in enumerate(reports):
            if i:
                print()
            print(report["verdict"] + ".")
            form = " with SO_REUSEADDR" if report["server_bind"] == "SO_REUSEADDR" else ""
            for family, result in report["bind"].items():
                print(f"  bind {family} wildcard{form}: {result}")
            for family, result in report["bind_without_options"].items():
                if result != report["bind"].get(family):  # only where it differs
                    print(f"  bind {family} wildcard without SO_REUSEADDR: {result}")
            if report["reasons"]:
                print("\nWhat portres found:")
                for r in report["reasons"]:
                    print(f"  - {r['message']}")
    return EXIT_OK if all(r["bindable"] for r in reports) else EXIT_NO


def _cmd_demo(args: argparse.Namespace) -> int:
    from . import _demo

    if args.listeners > args.count:
        print("portres demo: --listeners must not exceed --count", file=sys.stderr)
        return EXIT_USAGE
    return _demo.run(count=args.count, listeners=args.listeners, as_json=args.json)


COMMANDS: Dict[str, Callable[[argparse.Namespace], int]] = {
    "demo": _cmd_demo, "list": _cmd_list, "add": _cmd_add, "delete": _cmd_delete,
    "lookup": _cmd_lookup, "check": _cmd_check,
}


def _cmd_run(args: argparse.Namespace) -> int:
    from . import _run

    return _run.command(args)


COMMANDS["run"] = _cmd_run


def main(argv: Optional[List[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if args.command in ("add", "delete", "lookup"):
        if args.start == 0:
            parser.error(f"{args.command}: START must be a port in 1..65535, not 0")
        if not check.valid_block(args.start, args.count):
            parser.error(f"{args.command}: the block {args.start}-{args.start + args.count - 1} "
                         f"passes 65535")
    try:
        return COMMANDS[args.command](args)
    except OSError as exc:
        return _error(args, exc)


if __name__ == "__main__":
    sys.exit(main())
