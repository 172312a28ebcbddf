"""One resolution run: the active list's hosts -> DNS -> gates -> a published diversion set.

Under the store lock ``resolve`` (two runs never overlap; a second one skips, or waits
``lock_wait`` seconds): decrypt the hosts (memory only), resolve them (``lookup``), add
the IP-literal entries, apply the gates (``gates``) against the active set, and publish the
new set when its content differs (``DiversionSet.checksum``). A refused set publishes
nothing and exits 1; the previous set stays active. What the gates need next time (when
each host last answered) and what ``status`` shows (states by count, the decisions) are
kept in the ``divert`` namespace under digests only.

``resolve_once(config)`` is the in-process entry point (``blocklist-divert run`` calls it on
its schedule); ``resolve(...)`` takes open stores, a key and a lookup (tests, benchmarks).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from blocklist_addon.lists import hostkey
from blocklist_addon.lists.hostkey import HostKey, HostKeyError
from blocklist_addon.lists.hosts import HostStore
from blocklist_addon.lists.store import Store, StoreError, VersionInfo, open_store
from blocklist_addon.ops.progress import NO_PROGRESS, Progress
from divert import DivertError
from divert.config import ConfigError, DivertConfig, parse_resolver
from divert.dataset import DiversionSet
from divert.gates import Decision, Outcome, decide, literal
from divert.lookup import Lookup, Resolution
from divert.protect import Protected

__all__ = [
    "LAST_RUN",
    "MEMORY",
    "ResolveResult",
    "load_set",
    "resolve",
    "resolve_once",
    "rollback",
    "scheduled",
]

log = logging.getLogger("blocklist_divert")

LOCK = "resolve"
MEMORY = "resolve-memory"
LAST_RUN = "last-run"
ROLLED_BACK = "rolled-back"
#: Decisions kept for ``status`` (all are logged).
MAX_KEPT_DECISIONS = 200


@dataclass
class ResolveResult:
    status: Literal["published", "unchanged", "refused", "skipped"]
    active: VersionInfo | None = None  # the active set after the run
    dset: DiversionSet | None = None  # the set this run built (refused or not)
    outcome: Outcome | None = None
    hosts: int = 0
    warnings: list[str] = field(default_factory=list)
    duration: float = 0.0

    @property
    def failed(self) -> bool:
        return self.status == "refused"

    def line(self) -> str:
        """The one-line outcome for cron mail."""
        if self.status == "skipped":
            return "skipped: another blocklist-divert resolve holds the lock"
        if self.status == "refused":
            assert self.outcome is not None and self.outcome.refused is not None
            return f"REFUSED: {self.outcome.refused.detail}; the previous set stays active"
        assert self.dset is not None and self.active is not None
        counts = self.outcome.counts() if self.outcome else {}
        notable = ", ".join(f"{n:,} {s}" for s, n in counts.items() if s != "ok")
        what = "published" if self.status == "published" else "unchanged:"
        return (
            f"{what} diversion set version {self.active.version}: {_addresses(self.dset)} "
            f"from {self.hosts:,} hosts" + (f" ({notable})" if notable else "")
        )


def _addresses(dset: DiversionSet) -> str:
    return f"{len(dset):,} addresses ({len(dset.ipv4):,} IPv4, {len(dset.ipv6):,} IPv6)"


async def load_set(divert: Store) -> tuple[VersionInfo, DiversionSet] | None:
    """The active diversion set (DivertError when it is damaged), or None before the first."""
    loaded = await divert.load_active()
    if loaded is None:
        return None
    info, data = loaded
    return info, DiversionSet.from_bytes(data)


async def resolve_once(
    config: DivertConfig,
    *,
    force: bool = False,
    progress: Progress = NO_PROGRESS,
) -> ResolveResult:
    """One run as configured: opens the stores and the key, and closes them after."""
    if config.key_file is None:
        raise ConfigError("no key file: give --key-file or key_file (blocklist-divert keygen)")
    try:
        key = hostkey.load(config.key_file)
    except HostKeyError as e:  # a missing or unsafe key file is the operator's setup
        raise ConfigError(str(e)) from None
    protected = Protected.for_config(config)
    lookup = Lookup(
        [parse_resolver(r) for r in config.resolvers],
        timeout=config.timeout,
        concurrency=config.concurrency,
    )
    try:
        lists = open_store(config.store, keep=config.keep_versions)
        divert = open_store(config.store, keep=config.keep_versions, namespace="divert")
    except StoreError as e:
        raise ConfigError(str(e)) from None
    async with lists, divert:
        return await resolve(
            config,
            lists=lists,
            divert=divert,
            key=key,
            lookup=lookup,
            protected=protected,
            force=force,
            progress=progress,
        )


def scheduled(config: DivertConfig) -> Callable[[], Awaitable[str]]:
    """``resolve_once`` as ``blocklist-divert run`` calls it on its schedule: the outcome
    line, or DivertError (refused, or a setup problem) while the active set stays."""

    async def once() -> str:
        try:
            result = await resolve_once(config)
        except ConfigError as e:
            raise DivertError(str(e)) from None
        for warning in result.warnings:
            log.warning("%s", warning)
        if result.failed:
            raise DivertError(result.line())
        return result.line()

    return once


async def resolve(
    config: DivertConfig,
    *,
    lists: Store,
    divert: Store,
    key: HostKey,
    lookup: Lookup,
    protected: Protected,
    force: bool = False,
    progress: Progress = NO_PROGRESS,
    now: float | None = None,
) -> ResolveResult:
    # The lock is renewed while this run lives: a dead resolver's lapses within its short
    # lifetime (the store's LOCK_TTL), whatever the run's deadline.
    async with divert.lock(LOCK, wait=config.lock_wait) as acquired:
        if not acquired:
            return ResolveResult("skipped", active=await divert.active())
        started = time.monotonic()
        progress.start("diversion")
        try:
            result = await _run(config, lists, divert, key, lookup, protected, force, progress, now)
        finally:
            progress.done()
        result.duration = time.monotonic() - started
        await _record(divert, result)
        return result


async def _run(
    config: DivertConfig,
    lists: Store,
    divert: Store,
    key: HostKey,
    lookup: Lookup,
    protected: Protected,
    force: bool,
    progress: Progress,
    now: float | None,
) -> ResolveResult:
    warnings = []
    progress.phase("reading hostnames")
    try:
        stored = await HostStore(divert, key).load_active()
    except HostKeyError as e:  # no hostnames, or not under this key: the run fails
        raise DivertError(str(e)) from None
    active_list = await lists.active()
    if active_list is not None and stored.list_checksum != active_list.checksum:
        warnings.append(
            f"the hostnames are those of list version {stored.state.get('list_version')}, "
            f"not of the active list (version {active_list.version}): run blocklist-sync "
            "with the key file"
        )
    if stored.state.get("feeds_without_hosts"):
        names = ", ".join(stored.state["feeds_without_hosts"])
        warnings.append(f"no hostnames kept for feed(s) {names}: their hosts are not diverted")

    digests: dict[str, str] = {}
    literals: dict[str, Resolution] = {}
    names: list[str] = []
    for host in stored.hosts:
        digest = key.digest(host)
        digests[host] = digest
        address = _ip_literal(host)
        if address is not None:
            literals[digest] = literal(address)
        else:
            names.append(host)
    resolved = await lookup.resolve_many(names, deadline=config.deadline, progress=progress)
    del stored  # the names are not needed past this point
    answers: dict[str, Resolution] = dict(literals)
    answers.update((digests[h], r) for h, r in resolved.items())

    progress.phase("gates")
    current = await load_set(divert)
    previous = current[1] if current else None
    memory = await _load_memory(divert)
    when = time.time() if now is None else now
    outcome = decide(
        answers,
        previous=previous,
        memory=memory,
        protected=protected,
        config=config,
        now=when,
        force=force,
        literals=frozenset(literals),
    )
    for decision in outcome.decisions:
        log.log(logging.WARNING if decision.refusal else logging.INFO, "%s", decision.line())

    result = ResolveResult(
        "refused", await divert.active(), outcome.dset, outcome, len(answers), warnings
    )
    if outcome.refused is not None:
        return result
    await _save_memory(divert, outcome.memory)
    if current is not None and current[1].checksum == outcome.dset.checksum:
        result.status = "unchanged"
        return result
    rejected = (await divert.get_state(ROLLED_BACK) or {}).get("checksums", [])
    if outcome.dset.checksum in rejected and not force:
        result.status = "unchanged"
        result.warnings.append(
            "the new set equals one an operator rolled back: not published (--force to publish)"
        )
        return result
    progress.phase("publishing")
    dset = outcome.dset
    await divert.publish(
        dset.to_bytes(),
        checksum=dset.checksum,
        entries=len(dset),
        source=f"resolve: {len(answers):,} hosts",
    )
    result.status = "published"
    result.active = await divert.active()
    return result


async def rollback(divert: Store) -> VersionInfo:
    """Re-activate the previous set, and remember the rolled-back content so that the next
    run does not publish it straight back (until the answers change, or --force)."""
    async with divert.lock(LOCK, wait=30.0) as acquired:
        if not acquired:
            raise DivertError("a resolve run holds the lock; try again in a minute")
        active = await divert.active()
        info = await divert.rollback()
        if active is not None:
            state = await divert.get_state(ROLLED_BACK) or {}
            checksums = [c for c in state.get("checksums", []) if c != active.checksum]
            await divert.set_state(ROLLED_BACK, {"checksums": [*checksums, active.checksum][-10:]})
        return info


def _ip_literal(host: str) -> str | None:
    try:
        return ipaddress.ip_address(host.strip("[]")).compressed
    except ValueError:
        return None


async def _load_memory(divert: Store) -> dict[str, dict[str, float]]:
    raw = await divert.get_blob(MEMORY)
    if raw is None:
        return {}
    try:
        memory = json.loads(raw)
    except ValueError:
        log.warning("the resolver's memory of last answers is damaged: starting afresh")
        return {}
    return memory if isinstance(memory, dict) else {}


async def _save_memory(divert: Store, memory: Mapping[str, Mapping[str, float]]) -> None:
    data = await asyncio.to_thread(json.dumps, memory, separators=(",", ":"), sort_keys=True)
    await divert.set_blob(MEMORY, data.encode())


async def _record(divert: Store, result: ResolveResult) -> None:
    """What ``status`` shows about the last run (digests, counts and reasons only)."""
    outcome = result.outcome
    decisions: Sequence[Decision] = outcome.decisions if outcome else ()
    doc: dict[str, Any] = {
        "at": time.time(),
        "status": result.status,
        "line": result.line(),
        "hosts": result.hosts,
        "duration": round(result.duration, 3),
        "warnings": result.warnings,
        "states": outcome.counts() if outcome else {},
        "addresses": len(result.dset) if result.dset else 0,
        "decisions_total": len(decisions),
        "decisions": [d.to_dict() for d in decisions[:MAX_KEPT_DECISIONS]],
    }
    try:
        await divert.set_state(LAST_RUN, doc)
    except StoreError as e:  # the run itself is done; status only misses it
        log.warning("could not record the run for status: %s", e)
