"""python -m tests.netns_scenarios MODULE.FUNCTION JSON-ARGS

Runs tests/netns_scenarios/MODULE.py's FUNCTION(*ARGS) and prints its result
as one JSON line, last.  Refuses to run unless it is in a network namespace
other than the one named by PORTRES_HOST_NETNS (the caller's), with the
loopback interface brought up first."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys


def main(argv: "list[str]") -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    target, args = argv
    st = os.stat("/proc/self/ns/net")
    host = os.environ.get("PORTRES_HOST_NETNS")
    if not host or host == f"{st.st_dev}-{st.st_ino}":
        print(
            "tests.netns_scenarios: not in a private network namespace (run it through "
            "tests.support.run_in_netns, or set PORTRES_HOST_NETNS and use unshare --net)",
            file=sys.stderr,
        )
        return 2
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    module, _, function = target.rpartition(".")
    fn = getattr(importlib.import_module(f"tests.netns_scenarios.{module}"), function)
    result = fn(*json.loads(args))
    sys.stdout.flush()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
