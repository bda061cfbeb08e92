#!/usr/bin/env python3
"""100,000 acquire/associate/bind/release cycles (good and error paths):
descriptors, RSS, the C heap, Python memory and gc-tracked objects must stay
flat.  The cycle is tests/support/leak_lib.py's; tests/linux/test_leaks.py runs 1,500.

    python stress/leaks.py                      # 2 x 100,000 cycles, a few minutes
    python stress/leaks.py --cycles 1000000 --json out.json
    python stress/leaks.py --abandoned 100000   # also: the abandoned-association defect

Two passes: without tracemalloc (descriptors, RSS, C heap, gc objects),
then with it (Python memory).  Exit status 0 when flat: no descriptor, <= 5
gc objects, and over the second half a slope below 1 KiB of C heap / Python
memory per 1,000 cycles.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))   # holds the tests package

from tests.support import leak_lib as L  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=100_000)
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--no-tracemalloc", action="store_true", help="skip the second (traced) pass")
    ap.add_argument("--abandoned", type=int, default=0,
                    help="also associate N sockets with one live block and close them unbound")
    ap.add_argument("--json", help="write the samples and figures here")
    args = ap.parse_args()

    out = {"cycles": args.cycles}
    ok = True
    # Pass 1 without tracemalloc: its own tables live in the C heap and would
    # blur that figure.  Pass 2 with it, for Python memory.
    for name, trace in (("untraced", False), ("traced", True)):
        if trace and args.no_tracemalloc:
            continue
        t0 = time.monotonic()
        points = L.run(args.cycles, samples=args.samples, trace=trace)
        elapsed = time.monotonic() - t0
        g = L.growth(points)
        print(f"== {name}: {args.cycles} cycles in {elapsed:.1f} s ({1e6 * elapsed / args.cycles:.0f} us/cycle)")
        print(f"{'cycle':>8} {'fds':>4} {'rss KiB':>9} {'C heap KiB':>11} {'py B':>8} {'gc objs':>8}")
        for p in points:
            print(f"{p['cycle']:>8} {p['fds']:>4} {p['rss'] // 1024:>9} {p['c_heap'] // 1024:>11} "
                  f"{p['py_mem']:>8} {p['gc_objects']:>8}")
        keys = ("fds", "rss", "c_heap", "gc_objects") if not trace else ("py_mem",)
        print("growth first->last: " + ", ".join(f"{k} {g[k]:+.0f}" for k in keys))
        print("slope per 1k cycles (second half): " + ", ".join(f"{k} {g[k + '_per_1k']:+.1f}" for k in keys))
        if trace:
            ok = ok and g["py_mem_per_1k"] < 1024 and g["py_mem"] < 16 * 1024
        else:
            ok = ok and g["fds"] == 0 and g["gc_objects"] <= 5 and g["c_heap_per_1k"] < 1024
        out[name] = {"seconds": elapsed, "points": points, "growth": g}
    out["flat"] = ok
    if args.abandoned:
        t0 = time.monotonic()
        a = L.stale_associations(args.abandoned)
        a["seconds"] = time.monotonic() - t0
        a["bytes_per_socket"] = (a["c_heap_after"] - a["c_heap_before"]) / args.abandoned
        print(f"abandoned associations: {args.abandoned} sockets, C heap "
              f"{a['c_heap_before'] // 1024} -> {a['c_heap_after'] // 1024} KiB "
              f"({a['bytes_per_socket']:.0f} B each), {a['seconds']:.2f} s")
        out["abandoned"] = a
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    print("FLAT" if ok else "GROWING")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
