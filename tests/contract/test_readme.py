"""The README's examples run as written."""

import pathlib
import re

from tests.support import PROJECT_DIR

README = pathlib.Path(PROJECT_DIR) / "README.md"


def _blocks():
    text = README.read_text()
    return re.findall(r"```python\n(.*?)```", text, re.S)


def test_readme_examples_run():
    blocks = [b for b in _blocks() if "create_persistent" not in b]  # that one needs root + a socket
    assert len(blocks) >= 2
    for code in blocks:
        exec(compile(code, str(README), "exec"), {"__name__": "readme_example"})
