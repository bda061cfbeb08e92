"""The `portres` command line (also `python -m portres`)."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="portres",
        description="Port reservations: blocks of TCP/UDP ports that belong to one program.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="reserve a block, serve from it, show another program cannot take it",
        description="Acquire a wildcard TCP block, bind listeners from it, show that "
        "another program's bind into the block fails, connect to each listener, "
        "print a table, and release.  Exit status 0 when everything behaved.",
    )
    demo.add_argument("--count", type=int, default=8, help="ports to reserve (default 8)")
    demo.add_argument("--listeners", type=int, default=4, help="listeners to bind (default 4)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from . import _demo

        if not 1 <= args.listeners <= args.count:
            parser.error("--listeners must be between 1 and --count")
        return _demo.run(count=args.count, listeners=args.listeners)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
