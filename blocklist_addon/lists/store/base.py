"""The store's contract: versions, the active pointer, state, blobs, locks and the watch
every backend implements (see the package's docstring for the protocol)."""

from __future__ import annotations

import json
import re
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any, Self

SCHEMES = ("redis://", "rediss://", "unix://", "file://", "redis+sentinel://", "rediss+sentinel://")
#: The store URL forms, as every command's --help names them.
URL_FORMS = "redis://, rediss://, redis+sentinel://host:26379,.../service, unix:// or file://"
PASSWORD_ENV = "BLOCKLIST_REDIS_PASSWORD"
PASSWORD_FILE_ENV = "BLOCKLIST_REDIS_PASSWORD_FILE"
DATA_DIR_ENV = "BLOCKLIST_DATA_DIR"
#: State the sync writes when every feed it fetched answered (updated or unchanged): the
#: active version it confirmed current, and when. An unchanged feed makes no new version,
#: so without this a list re-confirmed every few minutes would read as old as its version.
SYNCED_STATE = "synced"

#: State, blob and lock names: one path component (no "/"), never "." or ".." or hidden.
_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:@+=-]{0,199}")
_ROLLBACK_SOURCE = re.compile(r"rollback to (\d+)")
#: How often a lock waiter retries; short enough that a handover feels immediate.
LOCK_POLL = 0.05
#: Seconds a Redis lock outlives a holder that died: the holder renews it every third of
#: this while it lives, so a sync killed holding it holds up the next runs this long at most.
LOCK_TTL = 30.0
#: How many times a reader re-reads a pointer that moved while it was reading.
READ_ATTEMPTS = 5


class StoreError(Exception):
    """One line an operator can act on, e.g.
    ``redis at 127.0.0.1:6379 unreachable: Connection refused``. Never contains a password."""


class IncompleteVersion(StoreError):
    """The active pointer names a version whose parts are missing or truncated: a write
    lost in a failover, or damage. A reader keeps the list it holds and waits for the next
    version; nothing is wrong with the connection."""


@dataclass(frozen=True)
class VersionInfo:
    """What a store records about one version of the compiled list."""

    version: int  # strictly increasing per store
    checksum: str  # hex, as given by the publisher (the snapshot's checksum)
    entries: int
    created_at: float  # unix time
    source: str  # free text from the publisher, e.g. "feeds: iwf" or "rollback to 7"

    def to_json(self, size: int) -> bytes:
        """The stored form; ``size`` lets a reader notice truncated bytes before parsing."""
        return json.dumps({**asdict(self), "size": size}, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> tuple[VersionInfo, int | None]:
        """Parse the stored form into the info and the recorded size of the bytes."""
        try:
            doc = json.loads(raw)
            info = cls(
                version=int(doc["version"]),
                checksum=str(doc["checksum"]),
                entries=int(doc["entries"]),
                created_at=float(doc["created_at"]),
                source=str(doc["source"]),
            )
            size = doc.get("size")
            return info, None if size is None else int(size)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            # A damaged version, not a store in trouble: a reader keeps its list.
            raise IncompleteVersion(f"corrupt version metadata: {exc}") from None


def check_key(key: str, what: str = "key") -> str:
    """Refuse names that could escape the store's directory or collide with its own files."""
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise StoreError(
            f"invalid {what} {key!r}: use 1-200 letters, digits and _.:@+=-, "
            "not starting with '.' or '-'"
        )
    return key


def prune_victims(numbers: Iterable[int], keep: int, active: int | None) -> list[int]:
    """Versions to prune: all but the newest ``keep``, and never the active one."""
    newest_first = sorted(set(numbers), reverse=True)
    return [n for n in newest_first[keep:] if n != active]


class Store(ABC):
    """A versioned store of compiled lists, shared by the sync worker and the proxies.

    ``publish`` is a template over four backend steps (``_next_version``,
    ``_write_version``, ``_activate``, ``_prune``); ``rollback`` is built on ``publish``.
    """

    url: str  # display form, password removed
    keep: int
    #: Longest pause (seconds) a follower should make between attempts to reach the store
    #: again: a store that fails over (Sentinel) is back within seconds at a new address.
    reconnect_cap: float = 30.0

    def __init__(self, *, keep: int = 5) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1: the active version is always kept")
        self.keep = keep

    # -- versions ------------------------------------------------------------------------

    async def publish(
        self, data: bytes, *, checksum: str, entries: int, source: str
    ) -> VersionInfo:
        """Store ``data`` as a new version, activate it unless a newer one already is,
        announce it and prune old versions.

        Returns the new version's info. When another publisher activated a higher number
        meanwhile, this version is stored but not active (and soon pruned): ``active()`` says
        which list proxies enforce.
        """
        number = await self._next_version()
        info = VersionInfo(number, checksum, entries, time.time(), source)
        await self._write_version(info, data)
        await self._activate(number)
        await self._prune()
        return info

    @abstractmethod
    async def active(self) -> VersionInfo | None:
        """The active version's info, or None before the first publish, and when the
        pointer names a version that is not there (a write lost in a failover: the next
        publish moves the pointer past it). Cheap: proxies poll it."""

    @abstractmethod
    async def load_active(self) -> tuple[VersionInfo, bytes] | None:
        """The active version's info and exactly that version's bytes, or None before the
        first publish; IncompleteVersion when the pointer names a version not (wholly)
        there: a reader keeps the list it holds."""

    @abstractmethod
    async def load(self, version: int) -> bytes:
        """The bytes of one kept version; StoreError if it is not (or no longer) kept."""

    @abstractmethod
    async def versions(self) -> list[VersionInfo]:
        """Kept versions, newest first."""

    async def rollback(self) -> VersionInfo:
        """Re-activate the version before the active one, as a copy under a NEW number so
        the pointer still only moves forward.

        When the active version is itself a rollback copy of N, the step goes to the version
        before N: repeated rollbacks walk back through history instead of toggling between
        the two newest versions.
        """
        current = await self.active()
        if current is None:
            raise StoreError("no earlier version to roll back to: no version is active")
        copied = _ROLLBACK_SOURCE.fullmatch(current.source)
        base = int(copied.group(1)) if copied else current.version
        earlier = [v for v in await self.versions() if v.version < base]
        if not earlier:
            raise StoreError("no earlier version to roll back to")
        target = earlier[0]
        data = await self.load(target.version)
        return await self.publish(
            data,
            checksum=target.checksum,
            entries=target.entries,
            source=f"rollback to {target.version}",
        )

    @abstractmethod
    async def _next_version(self) -> int:
        """Allocate a number higher than any this store has handed out or holds."""

    @abstractmethod
    async def _write_version(self, info: VersionInfo, data: bytes) -> None:
        """Write a version whole; readers see nothing of it until it is complete."""

    @abstractmethod
    async def _activate(self, version: int) -> bool:
        """Flip the pointer to ``version`` if that moves it forward, and announce it.

        Returns False (and changes nothing) when the active version is already as new;
        StoreError when ``version`` would move it forward but is not stored.
        """

    @abstractmethod
    async def _prune(self) -> None:
        """Delete all but the newest ``keep`` versions, never the active one."""

    # -- coordination and sync state -------------------------------------------------------

    @abstractmethod
    def lock(
        self, name: str = "sync", *, ttl: float = LOCK_TTL, wait: float = 0.0
    ) -> AbstractAsyncContextManager[bool]:
        """Hold a named lock: yields True when acquired, False when another holder kept it
        for ``wait`` seconds. Released on exit. ``ttl`` bounds how long a Redis lock whose
        holder died stays (its holder renews it while it lives, however long it holds it);
        a file lock is released by the holder's death itself. A holder whose Redis lock was
        lost meanwhile (it expired, another holder took it) cannot publish (StoreError),
        and leaving the lock then raises StoreError."""

    @abstractmethod
    async def get_state(self, key: str) -> dict[str, Any] | None:
        """A small JSON document (per-feed fetch state, suppressions), or None."""

    @abstractmethod
    async def set_state(self, key: str, value: dict[str, Any]) -> None: ...

    @abstractmethod
    async def get_blob(self, key: str) -> bytes | None:
        """Bytes stored under ``key`` (per-feed compiled digests, up to tens of MB), or None."""

    @abstractmethod
    async def set_blob(self, key: str, data: bytes) -> None:
        """Replace a blob atomically: readers see the old or the new bytes, never a mix."""

    @abstractmethod
    def watch(self, *, poll_interval: float = 1.0) -> AsyncIterator[int]:
        """Yield the active version number at start (if any) and each time it changes,
        including to the same number: a store that lost its data (FLUSHDB, a Redis restarted
        without persistence, a removed directory) numbers its next list like the one it lost,
        so every yield after the first is a new list to read.

        Raises StoreError when the store becomes unreachable; callers retry.
        """

    @abstractmethod
    async def close(self) -> None:
        """Release connections. The store object is not used afterwards."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"


def dump_state(value: dict[str, Any]) -> bytes:
    if not isinstance(value, dict):
        raise TypeError(f"state must be a dict, not {type(value).__name__}")
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def load_state(raw: bytes, key: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise StoreError(f"state {key!r} is corrupt: {exc}") from None
    if not isinstance(value, dict):
        raise StoreError(f"state {key!r} is corrupt: not a JSON object")
    return value
