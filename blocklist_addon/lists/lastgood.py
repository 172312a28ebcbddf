"""The proxy's last-known-good copy of the list, on its own disk.

It lets a proxy start and enforce while the store is unreachable (DESIGN "Failure
behaviour"). One file, written atomically: a JSON line with the version's info, then the
snapshot bytes exactly as the store holds them (digests only, checksummed), so a torn or
corrupt copy is detected and never enforced.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import stat
from collections.abc import Callable

from blocklist_addon.lists.store import StoreError, VersionInfo, default_data_dir, write_atomic
from blocklist_addon.urls.snapshot import Snapshot, SnapshotError

__all__ = ["LastGoodError", "default_path", "read", "write"]


class LastGoodError(Exception):
    """The copy exists but cannot be used; one line naming the file and the reason
    (``reason``: the reason alone)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def default_path(store_url: str) -> pathlib.Path:
    """One copy per store (several stores may be used from one data directory), named by a
    short hash of the store's display URL (which carries no password)."""
    tag = hashlib.sha256(store_url.encode()).hexdigest()[:8]
    return default_data_dir() / "proxy" / f"lastgood-{tag}.bin"


def write(path: os.PathLike[str] | str, info: VersionInfo, data: bytes) -> None:
    """Replace the copy with ``data``; readers see the old copy or the new one, whole."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, info.to_json(len(data)) + b"\n" + data)


def read[T](
    path: os.PathLike[str] | str, parse: Callable[[bytes], T] = Snapshot.from_bytes
) -> tuple[VersionInfo, T] | None:
    """The copy's info and checked snapshot (``parse``: of another kind of list, such as
    ``HashSnapshot.from_bytes``); None when there is no copy."""
    path = pathlib.Path(path)
    try:
        raw = _read_own(path)
    except FileNotFoundError:
        return None
    except _Untrusted as exc:
        raise LastGoodError(f"untrusted last-known-good copy {path}: {exc}", str(exc)) from None
    except OSError as exc:
        reason = f"cannot read it: {exc.strerror or exc}"
        raise LastGoodError(f"cannot read {path}: {exc.strerror or exc}", reason) from None
    header, sep, data = raw.partition(b"\n")
    try:
        if not sep:
            raise StoreError("no header")
        info, size = VersionInfo.from_json(header)
        if size != len(data):
            raise StoreError(f"truncated ({len(data)} of {size} bytes)")
        snapshot = parse(data)
        if snapshot.checksum != info.checksum:  # type: ignore[attr-defined]
            raise StoreError("checksum does not match its header")
    except (StoreError, SnapshotError) as exc:
        raise LastGoodError(f"unusable last-known-good copy {path}: {exc}", str(exc)) from None
    return info, snapshot


class _Untrusted(Exception):
    """Someone else could have written the copy."""


def _read_own(path: pathlib.Path) -> bytes:
    """The copy's bytes, if nobody but this user (or root) could have written them: the
    copy is enforced when the store is down, so whoever can replace it chooses the list."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        euid = os.geteuid()
        if not stat.S_ISREG(st.st_mode):
            raise _Untrusted("not a regular file")
        if st.st_uid not in (euid, 0):
            raise _Untrusted(f"it belongs to uid {st.st_uid}, not to this user (uid {euid})")
        if st.st_mode & 0o022:
            raise _Untrusted(f"others can write it (mode {stat.S_IMODE(st.st_mode):04o})")
        parent = os.stat(path.parent)
        if parent.st_mode & 0o022 and not parent.st_mode & stat.S_ISVTX:
            mode = stat.S_IMODE(parent.st_mode)
            raise _Untrusted(f"others can replace it: {path.parent} is mode {mode:04o}")
        with open(fd, "rb", closefd=False) as f:
            return f.read()
    finally:
        os.close(fd)
