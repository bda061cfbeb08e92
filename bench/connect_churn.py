"""Connect churn: connect/close cycles from a reservation (Reservation.connect)
against plain socket.create_connection(), to one local server, with the
server closing first and with the client closing first.

    python bench/connect_churn.py [--cycles 10000] [--rounds 5] [--block 4] [--json FILE]

Each round runs CYCLES cycles of both kinds alternately (portres, plain /
plain, portres ...); the figure is the median over the rounds, in cycles per
second.  A cycle: connect, accept, the first side closes, the other reads
EOF and closes.  Run it in a fresh network namespace for figures unaffected
by the host's sockets (`unshare -n sh -c 'ip link set lo up; python ...'`).
Linux and Windows alike (no Linux-only call)."""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import time

import portres


def churn(srv: socket.socket, connect, cycles: int, closes_first: str) -> float:
    addr = srv.getsockname()
    t0 = time.perf_counter()
    for _ in range(cycles):
        c = connect(addr)
        a, _peer = srv.accept()
        if closes_first == "server":
            a.close()
            c.recv(1)
            c.close()
        else:
            c.close()
            a.recv(1)
            a.close()
    return cycles / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--block", type=int, default=4)
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    rows = []
    with socket.socket() as srv, portres.acquire(args.block) as res:
        srv.bind(("127.0.0.1", 0))
        srv.listen(128)
        kinds = {"portres": res.connect, "plain": socket.create_connection}
        for closes_first in ("server", "client"):
            rates: dict = {k: [] for k in kinds}
            for r in range(args.rounds):
                order = list(kinds) if r % 2 == 0 else list(kinds)[::-1]
                for k in order:
                    rates[k].append(churn(srv, kinds[k], args.cycles, closes_first))
            p = statistics.median(rates["portres"])
            q = statistics.median(rates["plain"])
            rows.append({"closes_first": closes_first, "cycles": args.cycles, "block": args.block,
                         "portres_per_s": round(p), "plain_per_s": round(q),
                         "ratio_time": round(q / p, 2)})
    print(f"{'closes first':<13} {'portres/s':>10} {'plain/s':>10} {'time ratio':>10}")
    for row in rows:
        print(f"{row['closes_first']:<13} {row['portres_per_s']:>10} {row['plain_per_s']:>10} "
              f"{row['ratio_time']:>10}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"python": sys.version.split()[0], "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
