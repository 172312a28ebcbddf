"""Redis Sentinel store URLs: the primary is found through the sentinels and followed across
failovers (DESIGN "Store URLs").

``redis+sentinel://[user:password@]host[:port][,host[:port]...]/service[/db][?query]``, and
``rediss+sentinel://...`` for TLS to the sentinels and the data nodes alike. ``user`` and
``password`` are the data nodes' ACL user (a password not in the URL comes from
``$BLOCKLIST_REDIS_PASSWORD(_FILE)``, as for ``redis://``). Sentinels that require a password
of their own get ``sentinel_username`` from the query and the password from
``$BLOCKLIST_SENTINEL_PASSWORD`` or the file named by ``$BLOCKLIST_SENTINEL_PASSWORD_FILE``
(or ``sentinel_password`` in the query). ``failover_timeout`` (seconds, default 30) is how
long an operation waits for a new primary before it fails; set it above Sentinel's
``down-after-milliseconds`` plus the failover's own time. It also sets how long a lock (the
sync's) outlives a holder that died: twice it, at least ``LOCK_TTL``, so that a renewal
riding out a failover still finds its lock on the new primary. The rest of the query is
redis-py's (``socket_timeout``, ``ssl_ca_certs``, ``ssl_certfile``, ...).

Two clients share one Sentinel manager: the *writer*, whose every command rides out a
failover (reconnecting through the sentinels until ``failover_timeout``), and the *watcher*,
which fails at once, so that a proxy following the store notices the outage, reports it and,
reconnected, compares the new primary's list with its own (a primary promoted after a loss
may number a different list like the one in force).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import re
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    ConnectionError,
    ResponseError,
    TimeoutError,
)

__all__ = [
    "SENTINEL_PASSWORD_ENV",
    "SENTINEL_PASSWORD_FILE_ENV",
    "SENTINEL_SCHEMES",
    "SentinelClients",
    "SentinelURL",
    "connect",
    "parse",
    "ride",
    "untrusted",
]

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
SENTINEL_PASSWORD_ENV = "BLOCKLIST_SENTINEL_PASSWORD"
SENTINEL_PASSWORD_FILE_ENV = "BLOCKLIST_SENTINEL_PASSWORD_FILE"
DEFAULT_PORT = 26379
#: Seconds an operation waits for the sentinels to name a primary that answers.
FAILOVER_TIMEOUT = 30.0
#: Query parameters this module reads itself (redis-py would refuse them).
_OWN = ("failover_timeout", "sentinel_username", "sentinel_password")


@dataclass(frozen=True)
class SentinelURL:
    """A parsed ``redis+sentinel://`` URL."""

    sentinels: list[tuple[str, int]]
    service: str
    db: int
    tls: bool
    username: str | None
    password: str | None
    sentinel_username: str | None
    sentinel_password: str | None
    failover_timeout: float
    options: dict[str, Any] = field(default_factory=dict)  # redis-py connection kwargs

    @property
    def where(self) -> str:
        """How messages name it: ``sentinel service 'mymaster' via 127.0.0.1:26379,...``."""
        hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.sentinels)
        return f"sentinel service {self.service!r} via {hosts}"


def parse(url: str, *, password: str | None = None) -> SentinelURL:
    """Parse a sentinel store URL; ValueError with a one-line reason (never the password).
    ``password``: the data nodes' password when the URL has none (from the environment)."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in SENTINEL_SCHEMES:
        raise ValueError(f"not a sentinel URL: use {' or '.join(SENTINEL_SCHEMES)}://")
    netloc, _, tail = rest.partition("/")
    path, _, query = tail.partition("?")
    userinfo, at, hosts = netloc.rpartition("@")
    if not at:
        userinfo, hosts = "", netloc
    sentinels = []
    for host in hosts.split(","):
        try:
            parts = urlsplit(f"//{host}")
            port = parts.port or DEFAULT_PORT
        except ValueError:
            raise ValueError(f"bad sentinel address {host!r}: use host:port") from None
        if not parts.hostname:
            raise ValueError("a sentinel address is empty: name host:port[,host:port...]")
        sentinels.append((parts.hostname, port))
    segments = [unquote(s) for s in path.split("/") if s]
    if not segments or len(segments) > 2:
        raise ValueError("name the service and optionally the db: .../mymaster/0")
    service = segments[0]
    try:
        db = int(segments[1]) if len(segments) == 2 else 0
    except ValueError:
        raise ValueError(f"the db must be a number, not {segments[1]!r}") from None
    own = dict(parse_qsl(query))
    rest_query = urlencode([(k, v) for k, v in parse_qsl(query) if k not in _OWN])
    try:
        failover_timeout = float(own.get("failover_timeout", FAILOVER_TIMEOUT))
    except ValueError:
        raise ValueError("failover_timeout must be a number of seconds") from None
    if not 0 <= failover_timeout <= 3600:
        raise ValueError("failover_timeout must be 0 to 3600 seconds")
    # redis-py reads the rest of the query (typed: socket_timeout=2.5, ssl_check_hostname...).
    options: dict[str, Any] = dict(parse_url(f"redis://localhost/?{rest_query}"))
    options.pop("host", None)
    if scheme == "redis+sentinel" and any(k.startswith("ssl_") for k in options):
        raise ValueError("ssl_* options need TLS: use rediss+sentinel://")
    user, colon, secret = userinfo.partition(":")
    in_url = options.pop("password", None) or (unquote(secret) if colon and secret else None)
    return SentinelURL(
        sentinels=sentinels,
        service=service,
        db=int(options.pop("db", db)),
        tls=scheme == "rediss+sentinel",
        username=unquote(user) or options.pop("username", None) or None,
        password=in_url or password,
        sentinel_username=own.get("sentinel_username") or None,
        sentinel_password=own.get("sentinel_password") or _sentinel_password_from_env(),
        failover_timeout=failover_timeout,
        options=options,
    )


def _sentinel_password_from_env() -> str | None:
    if password := os.environ.get(SENTINEL_PASSWORD_ENV):
        return password
    if path := os.environ.get(SENTINEL_PASSWORD_FILE_ENV):
        try:
            return pathlib.Path(path).read_text().rstrip("\r\n") or None
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise ValueError(
                f"cannot read ${SENTINEL_PASSWORD_FILE_ENV} {path}: {reason}"
            ) from None
    return None


_VERIFY_FAILED = re.compile(r"certificate verify failed: (.+?)\.?\s*(?:\(_ssl|$)")


def untrusted(exc: BaseException) -> str | None:
    """Why a TLS certificate was refused (``self-signed certificate in certificate chain``)
    when that is what ``exc`` is, else None. redis-py chains the ssl error to a connection
    error, but a sentinel's is only in the text of MasterNotFoundError."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return str(seen.verify_message or seen.reason or seen)
        seen = seen.__cause__ or seen.__context__
    found = _VERIFY_FAILED.search(str(exc))
    return found.group(1) if found else None


async def ride[T](op: Callable[[], Awaitable[T]], timeout: float) -> T:
    """Run ``op`` again after a connection error until ``timeout`` seconds have passed.

    Each attempt takes a connection from the pool, and a sentinel-managed connection asks the
    sentinels for the primary when it connects, so an operation that met a failover
    completes on the new primary. (redis-py's own Retry reconnects to the address it had:
    the dead primary.)"""
    until = time.monotonic() + timeout
    pause = 0.05
    while True:
        try:
            return await op()
        except (AuthenticationError, AuthorizationError):
            raise  # a wrong password stays wrong on the next primary
        except (ConnectionError, TimeoutError) as exc:
            if untrusted(exc) is not None or time.monotonic() + pause > until:
                raise  # and so does a certificate the client cannot verify
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.5)


class FailoverRedis(aioredis.Redis):
    """A client whose every command rides out a failover (:func:`ride`)."""

    failover_timeout = FAILOVER_TIMEOUT

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        parent = super().execute_command
        return await ride(lambda: parent(*args, **options), self.failover_timeout)


@dataclass
class SentinelClients:
    """The manager (asks the sentinels), the writer (rides out a failover) and the watcher
    (fails at once), the latter two following the service's primary."""

    manager: Sentinel
    writer: aioredis.Redis
    watcher: aioredis.Redis

    async def replicas(self, service: str) -> int:
        """How many replicas the sentinels could promote (up, connected, their link to the
        primary ok): what a version has to reach before the pointer names it. A primary
        that just died is listed as a replica of its successor, disconnected: not counted,
        so a publish after a failover does not wait for it."""
        for client in self.manager.sentinels:
            try:
                listed = await client.sentinel_slaves(service)
            except (ConnectionError, TimeoutError, ResponseError):
                continue
            return sum(
                1
                for r in listed
                if not (r["is_sdown"] or r["is_odown"] or r["is_disconnected"])
                and r.get("master-link-status") == "ok"
            )
        raise MasterNotFoundError(f"no sentinel answers for {service!r}")

    async def aclose(self) -> None:
        for client in (self.writer, self.watcher, self.manager):
            with contextlib.suppress(Exception):  # closing: nothing left to report it to
                await client.aclose()


def connect(spec: SentinelURL, *, connect_timeout: float, timeout: float) -> SentinelClients:
    """The clients for ``spec``; nothing is contacted until the first command."""
    data: dict[str, Any] = {
        "socket_connect_timeout": connect_timeout,
        "socket_timeout": timeout,
        **spec.options,
    }
    tls = {k: v for k, v in data.items() if k.startswith("ssl_")}
    if spec.tls:
        tls["ssl"] = True
    sentinel_kwargs: dict[str, Any] = {
        "socket_connect_timeout": data["socket_connect_timeout"],
        "socket_timeout": data["socket_timeout"],
        "retry": Retry(NoBackoff(), 0),
        **tls,
    }
    if spec.sentinel_password:
        sentinel_kwargs["password"] = spec.sentinel_password
        if spec.sentinel_username:
            sentinel_kwargs["username"] = spec.sentinel_username
    manager = Sentinel(spec.sentinels, sentinel_kwargs=sentinel_kwargs)
    node = {**data, "ssl": spec.tls, "db": spec.db}
    if spec.username:
        node["username"] = spec.username
    if spec.password:
        node["password"] = spec.password
    # One quick retry, as for redis://: a pooled connection may be stale.
    quick = Retry(ExponentialBackoff(cap=0.5, base=0.05), 1)
    writer = manager.master_for(spec.service, redis_class=FailoverRedis, retry=quick, **node)
    writer.failover_timeout = spec.failover_timeout
    watcher = manager.master_for(spec.service, retry=quick, **node)
    return SentinelClients(manager, writer, watcher)
