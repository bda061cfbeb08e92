"""Persistent reservations on Linux: `net.ipv4.ip_local_reserved_ports`.

The kernel keeps one bitmap of ports that its automatic port choice skips,
for TCP and UDP alike, per network namespace; only root may write it.  On
top of it portres keeps, per network namespace, which blocks it reserved,
for which protocol, and their tokens (under /run, so tokens last until
reboot, as on Windows).

The kernel is the truth.  Every read and every use reconciles that
bookkeeping with the sysctl: a block whose ports the kernel no longer all
reserves is gone (an administrator edited the list), and the ports of it
that are still reserved are reported as the kernel's own entries, which
portres never removes.  A namespace is named by its cookie
(SO_NETNS_COOKIE), which the kernel never gives another namespace.

Every edit runs under an exclusive flock (released by the kernel if the
writer dies) and is journaled before the sysctl is written (a writer killed
mid-edit is rolled forward or back by the next one).  The lock cannot bind
other programs, so the sysctl itself is edited with the smallest window
the kernel allows: ports are added by a write at a non-zero file offset,
which the kernel ORs into the bitmap (proc_do_large_bitmap) -- nothing is
read and nothing else can be lost; ports are removed by reading the list
and writing it back at once (one pread to one pwrite).  After each write
the list is read again: ports of ours that a stale write took away are put
back, ports we removed that a stale copy of the whole list brought back
are removed again, and other programs' entries that vanished meanwhile
are restored.  Ports portres did not add are never removed; the one
thing it cannot prevent is overwriting another program's write that lands
inside a removal's read-to-write window (see _swap).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import socket
import struct
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

from ._sysctl import (  # the one parser of the sysctl; re-exported for the tests' use
    RESERVED_PORTS,
    SYSCTL_KEY,
    format_ports,
    parse_ports,
    read_reserved,
    to_blocks,
)

VERSION = 2
SO_NETNS_COOKIE = getattr(socket, "SO_NETNS_COOKIE", 71)   # <linux/socket.h>, Linux 5.14
DEFAULT_BOOT_FILE = "/etc/sysctl.d/99-portres.conf"
BOOT_MARK = "# portres-boot-blocks: "
_TRIES = 16


def _state_dir() -> str:
    return os.environ.get("PORTRES_STATE_DIR", "/run/portres")


def netns_id() -> str:
    """A name for this thread's network namespace that no other namespace
    gets before reboot: its cookie.  Before Linux 5.14 (no SO_NETNS_COOKIE)
    the namespace's inode number, which the kernel does reuse once a
    namespace is gone; the reconciliation with the sysctl then drops a dead
    namespace's blocks unless the new one happens to reserve all their ports."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    try:
        cookie: int = struct.unpack("=Q", s.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8))[0]
        return f"cookie-{cookie}"
    except OSError as exc:
        if exc.errno not in (errno.ENOPROTOOPT, errno.EINVAL):
            raise
    finally:
        s.close()
    st = os.stat("/proc/thread-self/ns/net")
    return f"ino-{st.st_dev:x}-{st.st_ino}"


def _in_initial_netns() -> bool:
    """Is this thread in the network namespace of PID 1 (the one the boot
    configuration applies to)?  False when that cannot be told (PID 1's
    namespace unreadable: another user namespace)."""
    try:
        mine = os.stat("/proc/thread-self/ns/net")
        init = os.stat("/proc/1/ns/net")
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (init.st_dev, init.st_ino)   # both alive: exact


# ----------------------------------------------------------- the sysctl

def _pread_whole(fd: int) -> bytes:
    # A sysctl answers only the read at offset 0 (each one made anew; the
    # next read is EOF), and the list can pass 8 KiB: one pread, with a
    # buffer large enough (a small one first: the kernel allocates what is
    # asked for, which is most of a read's cost).
    size = 1 << 12
    while True:
        data = os.pread(fd, size, 0)
        if len(data) < size:
            return data
        size *= 2


def _swap(rfd: int, fd: int, raw: bytes, text: bytes) -> bool:
    """Write TEXT in place of the list if it still reads RAW; whether it did.
    What another program writes between this pread and this pwrite (a few
    microseconds; the text is made beforehand) is lost, and nothing can
    tell: the only window in which portres can lose a foreign entry."""
    if os.pread(rfd, len(raw) + 1, 0) != raw:   # one byte more: a longer list differs too
        return False
    n = os.pwrite(fd, text, 0)
    if n < len(text):   # the kernel takes a page per write; the rest is ORed in
        _pwrite_all(fd, text[n:], n)
    return True


def _parse(raw: bytes) -> Set[int]:
    return parse_ports(raw.decode("ascii"))


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    # The kernel takes at most a page per write; at offset 0 it replaces the
    # bitmap, at any other offset it ORs into it, so the rest of a long list
    # goes at the offsets that follow.
    while data:
        n = os.pwrite(fd, data, offset)
        if n <= 0:
            raise OSError(errno.EIO, f"writing {SYSCTL_KEY} failed: the kernel took {n} bytes")
        data, offset = data[n:], offset + n


def _write_reserved(edit: Tuple[Set[int], Set[int]]) -> Set[int]:
    """Add EDIT[0] to the sysctl and remove EDIT[1]; return the list after.
    Other programs may write the list meanwhile (our lock does not bind
    them): see the module's docstring for what is done about it."""
    add, remove = edit
    call = f"open({RESERVED_PORTS})"
    fd = rfd = -1
    try:
        fd = os.open(RESERVED_PORTS, os.O_WRONLY | os.O_CLOEXEC)
        rfd = os.open(RESERVED_PORTS, os.O_RDONLY | os.O_CLOEXEC)
        call = f"pread({RESERVED_PORTS})"
        seen = _parse(_pread_whole(rfd))        # others' entries, to restore if they vanish
        need_add, need_remove = set(add), set(remove)
        for _ in range(_TRIES):
            if need_remove:
                # Read and write back at once (_swap), the text made from
                # the read before; again if the list changed meanwhile.
                call = f"pwrite({RESERVED_PORTS})"
                for _ in range(_TRIES):
                    raw = _pread_whole(rfd)
                    cur = _parse(raw)
                    text = (format_ports((cur | need_add) - need_remove) + "\n").encode("ascii")
                    if _swap(rfd, fd, raw, text):
                        break
                else:
                    _pwrite_all(fd, text, 0)   # it keeps changing: write, then check below
                seen |= cur - remove
            elif need_add:
                call = f"pwrite({RESERVED_PORTS})"
                _pwrite_all(fd, (format_ports(need_add) + "\n").encode("ascii"), 1)   # ORed in
            call = f"pread({RESERVED_PORTS})"
            got = _parse(_pread_whole(rfd))
            need_add = (add - got) | (seen - remove - got)
            # The whole of what we removed back: a stale copy of the list was
            # written.  Only part of it back: someone reserved it anew; theirs.
            need_remove = remove if remove and remove <= got else set()
            if not need_add and not need_remove:
                return got
    except OSError as exc:
        raise _permission(exc, f"writing {SYSCTL_KEY}", call) from None
    finally:
        for f in (fd, rfd):
            if f >= 0:
                os.close(f)
    raise OSError(errno.EIO, f"{SYSCTL_KEY} did not keep what was written after {_TRIES} tries "
                  f"(missing {format_ports(need_add) or 'nothing'}, still there "
                  f"{format_ports(need_remove) or 'nothing'}): another program keeps rewriting it")


def _permission(exc: OSError, what: str, call: str) -> OSError:
    """EXC of CALL (kept as `filename`), explained if it is a refusal."""
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OSError(exc.errno, f"{what} failed: persistent reservations need root "
                       f"(CAP_NET_ADMIN over this network namespace) and a writable /proc/sys "
                       f"({exc.strerror})", call)
    return exc


# ----------------------------------------------------------- the schema

def _malformed(path: str, what: str) -> OSError:
    return OSError(errno.EIO, f"portres state file {path} is malformed ({what}); the kernel's "
                   f"{SYSCTL_KEY} is unaffected: remove the file as root to make portres forget "
                   f"its tokens (the ports stay reserved and are listed as the kernel's own; "
                   f"delete them with `sysctl -w`)", path)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _entry_problem(e: Any, where: str) -> Optional[str]:
    """What is wrong with the block E, or None."""
    if not isinstance(e, dict):
        return f"{where} is {type(e).__name__}, not an object"
    for key, ok, want in (("protocol", lambda v: v in ("tcp", "udp"), '"tcp" or "udp"'),
                          ("start", lambda v: _is_int(v) and 1 <= v <= 65535, "a port 1..65535"),
                          ("count", lambda v: _is_int(v) and 1 <= v <= 65535, "a count 1..65535"),
                          ("token", lambda v: _is_int(v) and 0 < v < 1 << 64, "a 64-bit token"),
                          ("boot", lambda v: isinstance(v, bool), "true or false")):
        if key not in e:
            return f"{where} has no {key!r}"
        if not ok(e[key]):
            return f"{where}.{key} is {e[key]!r}, not {want}"
    if e["start"] + e["count"] - 1 > 65535:
        return f"{where} passes port 65535"
    boot_file = e.get("boot_file")
    if boot_file is not None and not isinstance(boot_file, str) or e["boot"] and not boot_file:
        return f"{where}.boot_file is {boot_file!r}, not the path of its boot file"
    return None


def _check_entry(e: Any, where: str, path: str) -> None:
    problem = _entry_problem(e, where)
    if problem:
        raise _malformed(path, problem)


def _check_state(data: Any, path: str) -> Dict[str, Any]:
    if not isinstance(data, dict):
        raise _malformed(path, f"the top level is {type(data).__name__}, not an object")
    if data.get("version") != VERSION:
        raise _malformed(path, f"version {data.get('version')!r}, not {VERSION}")
    if data.get("netns") != netns_id():
        raise _malformed(path, f"it names network namespace {data.get('netns')!r}, not {netns_id()!r}")
    entries = data.get("entries")
    if not isinstance(entries, list):
        raise _malformed(path, f"'entries' is {type(entries).__name__}, not a list")
    for i, e in enumerate(entries):
        _check_entry(e, f"entries[{i}]", path)
    owned = data.get("owned")
    try:
        if not isinstance(owned, str):
            raise ValueError
        parse_ports(owned)
    except ValueError:
        raise _malformed(path, f"'owned' is {owned!r}, not a port list") from None
    j = data.get("journal")
    if j is not None:
        if not isinstance(j, dict) or j.get("op") not in ("create", "delete"):
            raise _malformed(path, f"'journal' is {j!r}, not an edit")
        _check_entry(j.get("entry"), "journal.entry", path)
        changed = j.get("changed")
        if not isinstance(changed, list) or not all(_is_int(p) and 0 <= p <= 65535 for p in changed):
            raise _malformed(path, f"journal.changed is {changed!r}, not a list of ports")
    return data


# ----------------------------------------------------------- the store

def _ports(e: Dict[str, Any]) -> Set[int]:
    return set(range(e["start"], e["start"] + e["count"]))


class _Store:
    """The bookkeeping of one network namespace, loaded under its lock."""

    def __init__(self, data: Dict[str, Any]) -> None:
        self.entries: List[Dict[str, Any]] = data.get("entries", [])
        self.owned: Set[int] = parse_ports(data.get("owned", ""))
        self.journal: Optional[Dict[str, Any]] = data.get("journal")
        self.dropped: List[Dict[str, Any]] = []   # gone from the kernel, found at this load

    def dump(self) -> Dict[str, Any]:
        return {"version": VERSION, "netns": netns_id(), "entries": self.entries,
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
                out |= _ports(e)
        return out

    def gone(self, protocol: str, start: int, count: int) -> str:
        """Why no entry has this block, if it was one that the kernel dropped."""
        for e in self.dropped:
            if (e["protocol"], e["start"], e["count"]) == (protocol, start, count):
                return (f"; it was portres's, but {SYSCTL_KEY} no longer holds all of its ports "
                        f"(edited by someone else), so it is gone")
        return ""


def _paths() -> Tuple[str, str]:
    base = os.path.join(_state_dir(), f"net-{netns_id()}")
    return base + ".json", base + ".lock"


def _load(path: str) -> Dict[str, Any]:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return _from_boot_file()
    try:
        data = json.loads(raw.decode("utf-8"))
    except ValueError as exc:   # UnicodeDecodeError and JSONDecodeError
        raise _malformed(path, f"not JSON: {exc}") from None
    return _check_state(data, path)


def _save(path: str, store: _Store) -> None:
    # No fsync: the state lives in /run (tmpfs, gone at power loss anyway),
    # and what a killed writer wrote is in the page cache.
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(store.dump(), f, indent=1)
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
    forward = False
    if j["op"] == "create":
        if _ports(entry) <= kernel and store.find(entry["protocol"], entry["start"], entry["count"]) is None:
            store.entries.append(entry)  # the sysctl was written: roll forward
            store.owned |= set(j["changed"])
            forward = True
    elif j["op"] == "delete":
        if not set(j["changed"]) & kernel:  # the sysctl was written: roll forward
            store.entries = [e for e in store.entries if e["token"] != entry["token"]]
            store.owned -= set(j["changed"])
            forward = True
    if forward and write and entry["boot"]:
        _write_boot_files(store, {entry["boot_file"]})  # the writer may have died before them
    store.journal = None
    return True


def _reconcile(store: _Store, kernel: Set[int]) -> bool:
    """Drop the blocks whose ports the kernel no longer all reserves, and
    disown what they leave; True if anything changed."""
    live = [e for e in store.entries if _ports(e) <= kernel]
    store.dropped = [e for e in store.entries if not _ports(e) <= kernel]
    store.entries = live
    owned = store.owned & kernel & store.ports()
    changed = bool(store.dropped) or owned != store.owned
    store.owned = owned
    return changed


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
            store = _Store(_from_boot_file())
            _reconcile(store, read_reserved())
            yield store, state
            return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if write else fcntl.LOCK_SH)
        if write:  # under the lock no save is under way: a .tmp is a dead writer's
            for name in os.listdir(_state_dir()):
                if name.startswith(os.path.basename(state) + ".") and name.endswith(".tmp"):
                    with contextlib.suppress(OSError):
                        os.remove(os.path.join(_state_dir(), name))
        store = _Store(_load(state))
        changed = _recover(store, write)
        changed |= _reconcile(store, read_reserved())
        if changed and write:
            if any(e["boot"] for e in store.dropped):   # gone now: not to come back at boot
                _write_boot_files(store, {e["boot_file"] for e in store.dropped if e["boot"]})
            _save(state, store)
        yield store, state
    finally:
        os.close(fd)  # releases the flock


# ----------------------------------------------------------- boot files
#
# A boot file is a sysctl.d file portres owns.  It sets the sysctl to the
# ports of portres's boot blocks that name it, plus what the sysctl.d file
# of the same directory read just before it sets (this file, read later,
# would otherwise replace that at boot).  Nothing else: not the running
# kernel's other entries, not portres's blocks that are not kept at boot.
# A comment line records the blocks themselves.

def _boot_target() -> Optional[str]:
    """The boot file to write: PORTRES_SYSCTL_D_FILE if set, else the
    default one, but only in the initial network namespace (a private
    namespace is not configured at boot from /etc/sysctl.d)."""
    path = os.environ.get("PORTRES_SYSCTL_D_FILE")
    if path:
        return os.path.abspath(path)
    return DEFAULT_BOOT_FILE if _in_initial_netns() else None


def _boot_refused(start: int, count: int, protocol: str) -> OSError:
    return OSError(errno.EXDEV, f"creating the persistent reservation {_block_name(protocol, start, count)} "
                   f"with boot=True failed: this process is not in the initial network namespace "
                   f"(or cannot tell: /proc/1/ns/net is unreadable), and {DEFAULT_BOOT_FILE} is "
                   f"applied to that one at boot; name the sysctl.d file to write: "
                   f"PORTRES_SYSCTL_D_FILE=PATH, or `portres add --boot-file PATH`")


def _sysctl_assignment(path: str) -> Optional[str]:
    """The value the sysctl.d file PATH gives the key, if any (its last)."""
    value = None
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, eq, val = line.strip().lstrip("-").partition("=")
                if eq and key.strip().replace("/", ".") == SYSCTL_KEY:
                    value = val.strip()
    except OSError:
        return None
    return value


def _boot_blocks(path: str) -> List[Dict[str, Any]]:
    """The blocks the boot file PATH keeps ([] if there is no such file)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise OSError(getattr(exc, "errno", None) or errno.EIO,
                      f"reading the portres boot file {path} failed ({exc}): fix or remove it", path) from None
    for line in lines:
        if line.startswith(BOOT_MARK):
            try:
                blocks = json.loads(line[len(BOOT_MARK):])
            except ValueError as exc:
                raise _boot_malformed(path, f"not JSON: {exc}") from None
            if not isinstance(blocks, list):
                raise _boot_malformed(path, f"{type(blocks).__name__}, not a list")
            for i, b in enumerate(blocks):
                problem = _entry_problem(dict(b, token=1, boot=True, boot_file=path)
                                         if isinstance(b, dict) else b, f"block {i}")
                if problem:
                    raise _boot_malformed(path, problem)
            return blocks
    return []


def _boot_malformed(path: str, what: str) -> OSError:
    return OSError(errno.EIO, f"portres boot file {path} is malformed: the line {BOOT_MARK.strip()!r} "
                   f"is {what}; fix it, or remove the file (as root) and add the blocks again", path)


def _boot_token(path: str, e: Dict[str, Any]) -> int:
    """A boot block's token after a reboot: new at each boot (as Windows may
    change them), the same for every process meanwhile."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot_id = f.read().strip()
    except OSError:
        boot_id = ""
    key = f"{boot_id}/{netns_id()}/{path}/{e['protocol']}/{e['start']}/{e['count']}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") or 1


def _from_boot_file() -> Dict[str, Any]:
    """No state yet (after a reboot, or a namespace's first use): the blocks
    of the boot file whose ports the kernel holds."""
    data: Dict[str, Any] = {"entries": [], "owned": "", "journal": None}
    path = _boot_target()
    if path is None:
        return data
    blocks = _boot_blocks(path)
    if not blocks:
        return data
    kernel = read_reserved()
    owned: Set[int] = set()
    for b in blocks:
        e = {"protocol": b["protocol"], "start": b["start"], "count": b["count"], "boot": True,
             "boot_file": path}
        if _ports(e) <= kernel:
            e["token"] = _boot_token(path, e)
            data["entries"].append(e)
            owned |= _ports(e)
    data["owned"] = format_ports(owned)
    return data


def _write_boot_files(store: _Store, targets: Optional[Set[str]] = None) -> None:
    """Rewrite the boot files of STORE's boot blocks, and TARGETS."""
    files = {e["boot_file"] for e in store.entries if e["boot"]} | set(targets or ())
    for path in sorted(files):
        blocks = [e for e in store.entries if e["boot"] and e["boot_file"] == path]
        if not blocks:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)   # ours alone: nothing left to keep
            continue
        ports: Set[int] = set()
        for e in blocks:
            ports |= _ports(e)
        directory, name = os.path.split(path)
        before = None
        with contextlib.suppress(OSError):
            for other in sorted(os.listdir(directory)):
                if other.endswith(".conf") and other < name:
                    before = _sysctl_assignment(os.path.join(directory, other)) or before
        if before:
            with contextlib.suppress(ValueError):
                ports |= parse_ports(before)
        record = [{k: e[k] for k in ("protocol", "start", "count")} for e in blocks]
        os.makedirs(directory, exist_ok=True)
        with open(path + ".tmp", "w") as f:
            f.write("# Written by portres: ports kept out of automatic port choice at boot:\n"
                    "# its blocks (below) and what the sysctl.d files read before this one set.\n"
                    "# See `portres list`.  Edit with `portres add/delete --boot`.\n"
                    f"{BOOT_MARK}{json.dumps(record)}\n"
                    f"{SYSCTL_KEY} = {format_ports(ports)}\n")
            f.flush()
            os.fsync(f.fileno())   # /etc outlives a power loss
        os.replace(path + ".tmp", path)


# ----------------------------------------------------------- operations

def _new_token() -> int:
    return int.from_bytes(os.urandom(8), "little") or 1


def _block_name(protocol: str, start: int, count: int) -> str:
    return f"{protocol.upper()} {start}-{start + count - 1}"


def _no_such(what: str, store: _Store, protocol: str, start: int, count: int) -> OSError:
    return OSError(errno.ENOENT, f"{what} the persistent reservation {_block_name(protocol, start, count)} "
                   f"failed: no such persistent reservation (start and count must match one "
                   f"exactly){store.gone(protocol, start, count)}")


def create(protocol: str, start: int, count: int, boot: bool = False) -> int:
    target = _boot_target() if boot else None
    if boot and target is None:
        raise _boot_refused(start, count, protocol)
    with _locked(write=True) as (store, state):
        block = set(range(start, start + count))
        for e in store.entries:
            if e["protocol"] == protocol and block & _ports(e):
                raise OSError(errno.EADDRINUSE,
                              f"creating the persistent reservation {_block_name(protocol, start, count)} "
                              f"failed: it overlaps the persistent reservation "
                              f"{_block_name(protocol, e['start'], e['count'])}")
        entry: Dict[str, Any] = {"protocol": protocol, "start": start, "count": count,
                                 "token": _new_token(), "boot": bool(boot), "boot_file": target}
        added = block - read_reserved()
        store.journal = {"op": "create", "entry": entry, "changed": sorted(added)}
        _save(state, store)
        added -= read_reserved()   # reserved by someone else meanwhile: theirs
        _write_reserved((block, set()))
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
            raise _no_such("deleting", store, protocol, start, count)
        # Only ports portres added, and no other entry still needs.
        remove = (_ports(entry) & store.owned) - store.ports(exclude=entry)
        store.journal = {"op": "delete", "entry": entry, "changed": sorted(remove)}
        _save(state, store)
        if remove:
            _write_reserved((set(), remove))
        store.entries.remove(entry)
        store.owned -= remove
        if entry["boot"]:
            _write_boot_files(store, {entry["boot_file"]})
        store.journal = None
        _save(state, store)
        return int(entry["token"])


def lookup(protocol: str, start: int, count: int) -> int:
    with _locked(write=False) as (store, _state):
        entry = store.find(protocol, start, count)
        if entry is None:
            raise _no_such("looking up", store, protocol, start, count)
    return int(entry["token"])


def by_token(token: int) -> Optional[Tuple[str, int, int]]:
    """The live block of this persistent token, or None."""
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
        kernel = read_reserved()
    foreign = [{"protocol": "any", "start": a, "count": b - a + 1, "token": None, "boot": None,
                "source": "other"} for a, b in to_blocks(kernel - ours_ports)]
    return sorted(ours + foreign, key=lambda e: (e["start"], e["protocol"]))


def blocks(protocol: str) -> List[Tuple[int, int]]:
    return [(e["start"], e["count"]) for e in entries() if e["protocol"] in (protocol, "any")]
