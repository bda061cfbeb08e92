"""The one place that knows which platform this is.

`backend` is portres._windows on Windows and portres._linux elsewhere; the
shared modules call it and test the platform nowhere else.  WINDOWS is for
what must know it at import (the CLI's wording, the tests)."""

from __future__ import annotations

import sys

WINDOWS = sys.platform == "win32"

# Tested through sys.platform itself, so that mypy checks each branch's
# calls of _portres against that platform's stubs.
if sys.platform == "win32":
    from . import _windows as backend
else:
    from . import _linux as backend

__all__ = ["WINDOWS", "backend"]
