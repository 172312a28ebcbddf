"""One sync: fetch each feed, validate it, keep its compiled entries, activate the union.

A sync runs for one kind of list in one store: URL feeds into the store, image hash list
feeds (``Feed.kind == "hashes"``) into its "hashes" namespace. The protocol is the same;
only the compiled forms differ (``compiled`` digests and ``Snapshot`` for URLs,
``HashSnapshot`` for hashes).

Each feed's last good entries are kept in the store as a compiled blob (digests only), so a
304 costs nothing, a failed feed keeps its last good entries in force, and suppressions
apply by rebuilding from the blobs without a download. The active list is only replaced
when the rebuilt snapshot differs from it.

With diversion enabled (a ``HostStore``: a hostname key), each feed's hosts are kept too,
encrypted, and the active list's hosts are rebuilt after every run, suppression and
rollback, for ``blocklist-divert resolve`` (see ``blocklist_addon.lists.hosts``).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from blocklist_addon.hashes.records import HashRecords
from blocklist_addon.hashes.snapshot import HashSnapshot
from blocklist_addon.lists.hosts import HostStore
from blocklist_addon.lists.store import SYNCED_STATE, Store, StoreError, VersionInfo
from blocklist_addon.ops.progress import NO_PROGRESS, Progress
from blocklist_addon.urls.snapshot import Snapshot
from sync import compiled
from sync.config import Feed, SyncConfig
from sync.feeds import FeedError, parse_feed, validate
from sync.fetch import FeedSource, FetchError, FetchState, fetch_feed

SUPPRESSED = "suppressed"
ROLLED_BACK = "rolled-back"
BUILT = "built"
FEEDS = "feed-names"


async def _remember(store: Store, name: str) -> None:
    """Note the feed's name in the store's index, so that ``status`` names every feed the
    store keeps state of, also without the config that synced it."""
    known = await store.get_state(FEEDS) or {}
    names = set(known.get("names", []))
    if name not in names:
        await store.set_state(FEEDS, {"names": sorted(names | {name})})


async def known_feeds(store: Store) -> list[str]:
    """The feeds the store keeps state of (those synced since the index existed)."""
    return list((await store.get_state(FEEDS) or {}).get("names", []))


def feed_key(name: str) -> str:
    return f"feed:{name}"


def source_id(source: FeedSource) -> str:
    """What a feed's validators belong to: its URL and format, as a digest (a signed URL
    keeps secrets in its query; the state is shown by ``status``)."""
    return hashlib.sha256(f"{source.format}\0{source.url}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class FeedOutcome:
    name: str
    status: Literal["updated", "unchanged", "failed"]
    entries: int | None
    detail: str = ""

    def line(self) -> str:
        if self.status == "failed":
            return f"{self.name}: FAILED: {self.detail}; its last good entries stay in force"
        count = "" if self.entries is None else f", {entries_text(self.entries)}"
        detail = f" ({self.detail})" if self.detail else ""
        return f"{self.name}: {self.status}{count}{detail}"


def entries_text(n: int) -> str:
    """ "1 entry", "5,747 entries": the count as the result lines print it."""
    return f"{n:,} {'entry' if n == 1 else 'entries'}"


@dataclass(frozen=True)
class SyncResult:
    outcomes: list[FeedOutcome]
    activated: VersionInfo | None
    active: VersionInfo | None
    skipped: bool = False

    @property
    def failed(self) -> bool:
        return any(o.status == "failed" for o in self.outcomes)


async def run_sync(
    store: Store,
    config: SyncConfig,
    fetch: Iterable[Feed],
    *,
    force: bool = False,
    progress: Progress = NO_PROGRESS,
    hosts: HostStore | None = None,
) -> SyncResult:
    """Fetch ``fetch`` (some or all of the configured feeds), then activate the union of
    every configured feed's last good entries. ``progress`` gets one job per feed (titled
    by its name) and one for the active list; each job's line is erased when it ends.
    ``hosts``: also keep the hostnames for diversion (encrypted)."""
    fetch = list(fetch)
    async with store.lock("sync", wait=config.lock_wait) as acquired:
        if not acquired:
            return SyncResult([], None, await store.active(), skipped=True)
        outcomes: list[FeedOutcome] = []
        for feed in fetch:
            with progress.job(feed.source.name):
                outcomes.append(
                    await sync_feed(
                        store, config, feed, force=force, progress=progress, hosts=hosts
                    )
                )
        with progress.job("active list"):
            activated = await activate(store, config.feeds, force=force, progress=progress)
        if hosts is not None:
            with progress.job("hostnames"):
                await refresh_hosts(store, config.feeds, hosts)
        active = await store.active()
        if active is not None and not any(o.status == "failed" for o in outcomes):
            # Proxies measure the list's age from this, not from the version's creation; the
            # checksum tells them it is their list, also when a store that lost its data
            # numbers its versions anew.
            await store.set_state(
                SYNCED_STATE,
                {"version": active.version, "checksum": active.checksum, "fresh_at": time.time()},
            )
        return SyncResult(outcomes, activated, active)


async def sync_feed(
    store: Store,
    config: SyncConfig,
    feed: Feed,
    *,
    force: bool,
    progress: Progress = NO_PROGRESS,
    hosts: HostStore | None = None,
) -> FeedOutcome:
    name = feed.source.name
    key = feed_key(name)
    state = await store.get_state(key) or {}
    now = time.time()
    # Validators only while its entries (and, for diversion, its hosts under this key) are
    # kept: otherwise a 304 would leave nothing.
    previous = state.get("entries")
    validators = previous is not None and (hosts is None or await hosts.has_feed(name))
    if feed.kind == "urls" and state.get("compiled") != compiled.FORMAT:
        # Kept by a release before the directory depths (or never): read the feed once more
        # in full to keep it with them. The kept entries stay in force until that succeeds.
        validators = False
    if state.get("source") != source_id(feed.source):
        # Validators are another URL's (or format's): they mean nothing to this one, whose
        # server may answer an old If-Modified-Since with 304 for good.
        validators = False
    fetch_state = FetchState.from_dict(state.get("fetch")) if validators else FetchState()
    state["last_attempt"] = now
    try:
        result = await fetch_feed(feed.source, fetch_state, progress=progress)
        if result.not_modified:
            state["last_ok"] = now
            state.pop("last_error", None)
            state.pop("last_error_at", None)
            await store.set_state(key, state)
            return FeedOutcome(name, "unchanged", previous, "not modified")
        assert result.data is not None
        parsed = await asyncio.to_thread(
            parse_feed,
            result.data,
            feed.source.format,
            progress=progress,
            max_entries=config.max_entries,
        )
        progress.phase("validating")
        validate(
            parsed,
            min_entries=config.min_entries,
            max_invalid_ratio=config.max_invalid_ratio,
            previous_entries=_shrink_baseline(state, previous, now),
            max_shrink=config.max_shrink,
            force=force,
        )
    except (FetchError, FeedError) as e:
        state["last_error"] = str(e)
        state["last_error_at"] = now
        await store.set_state(key, state)
        await _remember(store, name)
        return FeedOutcome(name, "failed", previous, str(e))

    progress.phase("saving")
    if hosts is not None:  # first: a crash before the entries makes the next run refetch
        await hosts.save_feed(name, {e.host for e in parsed.entries if e.host is not None})
    await store.set_blob(key, _pack(feed, parsed.entries))
    entries = parsed.distinct()  # as validate() and the snapshot count
    if feed.kind == "urls":
        state["compiled"] = compiled.FORMAT
    state.update(
        fetch=result.state.to_dict(),
        source=source_id(feed.source),
        entries=entries,
        invalid=parsed.invalid_count,
        last_ok=now,
        last_changed=now,
    )
    if force or entries >= (_shrink_baseline(state, None, now) or 0):
        state.update(peak=entries, peak_at=now)
    state.pop("last_error", None)
    state.pop("last_error_at", None)
    await store.set_state(key, state)
    await _remember(store, name)
    notes = []
    if parsed.invalid_count:
        notes.append(f"{parsed.invalid_count:,} invalid records skipped")
    if isinstance(parsed.entries, HashRecords) and (duplicates := parsed.entries.duplicates()):
        notes.append(f"{duplicates:,} duplicate hashes merged")
    return FeedOutcome(name, "updated", entries, "; ".join(notes))


#: How long a feed's largest list counts for max_shrink: a drop is measured from the
#: largest list it gave within this window, not from the last one, so that a list cannot be
#: shrunk away a step at a time (each under the limit) between two cron runs.
SHRINK_WINDOW = 24 * 3600.0


def _shrink_baseline(state: dict, previous: int | None, now: float) -> int | None:
    """What max_shrink measures a new list against: the last accepted count, or the
    largest one within SHRINK_WINDOW if larger (reset by ``--force``)."""
    peak, at = state.get("peak"), state.get("peak_at")
    if isinstance(peak, int) and isinstance(at, int | float) and 0 <= now - at < SHRINK_WINDOW:
        return max(peak, previous or 0)
    return previous


def _pack(feed: Feed, entries: list | HashRecords) -> bytes:
    """A feed's kept entries: digests for URLs, a hash snapshot of its own for hashes."""
    if isinstance(entries, HashRecords):
        return HashSnapshot.build(entries.named(feed.list_name)).to_bytes()
    return compiled.pack(entries)


async def build(
    store: Store, feeds: Iterable[Feed], suppressed: set[str]
) -> Snapshot | HashSnapshot | None:
    """The union of every feed's kept entries, less suppressed ids; None with no feed kept."""
    feeds = list(feeds)
    hashes = any(feed.kind == "hashes" for feed in feeds)  # one kind per store
    entries: list[tuple[bytes, bytes | None, str, str | None, int | None]] = []
    records = HashRecords()  # packed: a million entries, never a million objects
    names = []
    for feed in feeds:
        blob = await store.get_blob(feed_key(feed.source.name))
        if blob is None:
            await _check_not_lost(store, feed)
            continue
        names.append(feed.source.name)
        if feed.kind == "hashes":
            records.add_snapshot(HashSnapshot.from_bytes(blob), feed.list_name, suppressed)
            continue
        for e in compiled.unpack(blob):
            if (e.entry_id or e.digest.hex()) not in suppressed:
                entries.append((e.digest, e.host_key, feed.list_name, e.entry_id, e.depth))
    if not names:
        return None
    meta = {"feeds": sorted(names)}
    if hashes:
        return await asyncio.to_thread(HashSnapshot.build, records, meta)
    return await asyncio.to_thread(Snapshot.build, entries, meta)


async def _check_not_lost(store: Store, feed: Feed) -> None:
    """A feed with no kept entries is one never synced, unless its state counts entries:
    then they were lost from the store (an evicting Redis, a restore from an older dump, a
    hand-cleaned directory). A list built without them would drop all of that feed's
    entries past every gate, so refuse (StoreError: the previous list stays active) and
    forget its validators, so that the next run reads it again in full."""
    name = feed.source.name
    key = feed_key(name)
    state = await store.get_state(key) or {}
    if state.get("entries") is None:
        return
    state.pop("fetch", None)
    message = (
        f"feed {name}: its kept entries are missing from the store; "
        "the next run reads the feed again in full"
    )
    state.update(last_error=message, last_error_at=time.time())
    await store.set_state(key, state)
    raise StoreError(message)


async def activate(
    store: Store, feeds: Iterable[Feed], *, force: bool = False, progress: Progress = NO_PROGRESS
) -> VersionInfo | None:
    """Publish the rebuilt list when it differs from the active one. Content an operator
    rolled back is not activated again until it changes (or ``force``)."""
    feeds = list(feeds)
    active = await store.active()
    suppressed = set((await store.get_state(SUPPRESSED) or {}).get("ids", {}))
    inputs = await _inputs(store, feeds, suppressed)
    built = await store.get_state(BUILT) or {}
    if not force and active and built == {"inputs": inputs, "version": active.version}:
        return None  # nothing it is built from changed: skip reading a million entries
    progress.phase("building")
    snapshot = await build(store, feeds, suppressed)
    if snapshot is None:
        return None
    rejected = (await store.get_state(ROLLED_BACK) or {}).get("checksums", [])
    published = None
    if active is None or active.checksum != snapshot.checksum:
        if snapshot.checksum in rejected and not force:
            await store.set_state(BUILT, {"inputs": inputs, "version": active and active.version})
            return None
        source = "feeds: " + ", ".join(sorted(f.source.name for f in feeds))
        progress.phase("publishing")
        published = await store.publish(
            snapshot.to_bytes(), checksum=snapshot.checksum, entries=len(snapshot), source=source
        )
        active = await store.active()
    await store.set_state(BUILT, {"inputs": inputs, "version": active and active.version})
    return published


async def _inputs(store: Store, feeds: list[Feed], suppressed: set[str]) -> dict[str, object]:
    """What the active list is built from, without reading any entries: when each feed's
    kept entries last changed, the list names, and the suppressed ids."""
    changed = {}
    for feed in feeds:
        state = await store.get_state(feed_key(feed.source.name)) or {}
        changed[feed.source.name] = [feed.list_name, state.get("last_changed")]
    return {"feeds": changed, "suppressed": sorted(suppressed)}


async def refresh_hosts(store: Store, feeds: Iterable[Feed], hosts: HostStore) -> None:
    """The active list's hostnames for diversion, rebuilt if anything they come from changed."""
    await hosts.refresh(store, [f.source.name for f in feeds])


async def rollback(
    store: Store, feeds: Iterable[Feed] = (), hosts: HostStore | None = None
) -> VersionInfo:
    """Re-activate the previous version and remember the rolled-back content, so the next
    cron run does not bring it straight back."""
    async with store.lock("sync", wait=30.0) as acquired:
        if not acquired:
            raise RuntimeError("another sync holds the lock; try again in a minute")
        active = await store.active()
        info = await store.rollback()
        if active is not None:
            state = await store.get_state(ROLLED_BACK) or {}
            checksums = [c for c in state.get("checksums", []) if c != active.checksum]
            state["checksums"] = [*checksums, active.checksum][-10:]
            await store.set_state(ROLLED_BACK, state)
        if hosts is not None:
            await refresh_hosts(store, feeds, hosts)
        return info


class UnknownEntry(ValueError):
    """A suppression names an id the list does not hold (or an unsuppression one that is
    not suppressed): refused, nothing changes."""


async def recorded_feeds(store: Store, kind: str) -> list[Feed]:
    """The feeds the active list was last built from, as the store records them (name and
    list name): what a suppression rebuilds from when no configuration names the feeds, so
    that ``suppress`` without ``--config`` reaches the proxies at once too."""
    built = await store.get_state(BUILT) or {}
    recorded = (built.get("inputs") or {}).get("feeds") or {}
    fmt = "hashes-jsonl" if kind == "hashes" else "text"
    feeds = []
    for name, value in sorted(recorded.items()):
        list_name = value[0] if isinstance(value, list) and value else name
        feeds.append(Feed(FeedSource(name=name, url="", format=fmt), str(list_name)))
    return feeds


async def holds_entry(store: Store, feeds: Iterable[Feed], entry_id: str) -> bool:
    """Whether any feed's kept entries (what the active list is built from, before
    suppressions) hold ``entry_id``, as the block log names entries."""
    needle = entry_id.encode("utf-8")
    for feed in feeds:
        blob = await store.get_blob(feed_key(feed.source.name))
        if blob is None:
            continue
        if feed.kind == "hashes":
            if needle in blob and HashSnapshot.from_bytes(blob).has_id(entry_id):
                return True
        elif any((e.entry_id or e.digest.hex()) == entry_id for e in compiled.unpack(blob)):
            return True
    return False


async def set_suppressed(
    store: Store,
    feeds: Iterable[Feed],
    entry_id: str,
    on: bool,
    note: str = "",
    hosts: HostStore | None = None,
) -> VersionInfo | None:
    """Stop (or resume) enforcing one entry by its opaque id, at once: the active list is
    rebuilt from the kept feed entries without a download, and announced. An id that no
    kept entry holds (or, to resume, one not suppressed) raises :class:`UnknownEntry`."""
    async with store.lock("sync", wait=30.0) as acquired:
        if not acquired:
            raise RuntimeError("another sync holds the lock; try again in a minute")
        state = await store.get_state(SUPPRESSED) or {}
        ids = state.setdefault("ids", {})
        feeds = list(feeds)
        if not feeds:
            raise UnknownEntry("no list built by blocklist-sync in this store: nothing to suppress")
        if on:
            if not await holds_entry(store, feeds, entry_id):
                raise UnknownEntry(f"{entry_id} is not an entry of the active list")
            ids[entry_id] = {"since": time.time(), "note": note}
        else:
            if entry_id not in ids:
                raise UnknownEntry(f"{entry_id} is not suppressed")
            ids.pop(entry_id)
        await store.set_state(SUPPRESSED, state)
        activated = await activate(store, feeds, force=True)
        if hosts is not None:
            await refresh_hosts(store, feeds, hosts)
        return activated
