"""The list in force: loaded at start, replaced when the store announces a new version.

DESIGN "Failure behaviour" drives every branch here:

- at start, the store's active version; if the store is unreachable (or empty), the
  last-known-good copy on local disk; with neither, refuse to start (an error logged during
  startup makes mitmproxy exit) unless ``blocklist_allow_empty`` says otherwise;
- while running, follow the store (its announcements, and a poll of the pointer in case a
  notice is lost) and swap the whole list in one assignment, so no request ever sees half
  of one; each new version is also written to the last-known-good copy;
- when the store goes away, keep enforcing what is in memory, retry with backoff, and say
  so on the health endpoint;
- the tasks that follow the store are supervised: one that fails with any other error (a
  bug, an exception the store does not wrap, a version that cannot be loaded) is logged,
  counted (``blocklist_task_restarts_total``) and started again with backoff, and health
  says degraded until it works again.

The same class follows the image hash list in the store's "hashes" namespace
(``ListKind``: its loader, gauge names and whether a proxy may start without one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pathlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from mitmproxy import ctx

from blocklist_addon.lists import lastgood
from blocklist_addon.lists.store import (
    SYNCED_STATE,
    IncompleteVersion,
    Store,
    StoreError,
    VersionInfo,
    open_store,
)
from blocklist_addon.ops import notify
from blocklist_addon.ops.errors import describe_error
from blocklist_addon.ops.metrics import Gauge, Metrics
from blocklist_addon.ops.options import int_option
from blocklist_addon.urls.matcher import Blocklist
from blocklist_addon.urls.snapshot import Snapshot, SnapshotError

__all__ = ["URLS", "ActiveList", "ListKind"]

log = logging.getLogger(__name__)

#: Longest wait between reconnection attempts while the store is unreachable, and between
#: restarts of a failing background task.
MAX_BACKOFF = 30.0
#: A background task that ran this long before failing restarts after the shortest delay.
HEALTHY_RUN = 60.0

Origin = Literal["store", "last-good"]


@dataclass(frozen=True)
class ListKind:
    """What differs between the lists a proxy follows."""

    what: str  # in log lines, after "blocklist: ": "" for the URL list, "hash list " ...
    namespace: str | None  # the store namespace (open_store)
    parse: Callable[[bytes], Any]  # snapshot bytes -> a checked snapshot (with .checksum)
    wrap: Callable[[Any], Any]  # checked snapshot -> what requests are matched against
    gauge: str  # gauge name prefix
    required: bool  # the proxy refuses to start without one (unless blocklist_allow_empty)
    labels: dict[str, str] = field(default_factory=dict)  # on the shared counters


URLS = ListKind("", None, Snapshot.from_bytes, Blocklist, "blocklist_list", True)


class ActiveList:
    """Holds the list in force; every other addon reads ``blocklist`` from here."""

    def __init__(
        self, metrics: Metrics, *, clock: Callable[[], float] = time.time, kind: ListKind = URLS
    ) -> None:
        """``clock``: the wall clock list ages are measured on (tests move it)."""
        self.metrics = metrics
        self.clock = clock
        self.kind = kind
        #: Another list that makes this one optional at start (the hash list, for URLs).
        self.enough: Callable[[], bool] = lambda: False
        self.blocklist: Blocklist | None = None  # what ``kind.wrap`` made (a HashList, ...)
        self.info: VersionInfo | None = None
        self.origin: Origin | None = None
        self.fresh_at: float | None = None  # when a sync last confirmed the list current
        self.started = False  # the start-up load has finished (successfully or not)
        self._started = asyncio.Event()
        self.store_up = False
        self.failing: set[str] = set()  # background tasks that failed and have not recovered
        self._store: Store | None = None
        self._incomplete = ""  # the last incomplete version logged (once each)
        self._said = ""  # the store error already told during this outage
        self._tasks: list[asyncio.Task[None]] = []
        # Options, read in configure (these defaults are the options' own).
        self.poll = 1
        self.max_age = 48 * 3600
        self.start_wait = 30
        self.start_timeout = 10

    def load(self, loader) -> None:
        if self.kind is not URLS:
            return  # the URL list registers the options every list shares
        loader.add_option(
            "blocklist_store",
            str,
            "",
            "Store to enforce the list from: redis://[user:password@]host[:port][/db], "
            "rediss://..., unix:///path/to/redis.sock, "
            "redis+sentinel://[user:password@]host:port[,host:port...]/service[/db] "
            "(rediss+sentinel:// for TLS) or file:///path/to/dir. Empty: the "
            "embedded store in $BLOCKLIST_DATA_DIR, else /var/lib/blocklist-proxy when it "
            "exists, else the XDG data directory (as every command). A Redis "
            "password can also come from $BLOCKLIST_REDIS_PASSWORD or "
            "$BLOCKLIST_REDIS_PASSWORD_FILE.",
        )
        loader.add_option(
            "blocklist_lastgood",
            str,
            "",
            "Where to keep the last-known-good copy of the list, used when the store is "
            "unreachable at start. Empty: a file per store under the data directory's proxy/.",
        )
        loader.add_option(
            "blocklist_allow_empty",
            bool,
            False,
            "Start even when there is no list at all (no active version in the store and no "
            "last-known-good copy). Nothing is blocked until a list is published, and "
            "/healthz answers 503 meanwhile.",
        )
        loader.add_option(
            "blocklist_poll",
            int,
            1,
            "Seconds between checks of the store's active version, in addition to its "
            "announcements (Redis pub/sub).",
        )
        loader.add_option(
            "blocklist_max_age",
            int,
            48 * 3600,
            "Seconds after which a list not confirmed by a sync counts as stale: it is still "
            "enforced, but /healthz answers 503 and the metrics say stale. 0: never stale.",
        )
        loader.add_option(
            "blocklist_start_wait",
            int,
            30,
            "Seconds a connection that arrives before the list is loaded at start waits for "
            "it (nothing is decrypted or forwarded meanwhile). After that it is refused: a "
            "request gets 503, a TLS connection is closed.",
        )
        loader.add_option(
            "blocklist_start_timeout",
            int,
            10,
            "Seconds to wait for the store at start before falling back to the "
            "last-known-good copy.",
        )

    def configure(self, updated: set[str]) -> None:
        self.poll = int_option("blocklist_poll", 1)
        self.max_age = int_option("blocklist_max_age", 0)
        self.start_wait = int_option("blocklist_start_wait", 0)
        self.start_timeout = int_option("blocklist_start_timeout", 1)

    async def running(self) -> None:
        try:
            self._store = open_store(
                ctx.options.blocklist_store or None, namespace=self.kind.namespace
            )
        except StoreError as exc:
            # An error logged during start-up makes mitmproxy exit (status 1).
            log.error(f"blocklist: cannot use blocklist_store: {exc}")
            self._set_started()
            return
        try:
            await self._start()
        finally:
            self._set_started()
        if self.kind is URLS:
            if self.blocklist is not None:
                notify.ready(f"enforcing version {_v(self.info)} from {self.origin}")
            elif self.enough() or ctx.options.blocklist_allow_empty:
                notify.ready("running without a URL list")
        self._tasks = [
            asyncio.create_task(self._supervise("follow", self._follow), name="blocklist follow"),
            asyncio.create_task(
                self._supervise("freshness", self._freshness), name="blocklist freshness"
            ),
        ]

    def _set_started(self) -> None:
        self.started = True
        self._started.set()

    async def wait_started(self) -> bool:
        """Wait (up to ``blocklist_start_wait``) for the start-up load; False on timeout."""
        if not self.started:
            try:
                async with asyncio.timeout(self.start_wait):
                    await self._started.wait()
            except TimeoutError:
                return False
        return True

    async def done(self) -> None:
        if self.kind is URLS:
            notify.stopping()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._store is not None:
            await self._store.close()

    # -- state for the other addons ------------------------------------------------------

    # Methods, not properties: mitmproxy reads every attribute of an addon when it registers.

    def age(self) -> float | None:
        """Seconds since a sync last confirmed the list current (None without a list)."""
        if self.fresh_at is None:
            return None
        # A clock that jumped back (or a sync host's clock ahead of ours) reads as fresh, not
        # as a negative age.
        return max(0.0, self.clock() - self.fresh_at)

    def stale(self) -> bool:
        max_age = self.max_age
        age = self.age()
        return age is not None and max_age > 0 and age > max_age

    def gauges(self) -> list[Gauge]:
        info = self.info
        g = self.kind.gauge
        return [
            Gauge(f"{g}_loaded", "1 when a list is enforced.", int(info is not None)),
            Gauge(f"{g}_version", "Store version of the list in force.", _v(info)),
            Gauge(
                f"{g}_entries", "Entries of the list in force.", 0 if info is None else info.entries
            ),
            Gauge(
                f"{g}_age_seconds",
                "Seconds since a sync last confirmed the list current.",
                self.age() or 0,
            ),
            Gauge(f"{g}_stale", "1 when the list is older than max age.", self.stale()),
            Gauge(
                "blocklist_store_up" if self.kind is URLS else f"{g}_store_up",
                "1 when the store answered the last check.",
                self.store_up,
            ),
            Gauge(
                f"{g}_from_lastgood",
                "1 when the list in force came from the local last-known-good copy.",
                self.origin == "last-good",
            ),
        ]

    # -- loading ---------------------------------------------------------------------------

    def _lastgood_path(self) -> pathlib.Path:
        configured = ctx.options.blocklist_lastgood
        assert self._store is not None
        path = pathlib.Path(configured) if configured else lastgood.default_path(self._store.url)
        if self.kind.namespace:  # beside the URL list's copy (a Redis URL names both)
            path = path.with_name(f"{path.stem}-{self.kind.namespace}{path.suffix}")
        return path

    async def _start(self) -> None:
        assert self._store is not None
        store = self._store
        # What the store and the copy were found to be, for the line refusing to start.
        found_store = f"the store {store.url} has no active version"
        found_copy = f"there is no last-known-good copy at {self._lastgood_path()}"
        try:
            async with asyncio.timeout(self.start_timeout):
                pair = await store.load_active()
            self.store_up = True
        except (StoreError, TimeoutError) as exc:
            reason = str(exc) or f"no answer within {self.start_timeout} s"
            found_store = f"the store {store.url} could not be read ({reason})"
            self._said = str(exc)
            log.warning(
                f"blocklist: {self.kind.what}store {store.url} unavailable at start: {reason}"
            )
            self.metrics.inc("blocklist_store_errors_total", **self.kind.labels)
            pair = None
        if pair is not None:
            try:
                await self._install(*pair, origin="store")
                return
            except SnapshotError as exc:
                found_store = f"the store {store.url}'s active version is unusable ({exc})"
                log.warning(
                    f"blocklist: the {self.kind.what}store's active version is unusable: {exc}"
                )
        path = self._lastgood_path()
        try:
            copy = await asyncio.to_thread(lastgood.read, path, self.kind.parse)
        except lastgood.LastGoodError as exc:
            found_copy = f"the last-known-good copy {path} is unusable ({exc.reason})"
            log.warning(f"blocklist: {exc}")
            copy = None
        if copy is not None:
            info, snapshot = copy
            self._set(self.kind.wrap(snapshot), info, "last-good")
            log.warning(
                f"blocklist: enforcing the {self.kind.what}last-known-good copy {path} "
                f"(version {info.version}, "
                f"{info.entries:,} entries) until the store {store.url} answers"
            )
            return
        if not self.kind.required:
            log.info(f"blocklist: no {self.kind.what}in {store.url}: none is enforced")
            return
        if self.enough():
            log.warning(
                f"blocklist: no URL list in {store.url}; enforcing the image hash list only"
            )
            return
        if ctx.options.blocklist_allow_empty:
            log.warning(
                "blocklist: starting with NO list (blocklist_allow_empty): nothing is blocked "
                f"until a version is published to {store.url}"
            )
            return
        log.error(
            f"blocklist: no list to enforce: {found_store} and {found_copy}. Run "
            "blocklist-sync first (or fix the store), or set blocklist_allow_empty=true to "
            "start without a list."
        )

    async def _install(
        self, info: VersionInfo, data: bytes, *, origin: Origin, reload: bool = False
    ) -> None:
        """Load ``data`` off the event loop, swap it in, then save the local copy.
        ``reload``: counted as a reload, together with the swap (not after the copy)."""
        kind = self.kind

        def load() -> Any:
            snapshot = kind.parse(data)
            # Whole and intact is not enough: the bytes must be the list the metadata names
            # (else a mix, and a last-known-good copy this proxy would refuse at its start).
            if snapshot.checksum != info.checksum:
                raise SnapshotError(
                    f"its bytes' checksum {snapshot.checksum[:16]}... is not the "
                    f"{info.checksum[:16]}... its metadata names"
                )
            return kind.wrap(snapshot)

        blocklist = await asyncio.to_thread(load)
        self._set(blocklist, info, origin)
        if reload:
            self.metrics.inc("blocklist_reloads_total", **self.kind.labels)
        log.info(
            f"blocklist: enforcing {kind.what}version {info.version} ({info.entries:,} entries, "
            f"{info.source}) from {origin}"
        )
        try:
            await asyncio.to_thread(lastgood.write, self._lastgood_path(), info, data)
        except OSError as exc:
            self.metrics.inc("blocklist_lastgood_errors_total", **self.kind.labels)
            log.warning(
                f"blocklist: cannot write the last-known-good copy {self._lastgood_path()}: "
                f"{exc.strerror or exc}; enforcing continues"
            )

    def _set(self, blocklist: Blocklist, info: VersionInfo, origin: Origin) -> None:
        # One assignment each: a request reads self.blocklist once and sees one whole list.
        self.blocklist = blocklist
        self.info = info
        self.origin = origin
        if self.fresh_at is None or origin == "store":
            self.fresh_at = max(self.fresh_at or 0.0, info.created_at)

    # -- following the store ---------------------------------------------------------------

    async def _supervise(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        """Run ``run`` for as long as the proxy runs, starting it again (with backoff) when
        it fails: a follower that died silently would leave the proxy on an old list, its
        suppressions unapplied, while /healthz said ok."""
        backoff = 1.0
        while True:
            began = time.monotonic()
            try:
                await run()
                raise RuntimeError("returned")  # the loops never end by themselves
            except Exception as exc:
                if time.monotonic() - began > HEALTHY_RUN:
                    backoff = 1.0
                self.failing.add(name)
                self.metrics.inc("blocklist_task_restarts_total", task=name, **self.kind.labels)
                version = "no list" if self.info is None else f"version {self.info.version}"
                log.error(
                    f"blocklist: the {self.kind.what}{name} task failed ({describe_error(exc)}: "
                    f"{str(exc)[:200]}); still enforcing {version}, restarting it in "
                    f"{backoff:.0f} s"
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    def _working(self, name: str) -> None:
        """``name`` did its job once again: it no longer makes health degraded."""
        if name in self.failing:
            self.failing.discard(name)
            log.info(f"blocklist: the {self.kind.what}{name} task works again")

    async def _follow(self) -> None:
        assert self._store is not None
        store, backoff = self._store, 1.0
        while True:
            try:
                first = True
                async for number in store.watch(poll_interval=self.poll):
                    # A store that was away may have lost its data (Redis without
                    # persistence) and numbered a new list like the old one: after an
                    # outage, compare contents, not numbers. So does every later answer of
                    # the watch: it only answers again when the active version changed, if
                    # only to a new list under the same number (a FLUSHDB the connection
                    # never noticed, a store directory removed and synced again).
                    returned = not self.store_up
                    self.store_up = True
                    if (
                        returned
                        or not first
                        or self.info is None
                        or number != self.info.version
                        or self.origin != "store"
                    ):
                        await self._reload(store)
                    first = False
                    if returned:  # only once the reload worked: else neither told nor reset
                        if self._said:
                            log.info(f"blocklist: store {store.url} reachable again")
                        backoff, self._said = 1.0, ""
                    self._working("follow")
            except StoreError as exc:
                self.metrics.inc("blocklist_store_errors_total", **self.kind.labels)
                # Once an outage and reason (the start-up line may have told it already),
                # not at every retry: behind Sentinel they come every second.
                if str(exc) != self._said:
                    self._said = str(exc)
                    version = "no list" if self.info is None else f"version {self.info.version}"
                    log.warning(
                        f"blocklist: {exc}; still enforcing {version}, retrying in the background"
                    )
                self.store_up = False
                await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
                backoff = min(backoff * 2, MAX_BACKOFF, store.reconnect_cap)

    async def _reload(self, store: Store) -> None:
        try:
            pair = await store.load_active()
        except IncompleteVersion as exc:
            # The pointer names parts that are not there (a write lost in a failover): a
            # lost version, not a broken list. Keep this one and wait for the next version.
            self.metrics.inc("blocklist_store_errors_total", **self.kind.labels)
            if str(exc) != self._incomplete:
                self._incomplete = str(exc)
                log.warning(
                    f"blocklist: {exc}; still enforcing {self.kind.what}version {_v(self.info)} "
                    "until a whole version is published"
                )
            return
        if pair is None:
            return
        info, data = pair
        if self.info is not None and info.checksum == self.info.checksum:
            self._set(self.blocklist, info, "store")  # type: ignore[arg-type]
            return
        try:
            await self._install(info, data, origin="store", reload=True)
        except SnapshotError as exc:
            self.metrics.inc("blocklist_store_errors_total", **self.kind.labels)
            log.error(
                f"blocklist: {self.kind.what}version {info.version} is unusable ({exc}); "
                "keeping the old"
            )

    async def _freshness(self) -> None:
        """Follow when the sync last confirmed the list: an unchanged feed makes no version."""
        assert self._store is not None
        while True:
            try:
                state = await self._store.get_state(SYNCED_STATE) or {}
                confirmed = state.get("fresh_at")
                if (
                    isinstance(confirmed, (int, float))
                    and self.info is not None
                    and state.get("version") == self.info.version
                    # The number alone may name another list (a store that lost its data
                    # numbers anew): when the sync names the checksum, it must be ours.
                    and state.get("checksum", self.info.checksum) == self.info.checksum
                ):
                    self.fresh_at = max(self.fresh_at or 0.0, float(confirmed))
                self._working("freshness")
            except StoreError:
                pass  # _follow reports the store's health
            await asyncio.sleep(self.poll)


def _v(info: VersionInfo | None) -> int:
    return 0 if info is None else info.version
