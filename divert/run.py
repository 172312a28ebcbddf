"""``blocklist-divert run``: keep the data plane's diversion current, and withdraw it while
the proxy is ill (DESIGN "Two-stage diversion": proxy health).

The data plane (``divert.planes``, ``data_plane`` in the config or ``--data-plane``) is the
gateway's nft sets, BIRD's static routes (``birdc configure``) or ExaBGP's announcements
(``run`` is then ExaBGP's API process); the health and withdraw logic below is the same for
all three. Where this docstring says "the sets", read "the routes" for BGP.

One long-running process on the gateway (``deploy/systemd/blocklist-divert.service``), or
under ExaBGP (``deploy/exabgp.conf``):

- resolves every ``interval`` seconds (the same resolution as ``blocklist-divert resolve``,
  in this process), which publishes a new set to the store when the gates let it, and at
  once when the list's store announces a new version whose hostnames are stored (a newly
  listed host is diverted seconds after the sync, not up to ``interval`` later);
- follows the store's active set and applies it to nftables (one transaction) when it
  changes. It never applies a set it has not read: started with the store down (or a store
  holding no set yet), it leaves the sets as it finds them, and applies an empty set only
  when the store's active set is empty;
- reads back what the data plane holds every ``verify_interval`` seconds and after every
  resolution, and repairs it when it differs (a ruleset reloaded or a table recreated
  behind its back, a reboot's empty sets); the metrics report what the kernel holds, not
  what was last applied;
- polls the proxy's ``health_url``. When it has failed for ``withdraw_after`` seconds the
  sets are emptied: diverted traffic then flows to the origins directly, unfiltered. A dead
  proxy must not black-hole the third-party sites that share an address with a listed
  host; the price is that listed content is reachable until the proxy is back, so this is
  said loudly (an ERROR log line, the status file, the metrics file);
- refills the sets as soon as the proxy answers healthy again.

The proxy counts as healthy when /healthz answers 200, or 503 with status "stale" (an old
list is still enforced: withdrawing would enforce nothing at all). "starting", "no-list"
(the proxy answers every request with an error) and no answer within the timeout are ill
health. Until the first health answer the sets are left as they are.

The proxy's health probe and gate are ``divert.health``; status and metrics are
``divert.runreport``; the command line, the lock that keeps one
``run`` per data plane, and the process wiring are ``divert.runcmd``.

Stopping ``run`` leaves the sets (and BIRD's routes) as they are, so a restart opens no gap;
to stop diverting, empty them (``nft flush set inet blocklist divert4``, and ``divert6``) or
delete the table. Under ExaBGP, ``run`` stops with ExaBGP, whose session then closes and
withdraws every route.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blocklist_addon.lists.hosts import ACTIVE as HOSTS_STATE
from blocklist_addon.lists.store import Store, StoreError, VersionInfo, write_atomic
from blocklist_addon.ops import notify
from divert import DivertError, lastgood, runreport
from divert.config import DivertConfig
from divert.dataset import DiversionSet
from divert.health import HealthGate, Phase, poll_interval

__all__ = ["Runner", "resolve_wait", "same"]

log = logging.getLogger("blocklist-divert")

#: Each wait between resolutions is interval times 1 +/- this, at random.
JITTER = 0.2
#: How long a new list version may wait for its hostnames (the sync stores them right after
#: it publishes the list) before ``run`` leaves it to the next scheduled resolution.
HOSTS_WAIT = 60.0
#: How often the hostnames' state is read while waiting for them.
HOSTS_POLL = 0.2
#: The longest wait between attempts to follow the list's store when its watch fails; a
#: watch that ran this long (s) before failing starts the backoff (and the warning) afresh.
FOLLOW_BACKOFF = 60.0
FOLLOW_HEALTHY = 30.0
_random = random.SystemRandom()


def resolve_wait(interval: float, draw: Callable[[float, float], float] = _random.uniform) -> float:
    """The wait before the next resolution: ``interval`` with jitter. The listed hostnames go
    out in plaintext DNS; on a fixed schedule their burst of queries is easy to pick out of a
    resolver's log or the wire (operators-guide, "The hostnames on the wire")."""
    return interval * (1 + draw(-JITTER, JITTER))


def same(a: DiversionSet | None, b: DiversionSet | None) -> bool:
    """The same addresses (the checksum also covers the host digests, which a data plane
    does not hold)."""
    return a is not None and b is not None and (a.ipv4, a.ipv6) == (b.ipv4, b.ipv6)


@dataclass
class Runner:
    """The loop of ``run``; its collaborators are passed in so tests can run it in a network
    namespace (``apply`` with an nft command inside it) or with a test DNS server."""

    config: DivertConfig
    store: Store
    resolve: Callable[[], Awaitable[str]] | None  # one resolution: its outcome, or DivertError
    apply: Callable[[DiversionSet], None]  # the data plane's apply (divert.planes)
    health: Callable[[], Awaitable[tuple[bool, str]]]
    read: Callable[[], DiversionSet | None] | None = None  # what the data plane holds
    what: str = "the diversion sets"  # what apply fills, for log lines
    data_plane: str = "nft"
    status_file: Path | None = None
    metrics_file: Path | None = None
    clock: Callable[[], float] = time.time
    gate: HealthGate = field(init=False)
    active: DiversionSet | None = None  # the store's active set, once read
    version: int | None = None
    checksum: str | None = None  # the checksum the store's metadata names for ``version``
    applied: DiversionSet | None = None  # what this process last put into the sets
    applied_at: float | None = None
    found: DiversionSet | None = None  # what the plane held before this process applied
    held: DiversionSet | None = None  # what the plane held when last read
    verified_at: float | None = None
    in_sync: bool = False  # the plane was last seen holding what it should
    apply_errors: int = 0
    repairs: int = 0  # times the plane was found changed behind run's back
    lists: Store | None = None  # the URL list's store: its announcements start a resolution
    lastgood: Path | None = None  # the local copy of the last set applied (divert.lastgood)
    from_lastgood: bool = False  # the plane holds the local copy, not a set read this run
    store_down: bool = False  # the last read of the store failed
    store_error: str = ""  # why (the store's one-line reason), for the status file
    _copy: DiversionSet | None = None  # the local copy as loaded at start
    _copy_loaded: bool = False
    _saved: DiversionSet | None = None  # what this process last wrote to the local copy
    withdrawals: int = 0
    resolutions: dict[str, int] = field(default_factory=lambda: {"ok": 0, "failed": 0})
    last_resolve: dict[str, Any] | None = None
    healthy: bool | None = None  # the last health check's verdict
    phase_since: float | None = None  # when the phase last changed
    health_reason: str = ""
    _verify_now: bool = False
    _said: str = ""  # the last error line said, so a failing store or nft is not repeated
    _resolve_now: asyncio.Event = field(default_factory=asyncio.Event)  # a new list version
    _tick_now: asyncio.Event = field(default_factory=asyncio.Event)  # a resolution ended
    list_version: int | None = None  # the last list version announced (and followed)
    list_checksum: str | None = None  # its checksum: a renumbered list has the same number
    _reading: asyncio.Task[None] | None = None  # a read of the store that outlasted its tick

    def __post_init__(self) -> None:
        self.gate = HealthGate(self.config.withdraw_after)

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop`` is set: health and the store every poll, resolve every interval
        and as soon as a new list version's hostnames are stored."""
        tasks = []
        if self.resolve:
            tasks.append(asyncio.create_task(self._resolve_loop(stop)))
            if self.lists is not None:
                tasks.append(asyncio.create_task(self._follow_lists(stop)))
        try:
            ready = False
            while not stop.is_set():
                self._tick_now.clear()
                await self.tick()
                if not ready:  # Type=notify: systemctl start returns with the status written
                    ready = notify.ready(f"first check done: {self.gate.phase}") or True
                await _first(stop, self._tick_now, poll_interval(self.config.withdraw_after))
        finally:
            if self._reading is not None:
                tasks.append(self._reading)
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def tick(self) -> None:
        now = self.clock()
        self.healthy, self.health_reason = await self.health()
        self._health_changed(self.healthy, self.gate.observe(self.healthy, now), now)
        await self._follow_store_for(poll_interval(self.config.withdraw_after))
        await self._converge()
        self._write_status()

    # -- health ------------------------------------------------------------------------------

    def _health_changed(self, healthy: bool, change: Phase | None, now: float) -> None:
        url, after = self.config.health_url, self.config.withdraw_after
        if change is not None:
            self.phase_since = now
        if change is Phase.WITHDRAWN:
            self.withdrawals += 1
            log.error(
                "WITHDRAWN: the proxy at %s has failed its health check for %.0f s (%s): %s "
                "are withdrawn and diverted traffic now goes to the origins directly, "
                "UNFILTERED, until the proxy is healthy again",
                url,
                after,
                self.health_reason,
                self.what,
            )
        elif change is Phase.DIVERTING and self.withdrawals:
            log.warning("the proxy at %s is healthy again (%s): diverting", url, self.health_reason)
        elif change is Phase.DIVERTING:
            log.info("the proxy at %s is healthy (%s): diverting", url, self.health_reason)
        elif (
            not healthy
            and self.gate.failing_since == now
            and self.gate.phase is not (Phase.WITHDRAWN)
        ):
            log.warning(
                "the proxy at %s failed its health check (%s); diversion stops if it still "
                "fails in %.0f s",
                url,
                self.health_reason,
                after,
            )

    # -- the set -------------------------------------------------------------------------

    async def _follow_store_for(self, budget: float) -> None:
        """Read the store, waiting at most ``budget`` seconds for it: a read that takes
        longer (a Sentinel store rides out a failover for up to failover_timeout) goes on
        while the ticks carry on watching the proxy and the plane, and the tick after it
        ends acts on what it read."""
        if self._reading is None:
            self._reading = asyncio.create_task(self._follow_store())
        done, _ = await asyncio.wait({self._reading}, timeout=budget)
        if done:
            reading, self._reading = self._reading, None
            reading.result()  # _follow_store reports its own errors: only a bug is raised

    async def _follow_store(self) -> None:
        try:
            info = await self.store.active()
            self.store_down, self.store_error = False, ""
            if info is None and self.active is None:
                self._say(
                    f"the store {self.store.url} holds no diversion set yet; leaving the sets "
                    "as they are"
                )
            # The number and the checksum: a store that lost its data (FLUSHDB, a Redis
            # restarted without persistence, a removed directory) numbers its next set like
            # the one applied, or lower.
            if info is None or (info.version, info.checksum) == (self.version, self.checksum):
                return
            loaded = await self.store.load_active()
            if loaded is None:
                return
            info, data = loaded
            dset = DiversionSet.from_bytes(data)
            if dset.checksum != info.checksum:  # a whole set, but another one (a mixed-up store)
                raise DivertError(
                    f"version {info.version}'s bytes are not the set its metadata names"
                )
            self.active = dset
            self.version, self.checksum = info.version, info.checksum
        except (StoreError, DivertError) as exc:
            self.store_down, self.store_error = True, str(exc)
            self._say(
                f"cannot read the active diversion set from {self.store.url}: {exc}; keeping "
                "the sets as they are"
            )
            return
        log.info(
            "active diversion set: version %d, %d IPv4 and %d IPv6 addresses",
            self.version,
            len(self.active.ipv4),
            len(self.active.ipv6),
        )

    def target(self) -> DiversionSet | None:
        """What the sets should hold now; None: leave them as they are.

        Only a set read from the store is ever applied; before the first read, what the
        plane held when run started (so that a restore after a withdrawal, or a repair,
        puts back what was there, never an empty set the store did not publish). The one
        exception: the store unreachable and the plane empty or unknown (a reboot, a
        restarted ExaBGP): then the local copy of the last set applied (divert.lastgood)."""
        if self.gate.phase is Phase.WITHDRAWN:
            return DiversionSet.EMPTY
        if self.gate.phase is not Phase.DIVERTING:
            return None
        if self.active is not None:
            return self.active
        if (self.found is None or not len(self.found)) and self.store_down:
            return self._local_copy() or self.found
        return self.found

    def _local_copy(self) -> DiversionSet | None:
        """The local copy, read once; None when there is none or it is unreadable."""
        if not self._copy_loaded and self.lastgood is not None:
            self._copy_loaded = True
            try:
                self._copy = lastgood.load(self.lastgood)
            except DivertError as exc:
                log.error("cannot use the local copy of the last set: %s", exc)
        return self._copy

    async def _converge(self) -> None:
        now = self.clock()
        due = self.read is not None and (
            self._verify_now
            or self.verified_at is None
            or now - self.verified_at >= self.config.verify_interval
        )
        read_error = ""
        if due:
            self.verified_at, self._verify_now = now, False
            read_error = await self._read_plane()
        target = self.target()
        if target is None:
            self.in_sync = False
            if read_error:
                self._say(f"cannot read {self.what}: {read_error}")
            return
        changed = not same(self.applied, target)
        drifted = due and not same(self.held, target)
        if not changed and not drifted:
            self.in_sync = self.read is None or same(self.held, target)
            return
        if drifted and not changed and self.held is not None:
            self.repairs += 1
            log.warning(
                "%s hold %d addresses, not the %d applied (changed behind run's back): repairing",
                self.what,
                len(self.held),
                len(target),
            )
        try:
            await asyncio.to_thread(self.apply, target)
        except DivertError as exc:
            self.apply_errors += 1
            self.in_sync = False
            self._say(f"cannot apply the diversion set: {exc}")
            return
        self.applied, self.applied_at, self._said = target, self.clock(), ""
        self.held, self.in_sync = target, True
        if target is self._copy and not self.from_lastgood:
            log.warning(
                "the store is unreachable and %s held nothing: applied the local copy of the "
                "last set applied (%d addresses, %s) until the store answers",
                self.what,
                len(target),
                self.lastgood,
            )
        self.from_lastgood = target is self._copy
        if target is self.active:
            self._keep_copy(target)
        if changed:
            log.info(
                "applied %d IPv4 and %d IPv6 addresses to %s (%s)",
                len(target.ipv4),
                len(target.ipv6),
                self.what,
                self.gate.phase,
            )

    def _keep_copy(self, applied: DiversionSet) -> None:
        """The store's set just applied becomes the local copy (when it changed)."""
        if self.lastgood is None or same(self._saved or self._local_copy(), applied):
            return
        try:
            lastgood.save(self.lastgood, applied)
        except OSError as exc:
            self._say(f"cannot keep a local copy in {self.lastgood}: {exc.strerror or exc}")
            return
        self._saved = applied

    async def _read_plane(self) -> str:
        """Read what the plane holds into ``held``; the error, or "" when read."""
        assert self.read is not None
        try:
            self.held = await asyncio.to_thread(self.read)
        except DivertError as exc:
            self.held = None
            return str(exc)
        if self.applied is None and self.found is None and self.held is not None:
            self.found = self.held
        return ""

    # -- resolution --------------------------------------------------------------------------

    async def _follow_lists(self, stop: asyncio.Event) -> None:
        """Start a resolution as soon as a new list version is announced (the store's
        pub/sub, or its pointer polled) and its hostnames are stored, so that a newly listed
        host is diverted within seconds of the sync, not at the next scheduled resolution.
        The version active at start is the first resolution's."""
        assert self.lists is not None
        backoff, said = 1.0, ""
        while not stop.is_set():
            started = time.monotonic()
            try:
                async for _number in self.lists.watch(poll_interval=1.0):
                    info = await self.lists.active()
                    if info is None:
                        continue
                    first = self.list_version is None  # what the first resolution reads
                    if (info.version, info.checksum) == (self.list_version, self.list_checksum):
                        continue  # also a list renumbered after the store lost its data
                    self.list_version, self.list_checksum = info.version, info.checksum
                    if first:
                        continue
                    await self._when_hosts_stored(info, stop)
            except Exception as exc:  # StoreError; a bug must not end the following either
                if not isinstance(exc, StoreError):
                    log.exception("following the list's announcements failed unexpectedly")
                # Each retry reads the pointer again (the watch's first answer), so a store
                # that refuses SUBSCRIBE is still followed, every backoff (at most 60 s).
                if time.monotonic() - started > FOLLOW_HEALTHY:
                    backoff, said = 1.0, ""
                if str(exc) != said:
                    said = str(exc)
                    log.warning(
                        "cannot follow the list's announcements in %s: %s; reading the list's "
                        "pointer every %.0f s or less instead",
                        self.lists.url,
                        exc,
                        FOLLOW_BACKOFF,
                    )
                await _first(stop, asyncio.Event(), backoff)
                backoff = min(backoff * 2, FOLLOW_BACKOFF)

    async def _when_hosts_stored(self, info: VersionInfo, stop: asyncio.Event) -> None:
        """Wake the resolution once the hostnames of list ``info`` are stored (the sync
        writes them right after it publishes the list)."""
        deadline = time.monotonic() + HOSTS_WAIT
        while not stop.is_set():
            state = await self.store.get_state(HOSTS_STATE) or {}
            if state.get("list") == info.checksum:
                log.info(
                    "list version %d announced, its %s hostnames stored: resolving now",
                    info.version,
                    state.get("hosts", "?"),
                )
                self._resolve_now.set()
                return
            if time.monotonic() > deadline:
                log.warning(
                    "list version %d was announced but its hostnames were not stored within "
                    "%.0f s (does blocklist-sync have the divert key?): its new hosts wait for "
                    "the next scheduled resolution",
                    info.version,
                    HOSTS_WAIT,
                )
                return
            await _first(stop, asyncio.Event(), HOSTS_POLL)

    async def _resolve_loop(self, stop: asyncio.Event) -> None:
        assert self.resolve is not None
        while not stop.is_set():
            self._resolve_now.clear()
            started = self.clock()
            try:
                outcome, ok = await self.resolve(), True
            except (DivertError, StoreError) as exc:
                outcome, ok = str(exc), False
            except Exception as exc:  # a bug must not stop the health watch
                log.exception("resolve failed unexpectedly")
                outcome, ok = f"unexpected error: {type(exc).__name__}", False
            self.resolutions["ok" if ok else "failed"] += 1
            self.last_resolve = {"at": started, "ok": ok, "outcome": outcome}
            if ok:
                log.info("resolve: %s", outcome)
            else:
                log.error("resolve failed: %s; the active set stays", outcome)
            self._verify_now = True
            self._tick_now.set()  # apply what it published now, not at the next poll
            await _first(stop, self._resolve_now, resolve_wait(self.config.interval))

    # -- reporting -------------------------------------------------------------------------

    def _say(self, line: str) -> None:
        if line != self._said:
            log.error("%s", line)
            self._said = line

    def status(self) -> dict[str, Any]:
        return runreport.status(self)

    def metrics(self) -> str:
        return runreport.metrics(self)

    def _write_status(self) -> None:
        for path, text in (
            (self.status_file, lambda: json.dumps(self.status(), indent=2) + "\n"),
            (self.metrics_file, self.metrics),
        ):
            if path is None:
                continue
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(path, text().encode(), mode=0o644, durable=False)
            except OSError as exc:
                self._say(f"cannot write {path}: {exc.strerror or exc}")


async def _first(stop: asyncio.Event, other: asyncio.Event, timeout: float) -> None:
    """Wait until ``stop`` or ``other`` is set, or ``timeout`` seconds have passed."""
    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(other.wait())]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
