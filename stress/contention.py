#!/usr/bin/env python3
"""Contention figures for RELIABILITY.md (root; uses private network
namespaces for everything that changes sysctls or crowds the port range).

    python stress/contention.py                  # every scenario, 30 s each where timed
    python stress/contention.py --seconds 5 --json out.json
    python stress/contention.py --only hammer,autobind

Scenarios (tests/support/contention_lib.py):
  workers    4 processes x 8 threads, each thread an 8-port block bound full, N rounds
  shared     one 4096-port block, 16 threads taking ports at once, 8 rounds
  hammer     owner hammers a TCP / UDP block; uid 65534 tries 20 bind forms per port
  autobind   narrow range 40000-40063, 2 x 24 ports held; uid 65534 autobinds
             (plain, SO_REUSEPORT), then the same uid with SO_REUSEPORT (documented)
  picker     portpicker vs portres: picked port bound by another uid; and a
             pick-then-bind race against an autobinding program (ranges of 100
             and 1000 ports; gaps 0, 1, 10 ms)
"""

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PROJECT = os.path.abspath(os.path.join(HERE, ".."))   # holds the tests package
sys.path.insert(0, PROJECT)


def in_netns(expr: str, timeout: float) -> dict:
    """Evaluate EXPR (with contention_lib as cl) in a private network namespace."""
    code = ("import json, subprocess, sys\n"
            f"sys.path.insert(0, {PROJECT!r})\n"
            "subprocess.run(['ip', 'link', 'set', 'lo', 'up'], check=True)\n"
            "from tests.support import contention_lib as cl\n"
            "def sysctl(name, value):\n"
            "    open('/proc/sys/' + name.replace('.', '/'), 'w').write(str(value))\n"
            f"print(json.dumps({expr}))\n")
    p = subprocess.run(["unshare", "--net", "--", sys.executable, "-c", code], capture_output=True,
                       text=True, timeout=timeout)
    if p.returncode:
        raise SystemExit(p.stderr)
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--only", default="workers,shared,hammer,autobind,picker")
    ap.add_argument("--json")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("stress/contention.py needs root (another uid, private namespaces)")
    from tests.support import contention_lib as cl

    only = set(args.only.split(","))
    out = {}
    s = args.seconds
    if "workers" in only:
        t = time.monotonic()
        r = cl.ports_held_by_workers(4, 8, max(5, int(s * 4)))
        out["workers"] = dict(r, duplicates=len(r["duplicates"]), seconds=round(time.monotonic() - t, 1))
        print(f"workers: {r['processes']} processes x {r['threads']} threads x {r['rounds']} rounds: "
              f"{r['sockets_bound']} sockets bound from blocks acquired at once, "
              f"{len(r['duplicates'])} ports handed out twice, {len(r['errors'])} errors")
    if "shared" in only:
        r = cl.shared_block_each_port_once(4096, 16, 8)
        out["shared"] = r
        ok = all(x["handed"] == x["distinct"] == 4096 and x["all_of_the_block"] for x in r["rounds"])
        print(f"shared: one 4096-port block, 16 threads, {len(r['rounds'])} rounds: every port handed "
              f"out exactly once each round: {ok}; errors {len(r['errors'])}")
    if "hammer" in only:
        for proto in ("tcp", "udp"):
            r = cl.hammer_and_probe(proto, 8, s, threads=4)
            out["hammer_" + proto] = r
            o = r["other_uid"]
            print(f"hammer {proto}: owner bound {r['owner'].get('bound', 0)} sockets from an 8-port block in "
                  f"{s:.0f} s; uid 65534 made {o['attempts']} binds (20 forms x 8 ports x "
                  f"{o['rounds']} rounds): {o['n_taken']} succeeded; owner errors {len(r['owner_errors'])}")
    if "autobind" in only:
        for uid, rp in ((65534, False), (65534, True), (None, True)):
            r = in_netns(f"cl.autobind_scenario({s}, uid={uid}, reuseport={rp})", timeout=s + 300)
            key = f"autobind_{'same-uid' if uid is None else uid}_{'reuseport' if rp else 'plain'}"
            out[key] = r
            o = r["other"]
            print(f"autobind {key}: {o['landed']['tcp']} TCP + {o['landed']['udp']} UDP automatic ports "
                  f"in 40000-40063 (48 held); {o['n_inside']} landed in a held block")
    if "picker" in only:
        try:
            import portpicker  # noqa: F401
        except ImportError:
            print("picker: skipped (pip install portpicker)")
        else:
            a = cl.picked_port_taken_in_between("portpicker", 100)
            b = cl.picked_port_taken_in_between("portres", 100)
            out["picked_then_other_uid_binds"] = [a, b]
            print(f"picker: a port picked, then bound by uid 65534: portpicker {a['taken_by_other_uid']}/100 "
                  f"taken, portres {b['taken_by_other_uid']}/100")
            tries = max(200, int(s * 20))
            for span in (100, 1000):
                for gap in (0.0, 0.001, 0.01):
                    r = in_netns(
                        f"(sysctl('net.ipv4.ip_local_port_range', '40000 {40000 + span - 1}'), "
                        f"[cl.pick_race('portpicker', {tries}, {gap}), cl.pick_race('portres', {tries}, {gap})])[1]",
                        timeout=tries * (gap + 0.05) * 4 + 300)
                    out[f"race_range_{span}_gap_{gap}"] = r
                    print(f"race (ephemeral range of {span} ports, another uid autobinding, pick-to-bind gap "
                          f"{gap * 1000:.0f} ms, {tries} tries): portpicker lost {r[0]['stolen']}, "
                          f"portres lost {r[1]['stolen']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
