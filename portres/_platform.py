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

# What the shared modules use of a backend: both define every name.
CONTRACT = (
    "CODES", "FAST_PATHS", "HINTS", "acquire_denied_detail", "associate", "check_build",
    "check_reasons", "condition_code", "create_persistent", "delete_persistent",
    "ephemeral_range", "error_code", "associate_persistent", "associate_persistent_nowait",
    "list_persistent", "lookup_persistent",
    "persistent_entries", "persistent_explanation", "port_sockets", "watch",
    "EPHEMERAL_RANGE_NAME", "EPHEMERAL_RANGE_SETTING", "RUN_UNSUPPORTED", "wait_trio_event",
    "runtime_opened", "runtime_closed", "runtime_reservations", "RUNTIME_SCOPE", "SERVER_REUSEADDR",
    "rebuild", "ASSOCIATE_DENIED",
)

__all__ = ["CONTRACT", "WINDOWS", "backend"]
