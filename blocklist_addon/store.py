"""Where compiled lists live between the sync worker and the proxies.

A store keeps numbered versions of the compiled list (the snapshot bytes plus a little
metadata), one *active* pointer, small JSON state documents and larger blobs for the sync
worker, and named locks. DESIGN ("Data held in the store") fixes the protocol that makes it
safe for several publishers and many readers at once:

1. a version is written whole under a fresh number before anything points at it;
2. it is activated by one atomic pointer flip that only moves forward, so a slow or stale
   publisher can never re-activate an older list;
3. the flip is announced (Redis pub/sub; for files, the pointer file's change) and readers
   also poll the pointer, so a lost notice only delays a reload;
4. old versions are pruned, keeping the newest ``keep`` and always the active one.

Two backends share that contract: :class:`RedisStore` (shared by many proxy nodes) and
:class:`FileStore` (one box, no server). :func:`open_store` picks one from a store URL.
Every failure surfaces as :class:`StoreError` with one line an operator can act on.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import pathlib
import re
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import AuthenticationError, AuthorizationError, RedisError

__all__ = [
    "SCHEMES",
    "FileStore",
    "RedisStore",
    "Store",
    "StoreError",
    "VersionInfo",
    "default_data_dir",
    "open_store",
    "write_atomic",
]

SCHEMES = ("redis://", "rediss://", "unix://", "file://")
PASSWORD_ENV = "BLOCKLIST_REDIS_PASSWORD"
PASSWORD_FILE_ENV = "BLOCKLIST_REDIS_PASSWORD_FILE"
DATA_DIR_ENV = "BLOCKLIST_DATA_DIR"

#: State, blob and lock names: one path component (no "/"), never "." or ".." or hidden.
_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:@+=-]{0,199}")
_ROLLBACK_SOURCE = re.compile(r"rollback to (\d+)")
#: How often a lock waiter retries; short enough that a handover feels immediate.
_LOCK_POLL = 0.05
#: How many times a reader re-reads a pointer that moved while it was reading.
_READ_ATTEMPTS = 5


class StoreError(Exception):
    """One line an operator can act on, e.g.
    ``redis at 127.0.0.1:6379 unreachable: Connection refused``. Never contains a password."""


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
            raise StoreError(f"corrupt version metadata: {exc}") from None


def _check_key(key: str, what: str = "key") -> str:
    """Refuse names that could escape the store's directory or collide with its own files."""
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise StoreError(
            f"invalid {what} {key!r}: use 1-200 letters, digits and _.:@+=-, "
            "not starting with '.' or '-'"
        )
    return key


def _victims(numbers: Iterable[int], keep: int, active: int | None) -> list[int]:
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
        """The active version's info, or None before the first publish. Cheap: proxies poll it."""

    @abstractmethod
    async def load_active(self) -> tuple[VersionInfo, bytes] | None:
        """The active version's info and exactly that version's bytes, or None."""

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
        self, name: str = "sync", *, ttl: float = 900.0, wait: float = 0.0
    ) -> AbstractAsyncContextManager[bool]:
        """Hold a named lock: yields True when acquired, False when another holder kept it
        for ``wait`` seconds. Released on exit. ``ttl`` bounds a Redis lock whose holder
        died; a file lock is released by the holder's death itself."""

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
        """Yield the active version number at start (if any) and each time it changes.

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


# -- Redis ---------------------------------------------------------------------------------

# Allocate a version number: INCR, but never at or below a number already stored or active
# (a lost or reset `seq` key must not make two versions share a number).
_NEXT_VERSION = """
local n = redis.call('INCR', KEYS[1])
local top = redis.call('ZREVRANGE', KEYS[2], 0, 0)
local highest = tonumber(redis.call('GET', KEYS[3]) or '0')
if top[1] and tonumber(top[1]) > highest then highest = tonumber(top[1]) end
if n <= highest then
  n = highest + 1
  redis.call('SET', KEYS[1], n)
end
return n
"""

# The one atomic flip: only forward, only to a stored version, announced in the same step.
_ACTIVATE = """
local n = tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if n <= current then return 0 end
if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[1])
return 1
"""

# Prune the given versions, re-checking the pointer in the same step: a version chosen as a
# victim may have been activated meanwhile by a slow publisher.
_PRUNE = """
local active = tonumber(redis.call('GET', KEYS[1]) or '0')
local removed = 0
for i, n in ipairs(ARGV) do
  if tonumber(n) ~= active then
    redis.call('DEL', KEYS[1 + 2 * i], KEYS[2 + 2 * i])
    redis.call('ZREM', KEYS[2], n)
    removed = removed + 1
  end
end
return removed
"""

# Release a lock only if it still holds our token (it may have expired and been re-taken).
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisStore(Store):
    """A store in one Redis (6.2+) or Valkey database, shared by many proxy nodes.

    Layout under ``prefix``: ``version:<n>`` (bytes) and ``version:<n>:info`` (JSON), both
    written in one MULTI/EXEC; ``versions`` (sorted set of kept numbers); ``seq``;
    ``active`` (flipped by a Lua script that also PUBLISHes on ``announce``);
    ``state:<key>``, ``blob:<key>``, ``lock:<name>``.
    """

    def __init__(
        self,
        url: str,
        *,
        keep: int = 5,
        prefix: str = "blocklist:",
        password: str | None = None,
        connect_timeout: float = 3.0,
        timeout: float = 5.0,
    ) -> None:
        """``connect_timeout`` and ``timeout`` (per socket operation) keep a dead Redis
        from hanging the caller; ``socket_connect_timeout`` and ``socket_timeout`` in the
        URL's query override them."""
        super().__init__(keep=keep)
        parts = urlsplit(url)
        self._secrets = [s for s in (password, parts.password) if s]
        self._secrets += [unquote(s) for s in self._secrets]
        self.url = _redact(url)
        self.prefix = prefix
        try:
            self._redis: aioredis.Redis = aioredis.from_url(
                url,
                password=password,
                socket_connect_timeout=connect_timeout,
                socket_timeout=timeout,
                # One quick retry: a pooled connection may be stale after a Redis restart.
                retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 1),
            )
        except (ValueError, RedisError) as exc:
            raise StoreError(self._scrub(f"invalid redis URL {self.url}: {exc}")) from None
        kwargs = self._redis.connection_pool.connection_kwargs
        self._where = (
            kwargs.get("path") or f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
        )
        self._channel = f"{prefix}announce"
        self._next_script = self._redis.register_script(_NEXT_VERSION)
        self._activate_script = self._redis.register_script(_ACTIVATE)
        self._prune_script = self._redis.register_script(_PRUNE)
        self._unlock_script = self._redis.register_script(_UNLOCK)

    def _key(self, *parts: object) -> str:
        return self.prefix + ":".join(map(str, parts))

    def _scrub(self, message: str) -> str:
        for secret in self._secrets:
            message = message.replace(secret, "***")
        return " ".join(message.split())

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn whatever redis-py or the socket raises into a one-line StoreError."""
        try:
            yield
        except (AuthenticationError, AuthorizationError) as exc:
            raise StoreError(
                self._scrub(
                    f"redis at {self._where} rejected authentication: {exc} "
                    f"(the password comes from the URL, ${PASSWORD_ENV} or ${PASSWORD_FILE_ENV})"
                )
            ) from None
        except (ConnectionError, TimeoutError, OSError, RedisError) as exc:
            raise StoreError(self._scrub(f"redis at {self._where} {_redis_reason(exc)}")) from None

    # -- versions ------------------------------------------------------------------------

    async def _next_version(self) -> int:
        with self._errors():
            keys = [self._key("seq"), self._key("versions"), self._key("active")]
            return int(await self._next_script(keys=keys))

    async def _write_version(self, info: VersionInfo, data: bytes) -> None:
        n = info.version
        with self._errors():
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(self._key("version", n), data)
                pipe.set(self._key("version", n, "info"), info.to_json(len(data)))
                pipe.zadd(self._key("versions"), {str(n): n})
                await pipe.execute()

    async def _activate(self, version: int) -> bool:
        with self._errors():
            keys = [self._key("active"), self._key("version", version, "info")]
            result = int(await self._activate_script(keys=keys, args=[version, self._channel]))
        if result < 0:
            raise StoreError(f"cannot activate version {version}: it is not in {self.url}")
        return result == 1

    async def _prune(self) -> None:
        with self._errors():
            kept = [int(n) for n in await self._redis.zrange(self._key("versions"), 0, -1)]
            victims = _victims(kept, self.keep, await self._active_number())
            if victims:
                keys = [self._key("active"), self._key("versions")]
                for n in victims:
                    keys += [self._key("version", n), self._key("version", n, "info")]
                await self._prune_script(keys=keys, args=victims)

    async def _active_number(self) -> int | None:
        with self._errors():
            raw = await self._redis.get(self._key("active"))
        if raw is None:
            return None
        try:
            return int(raw)
        except ValueError:
            raise StoreError(f"{self.url}: the active pointer is corrupt: {raw[:20]!r}") from None

    async def active(self) -> VersionInfo | None:
        for _ in range(_READ_ATTEMPTS):
            number = await self._active_number()
            if number is None:
                return None
            with self._errors():
                raw = await self._redis.get(self._key("version", number, "info"))
            if raw is not None:
                return VersionInfo.from_json(raw)[0]
            if await self._active_number() == number:
                raise StoreError(f"{self.url}: the active version {number} is missing")
        raise StoreError(f"{self.url}: the active version kept changing while being read")

    async def load_active(self) -> tuple[VersionInfo, bytes] | None:
        for _ in range(_READ_ATTEMPTS):
            number = await self._active_number()
            if number is None:
                return None
            with self._errors():
                raw, data = await self._redis.mget(
                    self._key("version", number, "info"), self._key("version", number)
                )
            if raw is not None and data is not None:
                return self._checked(raw, data)
            if await self._active_number() == number:
                raise StoreError(f"{self.url}: the active version {number} is missing")
        raise StoreError(f"{self.url}: the active version kept changing while being read")

    def _checked(self, raw: bytes, data: bytes) -> tuple[VersionInfo, bytes]:
        info, size = VersionInfo.from_json(raw)
        if size is not None and size != len(data):
            raise StoreError(f"{self.url}: version {info.version} is truncated")
        return info, data

    async def load(self, version: int) -> bytes:
        with self._errors():
            raw, data = await self._redis.mget(
                self._key("version", version, "info"), self._key("version", version)
            )
        if raw is None or data is None:
            raise StoreError(f"version {version} is not kept in {self.url}")
        return self._checked(raw, data)[1]

    async def versions(self) -> list[VersionInfo]:
        with self._errors():
            numbers = await self._redis.zrevrange(self._key("versions"), 0, -1)
            if not numbers:
                return []
            raws = await self._redis.mget([self._key("version", int(n), "info") for n in numbers])
        return [VersionInfo.from_json(raw)[0] for raw in raws if raw is not None]

    # -- coordination and sync state -------------------------------------------------------

    @asynccontextmanager
    async def lock(
        self, name: str = "sync", *, ttl: float = 900.0, wait: float = 0.0
    ) -> AsyncIterator[bool]:
        key = self._key("lock", _check_key(name, "lock name"))
        token = secrets.token_hex(16)
        deadline = time.monotonic() + wait
        while True:
            with self._errors():
                acquired = bool(
                    await self._redis.set(key, token, nx=True, px=max(1, int(ttl * 1000)))
                )
            remaining = deadline - time.monotonic()
            if acquired or remaining <= 0:
                break
            await asyncio.sleep(min(_LOCK_POLL, remaining))
        try:
            yield acquired
        except BaseException:
            if acquired:
                with contextlib.suppress(StoreError):  # the TTL frees it; keep the first error
                    await self._release(key, token)
            raise
        if acquired:
            await self._release(key, token)

    async def _release(self, key: str, token: str) -> bool:
        """Delete the lock only if ``token`` still holds it."""
        with self._errors():
            return bool(await self._unlock_script(keys=[key], args=[token]))

    async def get_state(self, key: str) -> dict[str, Any] | None:
        with self._errors():
            raw = await self._redis.get(self._key("state", _check_key(key)))
        return None if raw is None else _load_state(raw, key)

    async def set_state(self, key: str, value: dict[str, Any]) -> None:
        raw = _dump_state(value)
        with self._errors():
            await self._redis.set(self._key("state", _check_key(key)), raw)

    async def get_blob(self, key: str) -> bytes | None:
        with self._errors():
            return await self._redis.get(self._key("blob", _check_key(key)))

    async def set_blob(self, key: str, data: bytes) -> None:
        with self._errors():
            await self._redis.set(self._key("blob", _check_key(key)), data)

    async def watch(self, *, poll_interval: float = 1.0) -> AsyncIterator[int]:
        # Subscribe before the first read so that no flip falls between the two; the notice
        # only wakes us early, the pointer itself is always what we report.
        pubsub = self._redis.pubsub()
        try:
            with self._errors():
                await pubsub.subscribe(self._channel)
            last = None
            while True:
                number = await self._active_number()
                if number is not None and number != last:
                    last = number
                    yield number
                with self._errors():
                    await pubsub.get_message(ignore_subscribe_messages=True, timeout=poll_interval)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._redis.aclose()


def _redis_reason(exc: BaseException) -> str:
    """'unreachable: Connection refused' rather than redis-py's multi-part message."""
    if isinstance(exc, TimeoutError) or "Timeout" in type(exc).__name__:
        return f"unreachable: timed out ({exc})"
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno:
            return f"unreachable: {os.strerror(seen.errno)}"
        seen = seen.__cause__ or seen.__context__
    if isinstance(exc, ConnectionError | OSError) or "Connection" in type(exc).__name__:
        return f"unreachable: {exc}"
    return f"error: {exc}"


def _redact(url: str) -> str:
    """The URL without its password (in the userinfo or a ``password`` query parameter)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}@{hostport}" if user else hostport
    query = urlencode(
        [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "password"]
    )
    # Built by hand: urlunsplit drops the "//" of unix:///path, whose netloc is empty.
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


def _dump_state(value: dict[str, Any]) -> bytes:
    if not isinstance(value, dict):
        raise TypeError(f"state must be a dict, not {type(value).__name__}")
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def _load_state(raw: bytes, key: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise StoreError(f"state {key!r} is corrupt: {exc}") from None
    if not isinstance(value, dict):
        raise StoreError(f"state {key!r} is corrupt: not a JSON object")
    return value


# -- files ---------------------------------------------------------------------------------

_VERSION_FILE = re.compile(r"(\d+)\.(snap|json)")
_TMP_FILE = re.compile(r"\..+\.tmp")
#: A temporary file this old and not locked by a writer is a killed writer's leftover. The
#: grace only covers the instant between a writer creating its file and locking it.
_TMP_GRACE = 10.0
_CHUNK = 1 << 20


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
            return await asyncio.to_thread(func, *args)

    def _dirs(self) -> None:
        # The store directory itself is created 0700 too (its parents get the default mode).
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for directory in (
            self.path,
            *(self.path / sub for sub in ("versions", "state", "blob", "lock")),
        ):
            directory.mkdir(mode=0o700, exist_ok=True)

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Serialize a short critical section with every process using this directory."""
        self._dirs()
        fd = os.open(self.path / "lock" / ".store", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing drops the lock

    def _read_pointer(self) -> int | None:
        try:
            raw = (self.path / "active").read_bytes()
        except FileNotFoundError:
            return None
        try:
            return int(raw)
        except ValueError:
            raise StoreError(f"{self.url}: the active pointer is corrupt: {raw[:20]!r}") from None

    def _version_path(self, version: int, suffix: str) -> pathlib.Path:
        return self.path / "versions" / f"{int(version)}.{suffix}"

    def _read_version(self, version: int) -> tuple[VersionInfo, bytes] | None:
        try:
            info, size = VersionInfo.from_json(self._version_path(version, "json").read_bytes())
            data = self._version_path(version, "snap").read_bytes()
        except FileNotFoundError:
            return None
        if size is not None and size != len(data):
            raise StoreError(f"{self.url}: version {version} is truncated")
        return info, data

    def _read_info(self, version: int) -> VersionInfo | None:
        try:
            raw = self._version_path(version, "json").read_bytes()
        except FileNotFoundError:
            return None
        return VersionInfo.from_json(raw)[0]

    def _on_disk(self) -> dict[int, set[str]]:
        """Version numbers found in ``versions/``, with the suffixes present for each."""
        found: dict[int, set[str]] = {}
        try:
            names = os.listdir(self.path / "versions")
        except FileNotFoundError:
            return found
        for name in names:
            if m := _VERSION_FILE.fullmatch(name):
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
            number = max(seq, self._read_pointer() or 0, *self._on_disk(), 0) + 1
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
            current = self._read_pointer()
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
            for n in _victims(kept, self.keep, active):
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
        for _ in range(_READ_ATTEMPTS):
            number = self._read_pointer()
            if number is None:
                return None
            if (found := read(number)) is not None:
                return found
            if self._read_pointer() == number:
                raise StoreError(f"{self.url}: the active version {number} is missing")
        raise StoreError(f"{self.url}: the active version kept changing while being read")

    def _load_active_sync(self) -> tuple[VersionInfo, bytes] | None:
        return self._read_active(self._read_version)

    def _active_sync(self) -> VersionInfo | None:
        return self._read_active(self._read_info)

    async def active(self) -> VersionInfo | None:
        return await self._run(self._active_sync)

    async def load_active(self) -> tuple[VersionInfo, bytes] | None:
        return await self._run(self._load_active_sync)

    async def load(self, version: int) -> bytes:
        found = await self._run(self._read_version, version)
        if found is None:
            raise StoreError(f"version {version} is not kept in {self.url}")
        return found[1]

    def _versions_sync(self) -> list[VersionInfo]:
        return [info for n in self._kept() if (info := self._read_info(n)) is not None]

    async def versions(self) -> list[VersionInfo]:
        return await self._run(self._versions_sync)

    # -- coordination and sync state -------------------------------------------------------

    @asynccontextmanager
    async def lock(
        self, name: str = "sync", *, ttl: float = 900.0, wait: float = 0.0
    ) -> AsyncIterator[bool]:
        # ttl is not needed: the kernel drops a flock when its holder dies.
        path = self.path / "lock" / _check_key(name, "lock name")
        with self._errors():
            await asyncio.to_thread(self._dirs)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
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
                    await asyncio.sleep(min(_LOCK_POLL, remaining))
            yield acquired
        finally:
            os.close(fd)  # releases the lock, if held

    async def get_state(self, key: str) -> dict[str, Any] | None:
        path = self.path / "state" / f"{_check_key(key)}.json"
        raw = await self._run(_read_or_none, path)
        return None if raw is None else _load_state(raw, key)

    async def set_state(self, key: str, value: dict[str, Any]) -> None:
        path = self.path / "state" / f"{_check_key(key)}.json"
        await self._run(self._write, path, _dump_state(value))

    async def get_blob(self, key: str) -> bytes | None:
        return await self._run(_read_or_none, self.path / "blob" / _check_key(key))

    async def set_blob(self, key: str, data: bytes) -> None:
        await self._run(self._write, self.path / "blob" / _check_key(key), data)

    def _write(self, path: pathlib.Path, data: bytes) -> None:
        self._dirs()
        write_atomic(path, data)

    async def watch(self, *, poll_interval: float = 1.0) -> AsyncIterator[int]:
        # Polling the pointer is the notice: an atomic rename is all a reader can observe.
        last = None
        while True:
            number = await self._run(self._read_pointer)
            if number is not None and number != last:
                last = number
                yield number
            await asyncio.sleep(poll_interval)

    async def close(self) -> None:
        """Nothing to release: every operation opens and closes its own files."""


def _read_or_none(path: pathlib.Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def write_atomic(path: pathlib.Path, data: bytes, *, hold: bool = False) -> int | None:
    """Replace ``path`` with ``data`` atomically and durably.

    The temporary file is flock'ed while it is written so that a cleaner never removes a
    live writer's file. With ``hold`` the still-locked descriptor is returned (the caller
    closes it); otherwise it is closed.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        view = memoryview(data).cast("B")
        while view:
            written = os.write(fd, view[:_CHUNK])
            view = view[written:]
        os.fsync(fd)
        os.replace(tmp, path)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
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


# -- opening -------------------------------------------------------------------------------


def default_data_dir() -> pathlib.Path:
    """``$BLOCKLIST_DATA_DIR``, else ``$XDG_DATA_HOME/blocklist-proxy``
    (``~/.local/share/blocklist-proxy``): the embedded store when no store URL is given."""
    if configured := os.environ.get(DATA_DIR_ENV):
        return pathlib.Path(configured)
    xdg = os.environ.get("XDG_DATA_HOME")
    base = pathlib.Path(xdg) if xdg else pathlib.Path.home() / ".local" / "share"
    return base / "blocklist-proxy"


def open_store(url: str | None = None, *, keep: int = 5, prefix: str = "blocklist:") -> Store:
    """Open the store named by a store URL (DESIGN "Store URLs"); None is the embedded store
    in :func:`default_data_dir`. Nothing is contacted until the first operation.

    A Redis password not in the URL comes from ``$BLOCKLIST_REDIS_PASSWORD`` or the file
    named by ``$BLOCKLIST_REDIS_PASSWORD_FILE``, so that it never has to be on a command line.
    """
    if url is None:
        return FileStore(default_data_dir(), keep=keep)
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme in ("redis", "rediss", "unix"):
        try:
            parts = urlsplit(url)
            has_password = bool(parts.password) or any(
                k == "password" for k, _ in parse_qsl(parts.query)
            )
        except ValueError:
            raise StoreError(f"invalid redis URL {scheme}://...: cannot parse it") from None
        password = None if has_password else _password_from_env()
        return RedisStore(url, keep=keep, prefix=prefix, password=password)
    if scheme == "file":
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost") or not parts.path:
            raise StoreError(f"invalid file store URL {url!r}: use file:///absolute/path/to/dir")
        return FileStore(unquote(parts.path), keep=keep)
    shown = f"scheme {scheme!r}" if scheme else "without a scheme"
    raise StoreError(f"unsupported store URL {shown}: use one of {', '.join(SCHEMES)}")


def _password_from_env() -> str | None:
    if password := os.environ.get(PASSWORD_ENV):
        return password
    if path := os.environ.get(PASSWORD_FILE_ENV):
        try:
            return pathlib.Path(path).read_text().rstrip("\r\n") or None
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise StoreError(f"cannot read ${PASSWORD_FILE_ENV} {path}: {reason}") from None
    return None
