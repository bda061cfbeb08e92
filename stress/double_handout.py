"""Check that, under concurrent use by several threads, a side of a port of a
block (IPv4: an AF_INET socket; IPv6: a V6ONLY AF_INET6 one; a dual-stack
socket takes both) is never handed out while the socket it was last handed
to is still open.
Prints the duplicates seen (none so far); exit status 1 if any.

    python stress/double_handout.py [tcp|udp] [threads] [seconds]

Each thread takes sockets from one shared 8-port reservation (res.socket()
and res.bind(), every family and V6ONLY form), keeps up to 4, and closes
them; a port's side is recorded as live from the moment it is handed out
until just before its socket is closed, so a side handed out while recorded
live is a double hand-out.
"""

import random
import socket
import sys
import threading
import time

import portres


def main() -> int:
    proto = sys.argv[1] if len(sys.argv) > 1 else "udp"
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 20
    kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
    res = portres.acquire(8, protocol=proto)
    lock = threading.Lock()
    live: dict = {}
    dups: list = []
    stop = time.monotonic() + seconds

    def sides(s: socket.socket) -> list:
        if s.family == socket.AF_INET:
            return [4]
        return [6] if s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) else [4, 6]

    def forget(s: socket.socket) -> None:
        with lock:
            for side in sides(s):
                live.pop((s.getsockname()[1], side), None)
        s.close()

    def worker(seed: int) -> None:
        rnd = random.Random(seed)
        mine: list = []
        while time.monotonic() < stop:
            action = rnd.randrange(10)
            try:
                if action < 4:
                    fam = rnd.choice([socket.AF_INET, socket.AF_INET6])
                    host = rnd.choice(["", "127.0.0.1" if fam == socket.AF_INET else "::1"])
                    s = res.socket(fam, host)
                elif action < 7:
                    fam = rnd.choice([socket.AF_INET, socket.AF_INET6])
                    s = socket.socket(fam, kind)
                    if fam == socket.AF_INET6:
                        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, rnd.randrange(2))
                    try:
                        res.bind(s)
                    except OSError:
                        s.close()
                        raise
                else:
                    if mine:
                        forget(mine.pop(rnd.randrange(len(mine))))
                    continue
                port = s.getsockname()[1]
                with lock:
                    for side in sides(s):
                        if (port, side) in live:
                            dups.append((port, side, live[port, side], (s.family.name, s.getsockname()[0])))
                        live[port, side] = (s.family.name, s.getsockname()[0])
                mine.append(s)
                if len(mine) > 3:
                    forget(mine.pop(0))
            except OSError as exc:
                if exc.errno != 98:  # a full block is expected
                    raise
        for s in mine:
            forget(s)

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    res.close()
    print(f"{proto}, {threads} threads, {seconds:g} s: {len(dups)} double hand-outs", dups[:5])
    return 1 if dups else 0


if __name__ == "__main__":
    sys.exit(main())
