"""`python -m portres demo`: reserve a block, serve from it, show that
another program cannot take its ports, and release it."""

from __future__ import annotations

import errno
import json
import socket
import subprocess
import sys
import time
from typing import Dict, List, TextIO

from . import _portres, acquire

_PROBE = """
import errno, json, socket, sys
out = {}
for port in map(int, sys.argv[1:]):
    s = socket.socket()
    try:
        s.bind(("", port))
        out[port] = "bound"
    except OSError as e:
        out[port] = "refused (" + (errno.errorcode.get(e.errno, "") or str(e.errno)) + ")"
    finally:
        s.close()
print(json.dumps(out))
"""


def _other_program_binds(ports: List[int]) -> Dict[int, str]:
    """Ask a separate Python process to bind each port."""
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, *map(str, ports)],
        capture_output=True, text=True, timeout=60,
    )
    if proc.returncode != 0:
        return {p: "probe failed: " + proc.stderr.strip().splitlines()[-1] for p in ports}
    return {int(k): v for k, v in json.loads(proc.stdout).items()}


def run(out: TextIO = sys.stdout, count: int = 8, listeners: int = 4, as_json: bool = False) -> int:
    lines: List[str] = []
    w = lines.append
    w(f"portres demo: {_portres.BACKEND} backend, Python {sys.version.split()[0]}\n\n")
    with acquire(count) as res:
        last = res.start + res.count - 1
        w(f"Reserved {res.count} TCP ports {res.start}-{last} for this process "
          f"(token {res.token:#018x}).\n")
        servers = [res.socket(socket.AF_INET, "127.0.0.1") for _ in range(listeners)]
        for s in servers:
            s.listen()
        ports = [s.getsockname()[1] for s in servers]
        w(f"Bound {len(servers)} listeners from the block; asking another program "
          f"to bind every port of it...\n\n")
        probe = _other_program_binds(list(res.ports))

        rows = []
        for port in res.ports:
            server = servers[ports.index(port)] if port in ports else None
            echo = "-"
            if server is not None:
                t0 = time.perf_counter()
                c = socket.create_connection(("127.0.0.1", port), timeout=5)
                conn, _ = server.accept()
                c.sendall(b"ping")
                reply = conn.recv(4)
                # The client closes first, so TIME_WAIT lands on its own
                # ephemeral port, not on the block's.
                c.close()
                conn.close()
                ms = (time.perf_counter() - t0) * 1000
                echo = f"ok ({ms:.2f} ms)" if reply == b"ping" else "WRONG REPLY"
            rows.append((str(port), f"127.0.0.1:{port}" if server else "(held, unused)",
                         probe.get(port, "?").replace("bound", "BOUND: not reserved!"), echo))
        header = ("port", "our socket", "another program's bind", "connect + echo")
        widths = [max(len(r[i]) for r in rows + [header]) for i in range(4)]
        line = "  ".join(h.ljust(widths[i]) for i, h in enumerate(header))
        w(line + "\n" + "  ".join("-" * n for n in widths) + "\n")
        for r in rows:
            w("  ".join(c.ljust(widths[i]) for i, c in enumerate(r)) + "\n")
        for s in servers:
            s.close()
        held = sum(v.startswith("refused") for v in probe.values())
    after = _other_program_binds([res.start])
    w(f"\n{held} of {res.count} ports refused to the other program while reserved.\n")
    w(f"Released the block; now the other program's bind of {res.start}: "
      f"{after.get(res.start, '?')}.\n")
    ok = held == res.count and after.get(res.start, "").startswith("bound")
    if not ok:
        w("UNEXPECTED: the block did not behave as a reservation.\n")
    if as_json:
        out.write(json.dumps({
            "backend": _portres.BACKEND, "start": res.start, "count": res.count,
            "token": res.token, "ok": ok,
            "ports": [{"port": int(r[0]), "ours": r[1], "other_program": r[2], "echo": r[3]}
                      for r in rows],
            "after_release": after.get(res.start),
        }, indent=2) + "\n")
    else:
        out.write("".join(lines))
    return 0 if ok else 1


__all__ = ["run", "errno"]
