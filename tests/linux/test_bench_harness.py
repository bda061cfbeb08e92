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
        "acquire",
        "peers",
        "call",
        "crowded",
        "memory",
        "import",
        "connect",
        "held",
    }
    for section in ("socket", "reuse", "acquire", "peers", "call", "import", "connect", "held"):
        for r in results[section]["rows"]:
            assert r["portres_ns"] > 0 and r["ref_ns"] > 0, r
    assert results["memory"]["memory"]["portres tcp"]["fds_per_port"] > 0
