"""Persistent reservations on Linux: `net.ipv4.ip_local_reserved_ports`.

The kernel keeps one bitmap of ports that its automatic port choice skips,
for TCP and UDP alike, per network namespace; only root may write it.  On
top of it portres keeps, per network namespace, which blocks it reserved,
for which protocol, and their tokens (under /run, so tokens last until
reboot, as on Windows).

Every edit runs under an exclusive flock (released by the kernel if the
writer dies), is journaled before the sysctl is written (a writer killed
mid-edit is rolled forward or back by the next one), and is verified by
reading the sysctl back.  Ports portres did not add are never removed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

from ._sysctl import (  # the one parser of the sysctl; re-exported for the tests' use
    RESERVED_PORTS,
    SYSCTL_KEY,
    format_ports,
    parse_ports,
    read_reserved,
    to_blocks,
)


def _state_dir() -> str:
    return os.environ.get("PORTRES_STATE_DIR", "/run/portres")


def _boot_dir() -> str:
    return os.environ.get("PORTRES_BOOT_DIR", "/etc/portres")


def _sysctl_d_file() -> str:
    return os.environ.get("PORTRES_SYSCTL_D_FILE", "/etc/sysctl.d/99-portres.conf")


def netns_id() -> str:
    """This process's network namespace, as the kernel names it."""
    st = os.stat("/proc/self/ns/net")
    return f"{st.st_dev:x}-{st.st_ino}"


# ----------------------------------------------------------- the sysctl

def _write_reserved(ports: Set[int]) -> None:
    text = format_ports(ports) or ""
    call = "open"
    try:
        with open(RESERVED_PORTS, "w") as f:
            call = "write"  # the write(2) happens when the file is flushed and closed
            f.write(text + "\n")
    except OSError as exc:
        raise _permission(exc, f"writing {SYSCTL_KEY}", f"{call}({RESERVED_PORTS})") from None
    got = read_reserved()
    if got != ports:
        missing = ports - got
        raise OSError(errno.EIO, f"{SYSCTL_KEY} did not keep what was written "
                      f"(missing {format_ports(missing) or 'nothing'}, unexpected "
                      f"{format_ports(got - ports) or 'nothing'})")


def _permission(exc: OSError, what: str, call: str) -> OSError:
    """EXC of CALL (kept as `filename`), explained if it is a refusal."""
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OSError(exc.errno, f"{what} failed: persistent reservations need root "
                       f"(CAP_NET_ADMIN over this network namespace) and a writable /proc/sys "
                       f"({exc.strerror})", call)
    return exc


# ----------------------------------------------------------- the store

class _Store:
    """The bookkeeping of one network namespace, loaded under its lock."""

    def __init__(self, data: Dict[str, Any]) -> None:
        self.entries: List[Dict[str, Any]] = data.get("entries", [])
        self.owned: Set[int] = parse_ports(data.get("owned", ""))
        self.journal: Optional[Dict[str, Any]] = data.get("journal")

    def dump(self) -> Dict[str, Any]:
        return {"version": 1, "netns": netns_id(), "entries": self.entries,
                "owned": format_ports(self.owned), "journal": self.journal}

    def find(self, protocol: str, start: int, count: int) -> Optional[Dict[str, Any]]:
        for e in self.entries:
            if (e["protocol"], e["start"], e["count"]) == (protocol, start, count):
                return e
        return None

    def ports(self, exclude: Optional[Dict[str, Any]] = None) -> Set[int]:
        out: Set[int] = set()
        for e in self.entries:
            if e is not exclude:
                out.update(range(e["start"], e["start"] + e["count"]))
        return out


def _paths() -> Tuple[str, str]:
    base = os.path.join(_state_dir(), f"net-{netns_id()}")
    return base + ".json", base + ".lock"


def _load(path: str) -> Dict[str, Any]:
    try:
        with open(path) as f:
            data: Dict[str, Any] = json.load(f)
            return data
    except FileNotFoundError:
        return _from_boot_file()
    except ValueError as exc:
        raise OSError(errno.EIO, f"portres state file {path} is corrupt: {exc}") from None


def _save(path: str, store: _Store) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(store.dump(), f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)  # atomic: readers see the old or the new state


def _recover(store: _Store, write: bool = True) -> bool:
    """Finish or undo the edit of a writer that died; True if changed.
    A reader (WRITE false) applies it to its in-memory view only."""
    j = store.journal
    if not j:
        return False
    kernel = read_reserved()
    entry = j["entry"]
    block = set(range(entry["start"], entry["start"] + entry["count"]))
    forward = False
    if j["op"] == "create":
        if block <= kernel and store.find(entry["protocol"], entry["start"], entry["count"]) is None:
            store.entries.append(entry)  # the sysctl was written: roll forward
            store.owned |= set(j["changed"])
            forward = True
    elif j["op"] == "delete":
        if not set(j["changed"]) & kernel:  # the sysctl was written: roll forward
            store.entries = [e for e in store.entries if e.get("token") != entry["token"]]
            store.owned -= set(j["changed"])
            forward = True
    if forward and write and entry.get("boot"):
        _write_boot_files(store)  # the writer may have died before writing them
    store.journal = None
    return True


@contextlib.contextmanager
def _locked(write: bool) -> Iterator[Tuple[_Store, str]]:
    state, lock = _paths()
    if write:
        call = f"mkdir({_state_dir()})"
        try:
            os.makedirs(_state_dir(), mode=0o755, exist_ok=True)
            call = f"open({lock})"
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise _permission(exc, f"opening the portres state in {_state_dir()}", call) from None
    else:
        try:
            fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            yield _Store(_from_boot_file()), state
            return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if write else fcntl.LOCK_SH)
        if write:  # under the lock no save is under way: a .tmp is a dead writer's
            for name in os.listdir(_state_dir()):
                if name.startswith(os.path.basename(state) + ".") and name.endswith(".tmp"):
                    with contextlib.suppress(OSError):
                        os.remove(os.path.join(_state_dir(), name))
        store = _Store(_load(state))
        if _recover(store, write) and write:
            _save(state, store)
        yield store, state
    finally:
        os.close(fd)  # releases the flock


# ----------------------------------------------------------- boot files

def _from_boot_file() -> Dict[str, Any]:
    """After a reboot: re-create the boot entries (with new tokens, as
    Windows may change them at reboot) whose ports the kernel holds."""
    path = os.path.join(_boot_dir(), "persistent.json")
    try:
        with open(path) as f:
            boot = json.load(f)
        kernel = read_reserved()
    except (OSError, ValueError):
        return {}
    entries, owned = [], set()
    for e in boot.get("entries", []):
        block = set(range(e["start"], e["start"] + e["count"]))
        if block <= kernel:
            entries.append({"protocol": e["protocol"], "start": e["start"], "count": e["count"],
                            "token": _new_token(), "boot": True})
            owned |= block
    return {"entries": entries, "owned": format_ports(owned)}


def _write_boot_files(store: _Store) -> None:
    boot = [e for e in store.entries if e.get("boot")]
    os.makedirs(_boot_dir(), exist_ok=True)
    path = os.path.join(_boot_dir(), "persistent.json")
    with open(path + ".tmp", "w") as f:
        json.dump({"entries": [{k: e[k] for k in ("protocol", "start", "count")} for e in boot]},
                  f, indent=1)
    os.replace(path + ".tmp", path)
    # The union of every entry the kernel holds now (ours and others'),
    # less our entries that are not meant to survive a reboot.
    ports = read_reserved() - (store.ports() - {p for e in boot
                                                for p in range(e["start"], e["start"] + e["count"])})
    conf = _sysctl_d_file()
    os.makedirs(os.path.dirname(conf), exist_ok=True)
    with open(conf + ".tmp", "w") as f:
        f.write("# Written by portres: ports kept out of automatic port choice at boot.\n"
                f"# See `portres list`.  Edit with `portres add/delete --boot`.\n"
                f"{SYSCTL_KEY} = {format_ports(ports)}\n")
    os.replace(conf + ".tmp", conf)


# ----------------------------------------------------------- operations

def _new_token() -> int:
    return secrets.randbits(64) or 1


def _block_name(protocol: str, start: int, count: int) -> str:
    return f"{protocol.upper()} {start}-{start + count - 1}"


def create(protocol: str, start: int, count: int, boot: bool = False) -> int:
    with _locked(write=True) as (store, state):
        block = set(range(start, start + count))
        for e in store.entries:
            if e["protocol"] == protocol and block & set(range(e["start"], e["start"] + e["count"])):
                raise OSError(errno.EADDRINUSE,
                              f"creating the persistent reservation {_block_name(protocol, start, count)} "
                              f"failed: it overlaps the persistent reservation "
                              f"{_block_name(protocol, e['start'], e['count'])}")
        kernel = read_reserved()
        entry: Dict[str, Any] = {"protocol": protocol, "start": start, "count": count,
                 "token": _new_token(), "boot": bool(boot)}
        added = block - kernel
        store.journal = {"op": "create", "entry": entry, "changed": sorted(added)}
        _save(state, store)
        _write_reserved(kernel | block)
        store.entries.append(entry)
        store.owned |= added
        if boot:  # before the journal clears: a writer killed here is redone
            _write_boot_files(store)
        store.journal = None
        _save(state, store)
        return int(entry["token"])


def delete(protocol: str, start: int, count: int) -> int:
    with _locked(write=True) as (store, state):
        entry = store.find(protocol, start, count)
        if entry is None:
            raise OSError(errno.ENOENT, f"deleting the persistent reservation "
                          f"{_block_name(protocol, start, count)} failed: no such persistent "
                          f"reservation (start and count must match one exactly)")
        kernel = read_reserved()
        block = set(range(start, start + count))
        # Only ports portres added, and no other entry still needs.
        remove = (block & store.owned) - store.ports(exclude=entry)
        store.journal = {"op": "delete", "entry": entry, "changed": sorted(remove & kernel)}
        _save(state, store)
        _write_reserved(kernel - remove)
        store.entries.remove(entry)
        store.owned -= remove
        if entry.get("boot"):
            _write_boot_files(store)
        store.journal = None
        _save(state, store)
        return int(entry["token"])


def lookup(protocol: str, start: int, count: int) -> int:
    with _locked(write=False) as (store, _state):
        entry = store.find(protocol, start, count)
    if entry is None:
        raise OSError(errno.ENOENT, f"looking up the persistent reservation "
                      f"{_block_name(protocol, start, count)} failed: no such persistent "
                      f"reservation (start and count must match one exactly)")
    return int(entry["token"])


def by_token(token: int) -> Optional[Tuple[str, int, int]]:
    with _locked(write=False) as (store, _state):
        for e in store.entries:
            if e["token"] == token:
                return e["protocol"], e["start"], e["count"]
    return None


def entries() -> List[Dict[str, Any]]:
    """Every persistent block: portres's (with tokens) and the kernel's
    other entries (which apply to TCP and UDP alike)."""
    with _locked(write=False) as (store, _state):
        ours = [dict(e, source="portres") for e in store.entries]
        ours_ports = store.ports()
    try:
        kernel = read_reserved()
    except OSError:
        kernel = set()
    foreign = [{"protocol": "any", "start": a, "count": b - a + 1, "token": None, "boot": None,
                "source": "other"} for a, b in to_blocks(kernel - ours_ports)]
    return sorted(ours + foreign, key=lambda e: (e["start"], e["protocol"]))


def blocks(protocol: str) -> List[Tuple[int, int]]:
    return [(e["start"], e["count"]) for e in entries() if e["protocol"] in (protocol, "any")]
