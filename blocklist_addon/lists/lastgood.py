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
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
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
