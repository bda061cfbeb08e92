"""bench/run.py --quick runs every benchmark with tiny counts: the harness
works.  No timing is asserted (bench/README.md has the figures)."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.support import PROJECT_DIR, linux_only

RUN = os.path.join(PROJECT_DIR, "bench", "run.py")


@linux_only
@pytest.mark.skipif(not os.path.exists(RUN), reason="bench/ is not shipped in the sdist")
@pytest.mark.skipif(not shutil.which(os.environ.get("CC", "cc")), reason="the C baseline needs cc")
@pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("portpicker", "ephemeral_port_reserve")),
    reason="pip install -r bench/requirements.txt",
)
def test_bench_quick_runs_every_section(tmp_path):
    out = subprocess.run(
        [sys.executable, RUN, "--quick", "--json", str(tmp_path / "bench.json")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-5000:]
    assert "| benchmark | portres | reference | ratio |" in out.stdout
    with open(tmp_path / "bench.json") as f:
        results = json.load(f)["results"]
    assert set(results) == {
        "socket",
        "reuse",
        "floor",
        "acquire",
        "peers",
        "call",
        "crowded",
        "memory",
        "import",
        "connect",
        "held",
    }
    for section in ("socket", "reuse", "floor", "acquire", "peers", "call", "import", "connect", "held"):
        assert results[section]["rows"], section
        for r in results[section]["rows"]:
            assert r["portres_ns"] > 0 and r["ref_ns"] > 0, r
    # floor: every step a..g of the C cycle ran, TCP and UDP, and its table is printed
    floor = {(r["proto"], r["block"], r["step"]) for r in results["floor"]["rows"] if r["load"] == "idle"}
    assert floor >= {(p, 1, s) for p in ("tcp", "udp") for s in "abcdefg"}, floor
    assert {(p, 16, s) for p in ("tcp", "udp") for s in "ef"} <= floor, floor
    for r in results["floor"]["rows"]:  # from e on, reuses went through the destroy listener
        assert (sum(r.get("messages", {}).values()) > 0) == (r["step"] >= "e"), r
        assert r["py_plain_ns"] > 0 and isinstance(r["python_bound"], float), r
    assert "| load | block | step | TCP | ratio | bound | UDP | ratio | bound |" in out.stdout
    assert "| idle | 1 | f |" in out.stdout and "| idle | 16 | e |" in out.stdout
    assert results["memory"]["memory"]["portres tcp"]["fds_per_port"] > 0
