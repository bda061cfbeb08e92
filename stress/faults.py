#!/usr/bin/env python3
"""Fault figures for RELIABILITY.md (root; private network namespaces).

    python stress/faults.py                 # 60 s of kills on persistent edits, 200 runtime kills
    python stress/faults.py --seconds 300 --kills 1000 --json out.json

  persistent  6 processes create/delete persistent reservations while one of
              them is SIGKILLed at a random moment every 2-40 ms (and
              replaced); then: lock free, bookkeeping == kernel, nothing lost
              (tests/support/faults_lib.py persistent_kill_storm)
  runtime     a process acquiring/binding/releasing a 200-port block is
              SIGKILLed at a random moment, N times; after each kill every
              port must bind again (tests/support/faults_lib.py runtime_kill_storm)
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PROJECT = os.path.abspath(os.path.join(HERE, ".."))   # holds the tests package


def in_netns(expr: str, env: dict, timeout: float) -> dict:
    code = ("import json, subprocess, sys\n"
            f"sys.path.insert(0, {PROJECT!r})\n"
            "subprocess.run(['ip', 'link', 'set', 'lo', 'up'], check=True)\n"
            "from tests.support import faults_lib\n"
            f"print(json.dumps({expr}))\n")
    p = subprocess.run(["unshare", "--net", "--", sys.executable, "-c", code], capture_output=True,
                       text=True, timeout=timeout, env=dict(os.environ, **env))
    if p.returncode:
        raise SystemExit(p.stderr)
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--kills", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("stress/faults.py needs root")
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        env = {"PORTRES_STATE_DIR": f"{tmp}/run", "PORTRES_BOOT_DIR": f"{tmp}/etc",
               "PORTRES_SYSCTL_D_FILE": f"{tmp}/sysctl.d/99-portres.conf"}
        r = in_netns(f"faults_lib.persistent_kill_storm({args.seconds}, workers=6, seed={args.seed}, "
                     f"max_seconds={args.seconds * 2 + 60})", env, timeout=args.seconds * 3 + 300)
    out["persistent"] = r
    bad = r["lost"] or r["resurrected"] or r["wrong_token"] or r["overlaps"] or not r["kernel_matches"]
    print(f"persistent: {r['kills']} SIGKILLs in {r['seconds']} s across {r['events']} edit events; "
          f"{r['killed_mid_edit']} landed inside an edit (journals repaired: {r['journals_recovered']}); "
          f"{r['checked_blocks']} blocks checked: lost {len(r['lost'])}, resurrected {len(r['resurrected'])}, "
          f"wrong token {len(r['wrong_token'])}, overlaps {len(r['overlaps'])}; kernel == bookkeeping: "
          f"{r['kernel_matches']}; foreign entries kept: {r['foreign_kept']}; next edit after the storm "
          f"{r['recover_s'] * 1000:.0f} ms; leftover .tmp files {r['tmp_leftovers']}")
    r = in_netns(f"faults_lib.runtime_kill_storm({args.kills}, count=200, seed={args.seed})", {},
                 timeout=args.kills * 5 + 300)
    out["runtime"] = r
    bad = bad or r["still_held_after_kill"]
    print(f"runtime: {r['kills']} SIGKILLs of a process acquiring/binding/releasing ports "
          f"{r['block'][0]}-{r['block'][0] + r['block'][1] - 1}: ports still held after a kill: "
          f"{len(r['still_held_after_kill'])} times")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
