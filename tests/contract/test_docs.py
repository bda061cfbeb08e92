"""Every example in the guides (docs/serving.md, outbound.md, testing.md,
handoff.md) runs, as README.md's do (test_readme.py).

Fences: ```python runs as a script; ```python file=NAME is written to NAME
for the guide's later examples to use; ```sh runs with bash (-e, pipefail).
Each guide's examples run in order in one fresh directory, with this
interpreter first on PATH (as `python`, next to its `portres` and `pytest`).
`requires=a,b` names modules or commands an example needs (all of them are
in the test extra, requirements-dev.txt, or Debian's curl), `platform=linux`
marks an example that shows Linux-only behaviour."""

import importlib.util
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

from tests.support import PROJECT_DIR

DOCS = pathlib.Path(PROJECT_DIR) / "docs"
GUIDES = ["serving.md", "outbound.md", "testing.md", "handoff.md"]
FENCE = re.compile(r"^```(python|sh)([^\n]*)\n(.*?)^```", re.S | re.M)


def blocks(name):
    out = []
    for m in FENCE.finditer((DOCS / name).read_text()):
        attrs = dict(a.split("=", 1) for a in m.group(2).split() if "=" in a)
        out.append((m.group(1), attrs, m.group(3)))
    return out


def _missing(attrs):
    for need in filter(None, attrs.get("requires", "").split(",")):
        if need == "curl" or need == "bash":
            if shutil.which(need) is None:
                return f"needs the {need} command"
        elif importlib.util.find_spec(need) is None:
            return f"needs {need} (test extra / requirements-dev.txt)"
    if attrs.get("platform") == "linux" and not sys.platform.startswith("linux"):
        return "shows Linux-only behaviour"
    return None


@pytest.mark.parametrize("guide", GUIDES)
def test_guide_examples_run(guide, tmp_path):
    found = blocks(guide)
    runnable = [b for b in found if "file" not in b[1]]
    assert len(runnable) >= 2, f"{guide}: expected examples"
    for _lang, attrs, code in found:
        if "file" in attrs:
            (tmp_path / attrs["file"]).write_text(code)
    bindir = os.path.dirname(sys.executable)
    env = dict(
        os.environ,
        PATH=bindir + os.pathsep + os.environ.get("PATH", ""),
        PYTHONPATH=os.pathsep.join(p for p in sys.path if p),
    )
    ran, skipped = 0, []
    for i, (lang, attrs, code) in enumerate(found):
        if "file" in attrs:
            continue
        why = _missing(attrs)
        if why is None and lang == "sh":
            if sys.platform == "win32":
                why = "shell examples need bash"
            elif shutil.which("bash") is None:
                why = "needs the bash command"
        if why:
            skipped.append(f"example {i}: {why}")
            continue
        if lang == "python":
            argv = [sys.executable, "-c", code]
        else:
            argv = ["bash", "-euo", "pipefail", "-c", code]
        proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, (
            f"{guide} example {i} ({lang}) failed with {proc.returncode}:\n{code}\n"
            f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        )
        ran += 1
    if skipped:
        pytest.skip(f"{guide}: {ran} examples ran and passed; not run: " + "; ".join(skipped))


def test_readme_links_the_guides():
    readme = (DOCS.parent / "README.md").read_text()
    for g in GUIDES:
        assert f"(docs/{g})" in readme, g
