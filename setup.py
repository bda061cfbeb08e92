"""Build the C extension portres._portres.  Metadata lives in pyproject.toml.

Both backends are always compiled: each file is empty except on its own
platform (`_WIN32` / `__linux__`), so every compiler checks the right code.
"""

import glob
import platform
import sys
import sysconfig

from setuptools import Extension, setup

# CPython 3.12+ with the GIL: the stable ABI of 3.12 (Py_LIMITED_API), one
# cp312-abi3 wheel for 3.12 and every later version.  CPython 3.9-3.11 and
# free-threaded builds (which have no stable ABI yet): version-specific
# wheels.  See [tool.cibuildwheel] in pyproject.toml.
limited_api = (
    platform.python_implementation() == "CPython"
    and sys.version_info >= (3, 12)
    and not sysconfig.get_config_var("Py_GIL_DISABLED")
)

libraries = ["ws2_32", "iphlpapi", "advapi32"] if sys.platform == "win32" else []
extra_compile_args = [] if sys.platform == "win32" else ["-std=c11", "-Wall", "-Wextra"]
define_macros = [("_WIN32_WINNT", "0x0A00")] if sys.platform == "win32" else []
if limited_api:
    define_macros.append(("Py_LIMITED_API", "0x030C0000"))

setup(
    ext_modules=[
        Extension(
            "portres._portres",
            # the binding (src/_*.c), src/error.c, and both backends
            sources=sorted(glob.glob("src/*.c")) + sorted(glob.glob("src/linux/*.c"))
            + sorted(glob.glob("src/windows/*.c")),
            depends=sorted(glob.glob("src/*.h") + glob.glob("src/*/*.h")),
            include_dirs=["src"],
            libraries=libraries,
            define_macros=define_macros,
            extra_compile_args=extra_compile_args,
            py_limited_api=limited_api,
        )
    ],
    options={"bdist_wheel": {"py_limited_api": "cp312"}} if limited_api else {},
)
