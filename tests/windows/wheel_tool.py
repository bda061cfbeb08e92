"""Helpers of tests/windows/wheels.sh: the stable-ABI check of the symbols a
.pyd imports from Python, the python3.dll .def file, the wheel itself, and
the reading of a PE import table.

    wheel_tool.py def OUT.def OBJ...        python3.dll imports of the objects,
                                            each checked against the stable ABI
    wheel_tool.py wheel OUT_DIR PLAT PYD    build the cp312-abi3 wheel
    wheel_tool.py imports PLAT OBJDUMP_TXT  check the import/export tables

Exit status 1 with a message naming what is wrong.  Runs on the build
machine's Python (3.11+: tomllib); the stable ABI's symbol list comes from
abi3info, the manifest abi3audit itself checks against.
"""

from __future__ import annotations

import base64
import hashlib
import io
import pathlib
import re
import subprocess
import sys
import zipfile

import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
ABI = (3, 12)  # cp312-abi3: Py_LIMITED_API=0x030C0000

# DLLs every Windows has (System32), plus python3.dll.  The C runtime of a
# mingw-w64 build is msvcrt.dll (the system's), or the UCRT's api-ms-win-crt-*
# forwarders when the toolchain targets the UCRT.
SYSTEM_DLLS = {
    "kernel32.dll",
    "ws2_32.dll",
    "iphlpapi.dll",
    "advapi32.dll",
    "ntdll.dll",
    "msvcrt.dll",
    "ucrtbase.dll",
}
ALLOWED_PREFIXES = ("api-ms-win-crt-", "api-ms-win-core-")


def fail(message: str) -> None:
    print(f"wheel_tool: {message}", file=sys.stderr)
    sys.exit(1)


def stable_abi() -> tuple[dict[str, tuple[int, int]], set[str]]:
    """{symbol: version added} for functions and data of the stable ABI, and
    the names that are data."""
    try:
        from abi3info import DATAS, FUNCTIONS  # type: ignore[import-untyped]
    except ImportError:
        fail("abi3info is missing (pip install -r requirements-dev.txt: abi3audit brings it)")
    added: dict[str, tuple[int, int]] = {}
    data: set[str] = set()
    for table, is_data in ((FUNCTIONS, False), (DATAS, True)):
        for sym, entry in table.items():
            added[sym.name] = (entry.added.major, entry.added.minor)
            if is_data:
                data.add(sym.name)
    return added, data


def python_imports(objects: list[str], nm: str) -> list[str]:
    """The Python symbols the objects import (dllimport: __imp_ references;
    i686 adds a leading underscore to C names)."""
    names: set[str] = set()
    for obj in objects:
        out = subprocess.run([nm, "-u", obj], check=True, capture_output=True, text=True).stdout
        for line in out.split("\n"):
            sym = line.split()[-1] if line.split() else ""
            if not sym.startswith("__imp_"):
                if re.match(r"_{0,2}Py", sym):
                    fail(f"{obj}: {sym} referenced without dllimport (not through python3.dll)")
                continue
            sym = sym[len("__imp_") :]
            if nm.startswith("i686") and sym.startswith("_"):
                sym = sym[1:]
            if re.match(r"_?Py", sym):
                names.add(sym)
    return sorted(names)


def cmd_def(out: str, nm: str, objects: list[str]) -> None:
    added, data = stable_abi()
    used = python_imports(objects, nm)
    if not used:
        fail("no Python symbol imported: not a Python extension?")
    bad = [s for s in used if s not in added]
    late = [f"{s} (added in {added[s][0]}.{added[s][1]})" for s in used if s in added and added[s] > ABI]
    if bad:
        fail("not in the stable ABI: " + ", ".join(bad))
    if late:
        fail("not in the stable ABI of 3.12: " + ", ".join(late))
    lines = ["LIBRARY python3.dll", "EXPORTS"]
    lines += [f"    {s} DATA" if s in data else f"    {s}" for s in used]
    pathlib.Path(out).write_text("\n".join(lines) + "\n")
    print(f"{len(used)} Python symbols, all in the stable ABI of 3.12 ({sum(s in data for s in used)} data)")


def record_line(name: str, payload: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(payload).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(payload)}"


def cmd_wheel(out_dir: str, plat: str, pyd: str) -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    name, version = meta["name"], meta["version"]
    tag = f"cp312-abi3-{plat}"
    dist = f"{name}-{version}.dist-info"
    files: list[tuple[str, bytes]] = []
    pkg = ROOT / name
    for path in sorted(pkg.iterdir()):
        if path.suffix in (".py", ".pyi") or path.name == "py.typed":
            files.append((f"{name}/{path.name}", path.read_bytes()))
    files.append((f"{name}/_portres.pyd", pathlib.Path(pyd).read_bytes()))
    metadata = [
        "Metadata-Version: 2.4",
        f"Name: {name}",
        f"Version: {version}",
        f"Summary: {meta['description']}",
        f"Requires-Python: {meta['requires-python']}",
        f"License-Expression: {meta['license']}",
    ]
    files.append((f"{dist}/METADATA", ("\n".join(metadata) + "\n").encode()))
    wheel = [
        "Wheel-Version: 1.0",
        "Generator: portres tests/windows/wheel_tool.py",
        "Root-Is-Purelib: false",
        f"Tag: {tag}",
    ]
    files.append((f"{dist}/WHEEL", ("\n".join(wheel) + "\n").encode()))
    scripts = meta.get("scripts", {})
    if scripts:
        entry = ["[console_scripts]"] + [f"{k} = {v}" for k, v in sorted(scripts.items())]
        files.append((f"{dist}/entry_points.txt", ("\n".join(entry) + "\n").encode()))
    lic = ROOT / "LICENSE"
    if lic.exists():
        files.append((f"{dist}/licenses/LICENSE", lic.read_bytes()))
    record = [record_line(n, p) for n, p in files] + [f"{dist}/RECORD,,"]
    files.append((f"{dist}/RECORD", ("\n".join(record) + "\n").encode()))
    target = pathlib.Path(out_dir) / f"{name}-{version}-{tag}.whl"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for n, p in files:
            zf.writestr(zipfile.ZipInfo(n, date_time=(2020, 1, 1, 0, 0, 0)), p, compress_type=zipfile.ZIP_DEFLATED)
    target.write_bytes(buf.getvalue())
    check_wheel(target, tag)
    print(target)


def check_wheel(path: pathlib.Path, tag: str) -> None:
    """Re-read the wheel: every RECORD hash and size, the tag, the .pyd."""
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        dist = next(n.split("/")[0] for n in names if n.endswith(".dist-info/RECORD"))
        record = zf.read(f"{dist}/RECORD").decode().splitlines()
        listed = {}
        for row in record:
            n, digest, size = row.rsplit(",", 2)
            listed[n] = (digest, size)
        if set(listed) != set(names):
            fail(f"RECORD lists {sorted(set(listed) ^ set(names))} wrongly")
        for n in names:
            if n == f"{dist}/RECORD":
                continue
            want = record_line(n, zf.read(n)).split(",", 1)[1]
            if ",".join(listed[n]) != want:
                fail(f"RECORD entry of {n} does not match its content")
        if f"Tag: {tag}" not in zf.read(f"{dist}/WHEEL").decode().splitlines():
            fail(f"WHEEL has no Tag: {tag}")
        if "portres/_portres.pyd" not in names:
            fail("no portres/_portres.pyd in the wheel")


def cmd_imports(plat: str, dump: str) -> None:
    text = pathlib.Path(dump).read_text()
    dlls = [d.lower() for d in re.findall(r"^\s*DLL Name: (\S+)", text, re.M)]
    if "python3.dll" not in dlls:
        fail(f"{plat}: python3.dll not imported ({dlls})")
    versioned = [d for d in dlls if re.fullmatch(r"python3\d+\.dll", d)]
    if versioned:
        fail(f"{plat}: imports a version-specific {versioned[0]}: not abi3")
    other = [d for d in dlls if d != "python3.dll" and d not in SYSTEM_DLLS and not d.startswith(ALLOWED_PREFIXES)]
    if other:
        fail(f"{plat}: imports DLLs that are neither system DLLs nor python3.dll: {other}")
    table = text.split("[Ordinal/Name Pointer] Table", 1)
    exports = re.findall(r"^\s*\[\s*\d+\]\s+(\S+)\s*$", table[1].split("\n\n", 1)[0], re.M) if len(table) == 2 else []
    if exports != ["PyInit__portres"]:
        fail(f"{plat}: the export table should hold PyInit__portres alone, not {exports}")
    print(f"{plat}: imports {', '.join(sorted(set(dlls)))}; exports PyInit__portres")


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        fail(__doc__ or "usage")
    cmd = argv[1]
    if cmd == "def" and len(argv) >= 5:
        cmd_def(argv[2], argv[3], argv[4:])
    elif cmd == "wheel" and len(argv) == 5:
        cmd_wheel(argv[2], argv[3], argv[4])
    elif cmd == "imports" and len(argv) == 4:
        cmd_imports(argv[2], argv[3])
    else:
        fail(f"bad arguments: {argv[1:]}")


if __name__ == "__main__":
    main(sys.argv)
