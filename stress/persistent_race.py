#!/usr/bin/env python3
"""Foreign-writer figure for RELIABILITY.md (root; a private network namespace).

    python stress/persistent_race.py                  # 1,000 trials
    python stress/persistent_race.py --trials 5000 --seed 3

Per trial another process adds a port to net.ipv4.ip_local_reserved_ports
(read, add, write) at a random moment while portres creates and deletes a
block; the foreign port must survive (tests/support/race_lib.py).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PROJECT = os.path.abspath(os.path.join(HERE, ".."))   # holds the tests package


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("stress/persistent_race.py needs root")
    with tempfile.TemporaryDirectory() as tmp:
        env = {"PORTRES_STATE_DIR": f"{tmp}/run", "PORTRES_SYSCTL_D_FILE": f"{tmp}/sysctl.d/99-portres.conf"}
        code = ("import json, sys\n"
                f"sys.path.insert(0, {PROJECT!r})\n"
                "from tests.support import race_lib\n"
                f"print(json.dumps(race_lib.foreign_writer_race({args.trials}, seed={args.seed})))\n")
        p = subprocess.run(["unshare", "--net", "--", sys.executable, "-c", code], capture_output=True,
                           text=True, env=dict(os.environ, **env))
        if p.returncode:
            raise SystemExit(p.stderr)
        out = json.loads(p.stdout.strip().splitlines()[-1])
    print(f"{out['trials']} trials, create + delete {out['span_ms']} ms: foreign port lost in "
          f"{out['lost']}; portres's block taken by the foreign write in {out['ours_gone']}; "
          f"its ports brought back by the foreign write in {out['resurrected']}")
    print(json.dumps(out))
    return 1 if out["lost"] else 0


if __name__ == "__main__":
    sys.exit(main())
