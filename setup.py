"""Build the C extension portres._portres.  Metadata lives in pyproject.toml.

Both backends are always compiled: each file is empty except on its own
platform (`_WIN32` / `__linux__`), so every compiler checks the right code.
"""

import sys

from setuptools import Extension, setup

libraries = ["ws2_32", "iphlpapi", "advapi32"] if sys.platform == "win32" else []
extra_compile_args = [] if sys.platform == "win32" else ["-std=c11", "-Wall", "-Wextra"]
define_macros = [("_WIN32_WINNT", "0x0A00")] if sys.platform == "win32" else []

setup(
    ext_modules=[
        Extension(
            "portres._portres",
            sources=["src/_portres.c", "src/_overlapped.c", "src/windows.c", "src/linux.c"],
            depends=["src/portres.h", "src/_module.h"],
            include_dirs=["src"],
            libraries=libraries,
            define_macros=define_macros,
            extra_compile_args=extra_compile_args,
        )
    ]
)
