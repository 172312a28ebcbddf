"""The shared store: one Redis (or Valkey) database that many proxy nodes read."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError
from redis.backoff import ExponentialBackoff
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    NoPermissionError,
    RedisError,
)

from blocklist_addon.lists.store import sentinel
from blocklist_addon.lists.store.base import (
    LOCK_POLL,
    LOCK_TTL,
    PASSWORD_ENV,
    PASSWORD_FILE_ENV,
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
from blocklist_addon.lists.store.sentinel import SENTINEL_SCHEMES, SentinelClients

# Allocate a version number: INCR, but never at or below a number already stored or active
# (a lost or reset `seq` key must not make two versions share a number). A pointer that is
# not a number counts as none: the publish that follows mends it.
_NEXT_VERSION = """
local n = redis.call('INCR', KEYS[1])
local top = redis.call('ZREVRANGE', KEYS[2], 0, 0)
local highest = tonumber(redis.call('GET', KEYS[3]) or '0') or 0
if top[1] and tonumber(top[1]) > highest then highest = tonumber(top[1]) end
if n <= highest then
  n = highest + 1
  redis.call('SET', KEYS[1], n)
end
return n
"""

# The one atomic flip: only forward, only to a stored version, announced in the same step,
# and only while the publisher still holds its locks (KEYS[3..] holding tokens ARGV[3..]).
_ACTIVATE = """
for i = 3, #KEYS do
  if redis.call('GET', KEYS[i]) ~= ARGV[i] then return -2 end
end
local n = tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if n <= current then return 0 end
if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[1])
return 1
"""

# Prune the given versions, re-checking the pointer in the same step: a version chosen as a
# victim may have been activated meanwhile by a slow publisher.
_PRUNE = """
local active = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
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

# Renew a lock only if it still holds our token: never extend one another holder took after
# ours expired.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

log = logging.getLogger(__name__)


#: Seconds a publish waits for a replica to confirm a version's parts and its activation.
REPLICA_WAIT = 2.0
#: How often a publish starts over when failovers keep losing what it wrote.
PUBLISH_ATTEMPTS = 3


class RedisStore(Store):
    """A store in one Redis (6.2+) or Valkey database, shared by many proxy nodes.

    Layout under ``prefix``: ``version:<n>`` (bytes) and ``version:<n>:info`` (JSON), both
    written in one MULTI/EXEC; ``versions`` (sorted set of kept numbers); ``seq``;
    ``active`` (flipped by a Lua script that also PUBLISHes on ``announce``);
    ``state:<key>``, ``blob:<key>``, ``lock:<name>``.
    """

    #: Seconds a lock outlives a holder that died (renewed every third of it while the
    #: holder lives); behind Sentinel, long enough for a renewal to ride out a failover.
    lock_ttl: float = LOCK_TTL

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
        self.url = _redact(url)
        self.prefix = prefix
        self._sentinel: SentinelClients | None = None
        self._service = ""
        if url.partition("://")[0].lower() in SENTINEL_SCHEMES:
            try:
                spec = sentinel.parse(url, password=password)
            except ValueError as exc:
                raise StoreError(self._scrub(f"invalid sentinel URL {self.url}: {exc}")) from None
            self._secrets += [s for s in (spec.password, spec.sentinel_password) if s]
            self._sentinel = sentinel.connect(
                spec, connect_timeout=connect_timeout, timeout=timeout
            )
            self._redis: aioredis.Redis = self._sentinel.writer
            self._watcher: aioredis.Redis = self._sentinel.watcher
            self._where = spec.where
            self._service = spec.service
            self._failover_timeout = spec.failover_timeout
            # A renewal rides out a failover for up to failover_timeout; the lock must last
            # past that after its last renewal (a third of it earlier, at worst).
            self.lock_ttl = max(LOCK_TTL, 2 * spec.failover_timeout)
            # Asking the sentinels is cheap and the primary may be back under a new address
            # within seconds: a proxy retries every 0.5-1 s, not at a dead server's pace.
            self.reconnect_cap = 1.0
        else:
            try:
                self._redis = aioredis.from_url(
                    url,
                    password=password,
                    socket_connect_timeout=connect_timeout,
                    socket_timeout=timeout,
                    # One quick retry: a pooled connection may be stale after a Redis restart.
                    retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 1),
                )
            except (ValueError, RedisError) as exc:
                raise StoreError(self._scrub(f"invalid redis URL {self.url}: {exc}")) from None
            self._watcher = self._redis
            kwargs = self._redis.connection_pool.connection_kwargs
            self._where = kwargs.get("path") or (
                f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
            )
        self._secrets += [unquote(s) for s in self._secrets]
        self._channel = f"{prefix}announce"
        self._next_script = self._redis.register_script(_NEXT_VERSION)
        self._activate_script = self._redis.register_script(_ACTIVATE)
        self._prune_script = self._redis.register_script(_PRUNE)
        self._unlock_script = self._redis.register_script(_UNLOCK)
        self._renew_script = self._redis.register_script(_RENEW)
        #: Locks this store holds (key -> token), checked by the pointer's flip, and why a
        #: lock was lost (key -> message) while its holder still runs.
        self._held: dict[str, str] = {}
        self._lost: dict[str, str] = {}

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
        except NoPermissionError as exc:
            hint = ""
            if "'wait'" in str(exc):
                hint = " (behind Sentinel the sync's ACL user needs +wait: docs/proxy.md)"
            raise StoreError(self._scrub(f"redis at {self._where} refused: {exc}{hint}")) from None
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

    async def publish(
        self, data: bytes, *, checksum: str, entries: int, source: str
    ) -> VersionInfo:
        """As :meth:`Store.publish`; behind Sentinel, also safe across a failover.

        Redis replicates asynchronously, in order: a replica holds a prefix of what its
        primary did, and a failover loses the newest writes. So the version's parts are
        written, then WAITed for until a replica has them, and only then does the pointer
        name them (in a step that refuses a version whose parts are missing): a lost write
        is a lost version, never a pointer to nothing. A command that meets the failover is
        retried on the new primary (``failover_timeout``); when the failover lost the parts
        or the flip, the publish starts over there under a new number, so it either
        completes on the new primary or fails with the previous version still active.
        """
        self._check_locks()
        if self._sentinel is None:
            return await super().publish(data, checksum=checksum, entries=entries, source=source)
        for _ in range(PUBLISH_ATTEMPTS):
            number = await self._next_version()
            info = VersionInfo(number, checksum, entries, time.time(), source)
            await self._write_durably(info, data)
            if await self._activate_durably(number):
                await self._prune()
                return info
        raise StoreError(
            f"{self.url}: failovers lost this version {PUBLISH_ATTEMPTS} times over; "
            "it was not activated"
        )

    async def _replicas(self) -> int:
        assert self._sentinel is not None
        with self._errors():
            return await self._sentinel.replicas(self._service)

    async def _pipeline(self, *commands: tuple[object, ...]) -> tuple[int, list[Any]]:
        """``commands`` sent together on one connection, then WAIT for one replica when the
        sentinels see one up (WAIT counts the replicas holding that connection's writes).
        Rides out a failover as a whole: the new primary gets all of them, in order, and
        the replicas are counted again for it. Returns the replicas counted and the
        replies, WAIT's last."""
        assert self._sentinel is not None
        sentinels = self._sentinel

        async def send() -> tuple[int, list[Any]]:
            replicas = await sentinels.replicas(self._service)
            async with self._redis.pipeline(transaction=False) as pipe:
                for command in commands:
                    pipe.execute_command(*command)
                if replicas:
                    pipe.execute_command("WAIT", 1, int(REPLICA_WAIT * 1000))
                return replicas, await pipe.execute()

        with self._errors():
            return await sentinel.ride(send, self._failover_timeout)

    async def _write_durably(self, info: VersionInfo, data: bytes) -> None:
        """The version's parts in one MULTI/EXEC, then WAIT until a replica has them."""
        n = info.version
        replicas, results = await self._pipeline(
            ("MULTI",),
            ("SET", self._key("version", n), data),
            ("SET", self._key("version", n, "info"), info.to_json(len(data))),
            ("ZADD", self._key("versions"), n, str(n)),
            ("EXEC",),
        )
        # No confirmation: refuse, unless the sentinels see no replica any more (the only
        # one was just promoted, and this primary is all there is).
        if replicas and int(results[-1]) < 1 and await self._replicas():
            raise StoreError(
                f"redis at {self._where}: no replica confirmed version {n} within "
                f"{REPLICA_WAIT:g} s (replication lagging or broken?); it was not activated"
            )

    async def _activate_durably(self, number: int) -> bool:
        """Flip the pointer and WAIT for a replica; False when the flip cannot stand (the
        parts, or the flip itself, were lost in a failover): the caller starts over."""
        self._check_locks()
        keys = [self._key("active"), self._key("version", number, "info"), *self._held]
        args = [number, self._channel, *self._held.values()]
        # EVAL, not EVALSHA: a new primary after a failover has no script cache.
        replicas, results = await self._pipeline(("EVAL", _ACTIVATE, len(keys), *keys, *args))
        if int(results[0]) == -2:
            raise self._lost_lock(number)
        if int(results[0]) < 0:
            return False  # the parts are not on this primary: a failover lost them
        if replicas and int(results[-1]) < 1:
            # Maybe the primary died before any replica had the flip: ask whichever primary
            # answers now whether it stands.
            current = await self._active_number()
            return current is not None and current >= number
        return True

    async def _activate(self, version: int) -> bool:
        self._check_locks()
        with self._errors():
            keys = [self._key("active"), self._key("version", version, "info"), *self._held]
            args = [version, self._channel, *self._held.values()]
            result = int(await self._activate_script(keys=keys, args=args))
        if result == -2:
            raise self._lost_lock(version)
        if result < 0:
            raise StoreError(f"cannot activate version {version}: it is not in {self.url}")
        return result == 1

    async def _prune(self) -> None:
        with self._errors():
            kept = [int(n) for n in await self._redis.zrange(self._key("versions"), 0, -1)]
            victims = prune_victims(kept, self.keep, await self._active_number())
            if victims:
                keys = [self._key("active"), self._key("versions")]
                for n in victims:
                    keys += [self._key("version", n), self._key("version", n, "info")]
                await self._prune_script(keys=keys, args=victims)

    async def _active_number(self, client: aioredis.Redis | None = None) -> int | None:
        with self._errors():
            raw = await (client or self._redis).get(self._key("active"))
        if raw is None:
            return None
        try:
            return int(raw)
        except ValueError:
            raise StoreError(f"{self.url}: the active pointer is corrupt: {raw[:20]!r}") from None

    async def active(self) -> VersionInfo | None:
        for _ in range(READ_ATTEMPTS):
            number = await self._active_number()
            if number is None:
                return None
            with self._errors():
                raw = await self._redis.get(self._key("version", number, "info"))
            if raw is not None:
                try:
                    return VersionInfo.from_json(raw)[0]
                except IncompleteVersion:
                    return None  # damaged: no whole version is active (Store.active)
            if await self._active_number() == number:
                return None  # a lost write: no whole version is active (Store.active)
        raise StoreError(f"{self.url}: the active version kept changing while being read")

    async def load_active(self) -> tuple[VersionInfo, bytes] | None:
        for _ in range(READ_ATTEMPTS):
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
                raise IncompleteVersion(f"{self.url}: the active version {number} is missing")
        raise StoreError(f"{self.url}: the active version kept changing while being read")

    def _checked(self, raw: bytes, data: bytes) -> tuple[VersionInfo, bytes]:
        info, size = VersionInfo.from_json(raw)
        if size is not None and size != len(data):
            raise IncompleteVersion(f"{self.url}: version {info.version} is truncated")
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
        found = []  # but a version whose metadata is damaged: as the file store's
        for raw in raws:
            if raw is not None:
                with contextlib.suppress(IncompleteVersion):
                    found.append(VersionInfo.from_json(raw)[0])
        return found

    # -- coordination and sync state -------------------------------------------------------

    @asynccontextmanager
    async def lock(
        self, name: str = "sync", *, ttl: float | None = None, wait: float = 0.0
    ) -> AsyncIterator[bool]:
        """As :meth:`Store.lock`. The lock lasts ``ttl`` (default :attr:`lock_ttl`) and is
        renewed every third of it while the holder lives, so a holder that dies (SIGKILL, a
        reboot, Redis restarted from its append-only file) holds up the next runs for at
        most ``ttl``. A holder whose lock was lost (a renewal found it expired or taken)
        cannot activate a version (StoreError), and its exit raises StoreError: another
        sync may hold the lock."""
        lifetime = self.lock_ttl if ttl is None else ttl
        ms = max(1, int(lifetime * 1000))
        key = self._key("lock", check_key(name, "lock name"))
        token = secrets.token_hex(16)
        deadline = time.monotonic() + wait
        while True:
            with self._errors():
                acquired = (
                    bool(await self._redis.set(key, token, nx=True, px=ms))
                    or (await self._redis.get(key)) == token.encode()
                )  # a retried SET, first applied
            remaining = deadline - time.monotonic()
            if acquired or remaining <= 0:
                break
            await asyncio.sleep(min(LOCK_POLL, remaining))
        if not acquired:
            yield False
            return
        self._held[key] = token
        renewing = asyncio.create_task(self._renew(key, token, lifetime))
        try:
            yield True
        except BaseException:
            await self._unlock(key, token, renewing)
            with contextlib.suppress(StoreError):  # the TTL frees it; keep the first error
                await self._release(key, token)
            raise
        lost = await self._unlock(key, token, renewing)
        if not await self._release(key, token) and lost is None:
            lost = f"{self.url}: the lock {name!r} expired while held"
        if lost is not None:
            raise StoreError(f"{lost}; another sync may have run meanwhile")

    async def _renew(self, key: str, token: str, lifetime: float) -> None:
        """Extend the lock to ``lifetime`` every third of it while it holds ``token``; when
        it does not (expired, taken by another holder), note why and stop."""
        ms = max(1, int(lifetime * 1000))
        while True:
            await asyncio.sleep(lifetime / 3)
            try:
                with self._errors():
                    renewed = await self._renew_script(keys=[key], args=[token, ms])
            except StoreError as exc:
                # Unreachable for now: the lock may still stand; the next renewal tells.
                log.warning("%s; lock not renewed, trying again", exc)
                continue
            if not renewed:
                name = key.removeprefix(self._key("lock", ""))
                self._lost[key] = (
                    f"{self.url}: lost the lock {name!r} (it expired or another holder took it)"
                )
                log.warning("%s", self._lost[key])
                return

    async def _unlock(self, key: str, token: str, renewing: asyncio.Task[None]) -> str | None:
        """Stop renewing the lock and forget it; why it was lost, if it was."""
        renewing.cancel()
        await asyncio.wait([renewing])  # a cancellation of the caller still propagates
        if self._held.get(key) == token:
            del self._held[key]
        return self._lost.pop(key, None)

    def _check_locks(self) -> None:
        """StoreError when a lock this store holds was lost: activating now could overlap
        another holder's run."""
        if self._lost:
            raise StoreError(
                f"{next(iter(self._lost.values()))}; the new version was not activated"
            )

    def _lost_lock(self, version: int) -> StoreError:
        names = ", ".join(repr(k.removeprefix(self._key("lock", ""))) for k in self._held)
        return StoreError(
            f"{self.url}: lost the lock {names} (it expired or another holder took it); "
            f"version {version} was not activated"
        )

    async def _release(self, key: str, token: str) -> bool:
        """Delete the lock only if ``token`` still holds it."""
        with self._errors():
            return bool(await self._unlock_script(keys=[key], args=[token]))

    async def get_state(self, key: str) -> dict[str, Any] | None:
        with self._errors():
            raw = await self._redis.get(self._key("state", check_key(key)))
        return None if raw is None else load_state(raw, key)

    async def set_state(self, key: str, value: dict[str, Any]) -> None:
        raw = dump_state(value)
        with self._errors():
            await self._redis.set(self._key("state", check_key(key)), raw)

    async def get_blob(self, key: str) -> bytes | None:
        with self._errors():
            return await self._redis.get(self._key("blob", check_key(key)))

    async def set_blob(self, key: str, data: bytes) -> None:
        with self._errors():
            await self._redis.set(self._key("blob", check_key(key)), data)

    async def watch(self, *, poll_interval: float = 1.0) -> AsyncIterator[int]:
        # Subscribe before the first read so that no flip falls between the two; the notice
        # only wakes us early, the pointer itself is always what we report.
        pubsub = self._watcher.pubsub()
        try:
            with self._errors():
                await pubsub.subscribe(self._channel)
            last: tuple[int, bytes | None] | None = None
            while True:
                number = await self._active_number(self._watcher)
                if number is not None:
                    # The number and its metadata (created_at, checksum): a store that lost
                    # its data numbers its next list like the one it lost (Store.watch).
                    with self._errors():
                        raw = await self._watcher.get(self._key("version", number, "info"))
                    if (number, raw) != last:
                        last = (number, raw)
                        yield number
                with self._errors():
                    await pubsub.get_message(ignore_subscribe_messages=True, timeout=poll_interval)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def close(self) -> None:
        if self._sentinel is not None:
            await self._sentinel.aclose()
            return
        with contextlib.suppress(Exception):
            await self._redis.aclose()


def _redis_reason(exc: BaseException) -> str:
    """'unreachable: Connection refused' rather than redis-py's multi-part message."""
    if (why := sentinel.untrusted(exc)) is not None:
        # Before the errno: the ssl error's is 1, which would read "Operation not permitted".
        return (
            f"refused: its TLS certificate is not trusted ({why}); ssl_ca_certs in the URL "
            "names the CA that signed it"
        )
    if isinstance(exc, MasterNotFoundError):
        return (
            "unreachable: no sentinel names a primary that is up (a failover under way, "
            "or no sentinel answers)"
        )
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
        [
            (k, v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
            if k not in ("password", "sentinel_password")
        ]
    )
    # Built by hand: urlunsplit drops the "//" of unix:///path, whose netloc is empty.
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")
