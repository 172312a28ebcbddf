"""What ``blocklist-sync --metrics-file FILE`` writes after a sync: Prometheus text for
node_exporter's textfile collector, rewritten whole by every run (readers see the old file or
the new one).

This run's outcome (when it ended, whether it succeeded, each feed it fetched) and, read back
from the store, what outlives a failed run: when a sync last confirmed each kind of list (the
time proxies measure a list's age from), each feed's last good fetch and entries, and the
active version. Labels are the list's kind (``urls``, ``hashes``) and the feed's configured
name; no entry, URL or store location is written.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path

from blocklist_addon.lists.store import SYNCED_STATE, Store, StoreError, write_atomic
from sync import worker

__all__ = ["METRICS", "render", "write"]

#: Every metric the file holds, with its type and help (a dashboard or alert names these).
METRICS = {
    "blocklist_sync_last_run_timestamp_seconds": (
        "gauge",
        "When this blocklist-sync run ended (unix time).",
    ),
    "blocklist_sync_last_run_success": (
        "gauge",
        "1 when the run exited 0 (every feed fetched and the lists current), else 0.",
    ),
    "blocklist_sync_last_run_duration_seconds": ("gauge", "How long the run took."),
    "blocklist_sync_feed_fetch_success": (
        "gauge",
        "1 when this run fetched and validated the feed (updated or unchanged), 0 when it "
        "failed (its last good entries stay in force), by kind and feed.",
    ),
    "blocklist_sync_feed_last_success_timestamp_seconds": (
        "gauge",
        "When the feed was last fetched and validated (from the store), by kind and feed.",
    ),
    "blocklist_sync_feed_entries": (
        "gauge",
        "Entries the store keeps of the feed's last good fetch, by kind and feed.",
    ),
    "blocklist_sync_list_confirmed_timestamp_seconds": (
        "gauge",
        "When a sync last confirmed the active list with no feed failing (proxies measure "
        "the list's age from it), by kind.",
    ),
    "blocklist_sync_active_version": ("gauge", "The store's active list version, by kind."),
    "blocklist_sync_active_entries": ("gauge", "Entries of the active list, by kind."),
}

type Samples = dict[str, list[tuple[dict[str, str], float]]]


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(samples: Samples) -> str:
    """Prometheus text of ``samples`` (name -> [(labels, value)]), in METRICS' order."""
    lines = []
    for name, (kind, text) in METRICS.items():
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        for labels, value in samples.get(name, []):
            shown = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            lines.append(f"{name}{{{shown}}} {value}" if shown else f"{name} {value}")
    return "\n".join(lines) + "\n"


async def collect(
    stores: Callable[[str], Store],
    feeds: Mapping[str, list[str]],
    results: Mapping[str, worker.SyncResult],
    *,
    status: int,
    started: float,
    now: float,
) -> Samples:
    """This run's samples and the store's: ``feeds`` the configured feed names by kind,
    ``results`` each kind's sync result (a kind missing: not synced this run)."""
    samples: Samples = {
        "blocklist_sync_last_run_timestamp_seconds": [({}, now)],
        "blocklist_sync_last_run_success": [({}, float(status == 0))],
        "blocklist_sync_last_run_duration_seconds": [({}, round(now - started, 3))],
    }
    for kind, result in results.items():
        for outcome in result.outcomes:
            samples.setdefault("blocklist_sync_feed_fetch_success", []).append(
                ({"kind": kind, "feed": outcome.name}, float(outcome.status != "failed"))
            )
    for kind, names in feeds.items():
        try:
            store = stores(kind)
            for name in names:
                state = await store.get_state(worker.feed_key(name)) or {}
                for key, metric in (
                    ("last_ok", "blocklist_sync_feed_last_success_timestamp_seconds"),
                    ("entries", "blocklist_sync_feed_entries"),
                ):
                    if isinstance(state.get(key), (int, float)):
                        samples.setdefault(metric, []).append(
                            ({"kind": kind, "feed": name}, float(state[key]))
                        )
            synced = await store.get_state(SYNCED_STATE) or {}
            if isinstance(synced.get("fresh_at"), (int, float)):
                samples.setdefault("blocklist_sync_list_confirmed_timestamp_seconds", []).append(
                    ({"kind": kind}, float(synced["fresh_at"]))
                )
            active = await store.active()
        except StoreError:
            continue  # the store's part is left out; the run's success says 0
        if active is not None:
            samples.setdefault("blocklist_sync_active_version", []).append(
                ({"kind": kind}, float(active.version))
            )
            samples.setdefault("blocklist_sync_active_entries", []).append(
                ({"kind": kind}, float(active.entries))
            )
    return samples


async def write(
    path: Path,
    stores: Callable[[str], Store],
    feeds: Mapping[str, list[str]],
    results: Mapping[str, worker.SyncResult],
    *,
    status: int,
    started: float,
) -> None:
    """Collect and write the file atomically (mode 0644, for node_exporter)."""
    samples = await collect(stores, feeds, results, status=status, started=started, now=time.time())
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, render(samples).encode(), mode=0o644)
