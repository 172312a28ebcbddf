"""The embedded store: one local directory, for one box with no server."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import pathlib
import re
import secrets
import stat
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

from blocklist_addon.lists.store.base import (
    LOCK_POLL,
    READ_ATTEMPTS,
    IncompleteVersion,
    Store,
    StoreError,
    VersionInfo,
    check_key,
    dump_state,
    load_state,
    prune_victims,
)

_VERSION_FILE = re.compile(r"(\d+)\.(snap|json)")
_TMP_FILE = re.compile(r"\..+\.tmp")
#: A temporary file this old and not locked by a writer is a killed writer's leftover. The
#: grace only covers the instant between a writer creating its file and locking it.
_TMP_GRACE = 10.0
_CHUNK = 1 << 20
_SUBDIRS = ("versions", "state", "blob", "lock")


class FileStore(Store):
    """A store in one local directory: one box, no server.

    Layout: ``versions/<n>.snap`` and ``versions/<n>.json`` (a version exists once both
    do: the JSON is written last), ``active`` (the pointer: the number as text), ``seq``,
    ``state/<key>.json``, ``blob/<key>``, ``lock/<name>``. Every write is a temporary file,
    fsync, ``os.replace`` and an fsync of the directory, so a reader or a crash sees the old
    file or the new one. Short critical sections (allocating a number, the flip, pruning)
    are serialized across processes by ``flock`` on ``lock/.store``. Directories are 0700
    and files 0600: the store holds a licensed list's digests.
    """

    def __init__(self, path: os.PathLike[str] | str, *, keep: int = 5) -> None:
        super().__init__(keep=keep)
        self.path = pathlib.Path(path).absolute()
        self.url = self.path.as_uri()

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            where = f": {exc.filename}" if exc.filename else ""
            reason = exc.strerror or str(exc)
            raise StoreError(f"file store {self.path}: {reason}{where}") from None

    async def _run[T](self, func: Callable[..., T], *args: Any) -> T:
        """Run blocking file work off the event loop, with OS errors as StoreError."""
        with self._errors():
            return await asyncio.to_thread(self._trusted_then, func, *args)

    def _trusted_then[T](self, func: Callable[..., T], *args: Any) -> T:
        self._check_trusted()
        return func(*args)

    def _check_trusted(self) -> None:
        """Refuse a store whose directories another user could write: whoever can write them
        can replace the list (a whole, checksummed one of their own) or plant links where
        the sync writes. As ssh's StrictModes: not writable by group or others, owned by
        this user or root (root itself trusts the service user who owns the store)."""
        euid = os.geteuid()
        directories = [self.path, *(self.path / sub for sub in _SUBDIRS)]
        if (self.path.parent / "versions").is_dir():  # a namespace ("hashes") in a store
            directories.append(self.path.parent)
        for directory in directories:
            try:
                st = os.stat(directory)
            except FileNotFoundError:
                continue
            if st.st_mode & 0o022:
                mode = stat.S_IMODE(st.st_mode)
                raise StoreError(
                    f"file store {self.path}: {directory} is writable by others "
                    f"(mode {mode:04o}): anyone could replace the list; not read until "
                    f"fixed (chmod go-w {directory})"
                )
            if euid != 0 and st.st_uid not in (euid, 0):
                raise StoreError(
                    f"file store {self.path}: {directory} belongs to uid {st.st_uid}, not "
                    f"to this user (uid {euid}) or root: not read until fixed (chown it)"
                )

    def _dirs(self) -> None:
        # The store directory itself is created 0700 too (its parents get the default mode).
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for directory in (self.path, *(self.path / sub for sub in _SUBDIRS)):
            directory.mkdir(mode=0o700, exist_ok=True)
        self._check_trusted()

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Serialize a short critical section with every process using this directory."""
        self._dirs()
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self.path / "lock" / ".store", flags, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing drops the lock

    def _read_pointer(self) -> int | None:
        try:
            raw = _read_regular(self.path / "active")
        except FileNotFoundError:
            return None
        try:
            return int(raw)
        except ValueError:
            raise StoreError(f"{self.url}: the active pointer is corrupt: {raw[:20]!r}") from None

    def _pointer_or_none(self) -> int | None:
        """The pointer for a publisher: one that is not a number counts as none, so that
        the publish mends it (readers still refuse it)."""
        try:
            return self._read_pointer()
        except StoreError:
            return None

    def _version_path(self, version: int, suffix: str) -> pathlib.Path:
        return self.path / "versions" / f"{int(version)}.{suffix}"

    def _read_version(self, version: int) -> tuple[VersionInfo, bytes] | None:
        try:
            info, size = VersionInfo.from_json(_read_regular(self._version_path(version, "json")))
            data = _read_regular(self._version_path(version, "snap"))
        except FileNotFoundError:
            return None
        except _NotRegular as exc:
            raise IncompleteVersion(f"{self.url}: version {version}: {exc}") from None
        if size is not None and size != len(data):
            raise IncompleteVersion(f"{self.url}: version {version} is truncated")
        return info, data

    def _read_info(self, version: int) -> VersionInfo | None:
        try:
            raw = _read_regular(self._version_path(version, "json"))
        except FileNotFoundError:
            return None
        except _NotRegular as exc:
            raise IncompleteVersion(f"{self.url}: version {version}: {exc}") from None
        return VersionInfo.from_json(raw)[0]

    def _on_disk(self) -> dict[int, set[str]]:
        """Version numbers found in ``versions/``, with the suffixes present for each (only
        regular files: a link or FIFO planted there is nobody's version)."""
        found: dict[int, set[str]] = {}
        try:
            entries = list(os.scandir(self.path / "versions"))
        except FileNotFoundError:
            return found
        for entry in entries:
            if (m := _VERSION_FILE.fullmatch(entry.name)) and entry.is_file(follow_symlinks=False):
                found.setdefault(int(m.group(1)), set()).add(m.group(2))
        return found

    def _kept(self) -> list[int]:
        return sorted(
            (n for n, suffixes in self._on_disk().items() if suffixes == {"snap", "json"}),
            reverse=True,
        )

    # -- versions ------------------------------------------------------------------------

    def _next_version_sync(self) -> int:
        with self._exclusive():
            seq_path = self.path / "seq"
            try:
                seq = int(seq_path.read_bytes())
            except (FileNotFoundError, ValueError):
                seq = 0
            number = max(seq, self._pointer_or_none() or 0, *self._on_disk(), 0) + 1
            write_atomic(seq_path, b"%d\n" % number)
            return number

    async def _next_version(self) -> int:
        return await self._run(self._next_version_sync)

    def _write_version_sync(self, info: VersionInfo, data: bytes) -> None:
        self._dirs()
        # The bytes stay locked until the JSON that commits them is in place, so a pruner
        # can tell this writer's not-yet-committed file from a killed writer's.
        fd = write_atomic(self._version_path(info.version, "snap"), data, hold=True)
        try:
            write_atomic(self._version_path(info.version, "json"), info.to_json(len(data)))
        finally:
            os.close(fd)

    async def _write_version(self, info: VersionInfo, data: bytes) -> None:
        await self._run(self._write_version_sync, info, data)

    def _activate_sync(self, version: int) -> bool:
        with self._exclusive():
            current = self._pointer_or_none()
            if current is not None and version <= current:
                return False
            if version not in self._kept():
                raise StoreError(f"cannot activate version {version}: it is not in {self.url}")
            write_atomic(self.path / "active", b"%d\n" % version)
            return True

    async def _activate(self, version: int) -> bool:
        return await self._run(self._activate_sync, version)

    def _prune_sync(self) -> None:
        with self._exclusive():
            active = self._read_pointer()
            kept = self._kept()
            for n in prune_victims(kept, self.keep, active):
                # JSON first: the version disappears from listings before its bytes go.
                for suffix in ("json", "snap"):
                    with contextlib.suppress(FileNotFoundError):
                        self._version_path(n, suffix).unlink()
            for n, suffixes in self._on_disk().items():
                if suffixes == {"json"}:  # its bytes are gone: not loadable, not a version
                    self._version_path(n, "json").unlink(missing_ok=True)
                elif suffixes == {"snap"}:  # uncommitted: a live writer holds it locked
                    _remove_unlocked(self._version_path(n, "snap"), self._version_path(n, "json"))
            for sub in ("", "versions", "state", "blob"):
                _remove_stray_tmp(self.path / sub)

    async def _prune(self) -> None:
        await self._run(self._prune_sync)

    def _read_active[T](self, read: Callable[[int], T | None]) -> T | None:
        """``read`` the active version; a pruner may remove it between the pointer read and
        ours, so retry while the pointer moves, and fail only if it stays on a missing one."""
        for _ in range(READ_ATTEMPTS):
            number = self._read_pointer()
            if number is None:
                return None
            if (found := read(number)) is not None:
                return found
            if self._read_pointer() == number:
                raise IncompleteVersion(f"{self.url}: the active version {number} is missing")
        raise StoreError(f"{self.url}: the active version kept changing while being read")

    def _load_active_sync(self) -> tuple[VersionInfo, bytes] | None:
        return self._read_active(self._read_version)

    def _active_sync(self) -> VersionInfo | None:
        return self._read_active(self._read_info)

    async def active(self) -> VersionInfo | None:
        try:
            return await self._run(self._active_sync)
        except IncompleteVersion:
            return None  # no whole version is active (Store.active)

    async def load_active(self) -> tuple[VersionInfo, bytes] | None:
        return await self._run(self._load_active_sync)

    async def load(self, version: int) -> bytes:
        found = await self._run(self._read_version, version)
        if found is None:
            raise StoreError(f"version {version} is not kept in {self.url}")
        return found[1]

    def _versions_sync(self) -> list[VersionInfo]:
        """The kept versions but one whose metadata is damaged: ``status`` shows the others,
        and ``rollback`` steps over it."""
        found = []
        for n in self._kept():
            with contextlib.suppress(IncompleteVersion):
                if (info := self._read_info(n)) is not None:
                    found.append(info)
        return found

    async def versions(self) -> list[VersionInfo]:
        return await self._run(self._versions_sync)

    # -- coordination and sync state -------------------------------------------------------

    @asynccontextmanager
    async def lock(
        self, name: str = "sync", *, ttl: float = 900.0, wait: float = 0.0
    ) -> AsyncIterator[bool]:
        # ttl is not needed: the kernel drops a flock when its holder dies.
        path = self.path / "lock" / check_key(name, "lock name")
        with self._errors():
            await asyncio.to_thread(self._dirs)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    acquired = True
                    break
                except BlockingIOError:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        acquired = False
                        break
                    await asyncio.sleep(min(LOCK_POLL, remaining))
            yield acquired
        finally:
            os.close(fd)  # releases the lock, if held

    async def get_state(self, key: str) -> dict[str, Any] | None:
        path = self.path / "state" / f"{check_key(key)}.json"
        raw = await self._run(_read_or_none, path)
        return None if raw is None else load_state(raw, key)

    async def set_state(self, key: str, value: dict[str, Any]) -> None:
        path = self.path / "state" / f"{check_key(key)}.json"
        await self._run(self._write, path, dump_state(value))

    async def get_blob(self, key: str) -> bytes | None:
        return await self._run(_read_or_none, self.path / "blob" / check_key(key))

    async def set_blob(self, key: str, data: bytes) -> None:
        await self._run(self._write, self.path / "blob" / check_key(key), data)

    def _write(self, path: pathlib.Path, data: bytes) -> None:
        self._dirs()
        write_atomic(path, data)

    def _pointer_identity(self) -> tuple[int, int, int] | None:
        """The active number and which pointer file holds it (inode, change time): every
        flip is a new file, so a pointer rewritten with the same number (a store directory
        removed and synced again) is a change too."""
        try:
            fd = _open_regular(self.path / "active")
        except FileNotFoundError:
            return None
        try:
            raw = os.read(fd, 64)
            st = os.fstat(fd)
        finally:
            os.close(fd)
        try:
            return int(raw), st.st_ino, st.st_ctime_ns
        except ValueError:
            raise StoreError(f"{self.url}: the active pointer is corrupt: {raw[:20]!r}") from None

    async def watch(self, *, poll_interval: float = 1.0) -> AsyncIterator[int]:
        # Polling the pointer is the notice: an atomic rename is all a reader can observe.
        last = None
        while True:
            found = await self._run(self._pointer_identity)
            if found is not None and found != last:
                last = found
                yield found[0]
            await asyncio.sleep(poll_interval)

    async def close(self) -> None:
        """Nothing to release: every operation opens and closes its own files."""


class _NotRegular(StoreError):
    """A symbolic link, FIFO, device or directory where the store keeps a file."""


def _open_regular(path: pathlib.Path) -> int:
    """A descriptor of ``path`` if it is a regular file: a link is not followed and a FIFO
    or device not waited on (one planted where a version goes would hang or flood the
    reader); FileNotFoundError when it is not there."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _NotRegular(f"{path} is a symbolic link, not followed") from None
        raise
    try:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
    except BaseException:
        os.close(fd)
        raise
    if not regular:
        os.close(fd)
        raise _NotRegular(f"{path} is not a regular file, not read")
    return fd


def _read_regular(path: pathlib.Path) -> bytes:
    with open(_open_regular(path), "rb") as f:
        return f.read()


def _read_or_none(path: pathlib.Path) -> bytes | None:
    try:
        return _read_regular(path)
    except FileNotFoundError:
        return None


def write_atomic(
    path: pathlib.Path,
    data: bytes,
    *,
    hold: bool = False,
    mode: int = 0o600,
    durable: bool = True,
) -> int | None:
    """Replace ``path`` with ``data`` atomically and (unless ``durable`` is false) durably.

    The temporary file is flock'ed while it is written so that a cleaner never removes a
    live writer's file. With ``hold`` the still-locked descriptor is returned (the caller
    closes it); otherwise it is closed. ``mode`` is set before the rename (not subject to
    the umask), so a reader of another user never sees the file unreadable. A report that
    is rewritten every few seconds passes ``durable=False``: a crash may lose its last
    version, never show a part of one, and it pays no fsync on the event loop.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        if mode != 0o600:
            os.fchmod(fd, mode)
        fcntl.flock(fd, fcntl.LOCK_EX)
        view = memoryview(data).cast("B")
        while view:
            written = os.write(fd, view[:_CHUNK])
            view = view[written:]
        if durable:
            os.fsync(fd)
        os.replace(tmp, path)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        _fsync_dir(path.parent)
    if hold:
        return fd
    os.close(fd)
    return None


def _fsync_dir(path: pathlib.Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_unlocked(path: pathlib.Path, unless: pathlib.Path | None = None) -> bool:
    """Remove ``path`` if no writer holds its flock (and ``unless`` did not appear)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a live writer
        if unless is not None and unless.exists():
            return False  # committed after all
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return True
    finally:
        os.close(fd)


def _remove_stray_tmp(directory: pathlib.Path) -> None:
    """Remove temporary files left by killed writers; readers never look at them."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    now = time.time()
    for name in names:
        if not _TMP_FILE.fullmatch(name):
            continue
        path = directory / name
        try:
            if now - path.stat().st_mtime < _TMP_GRACE:
                continue
        except FileNotFoundError:
            continue
        _remove_unlocked(path)
