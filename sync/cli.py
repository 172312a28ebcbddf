"""``blocklist-sync``: one sync of the licensed feed(s) into the store, for cron.

Exit status: 0 the active list is current (updated or unchanged); 1 a feed could not be
fetched or failed validation, or the store is unreachable (the previous list stays active);
2 usage or configuration error. Output is one line per feed, for cron mail; on a terminal
(stderr a TTY, no --quiet) long phases also show a progress line, erased before the results.

Two kinds of list share the commands: URL lists, and image hash lists (feeds of format
hashes-jsonl or hashes-csv), which live in the store's "hashes" namespace with their own
versions. A sync runs every configured feed into the list of its kind; ``status`` shows
both; ``rollback``, ``suppress`` and ``unsuppress`` act on the URL list unless given
``--kind hashes``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from blocklist_addon.lists import hostkey
from blocklist_addon.lists.hostkey import KEY_FILE_ENV, HostKeyError
from blocklist_addon.lists.hosts import HostStore
from blocklist_addon.lists.store import URL_FORMS, Store, StoreError, VersionInfo, open_store
from blocklist_addon.ops.config import ConfigError
from blocklist_addon.ops.progress import NO_PROGRESS, Progress, terminal_progress
from sync import metrics as sync_metrics
from sync import worker
from sync.config import (
    DEFAULT_CONFIG,
    Feed,
    SyncConfig,
    load_config,
    make_feed,
    validate_limits,
)
from sync.feeds import FORMATS

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

#: The kinds of list, the store namespace each lives in, and how output names it.
KINDS = ("urls", "hashes")
NAMESPACES: dict[str, str | None] = {"urls": None, "hashes": "hashes"}
LABELS = {"urls": "", "hashes": "hash list "}
Stores = Callable[[str], Store]

EPILOG = """\
commands:
  (none)          fetch every configured feed (or the one given by --feed-url) and activate
  status          show the active version, kept versions, each feed's state, suppressions
  rollback        re-activate the previous version (kept until the feed content changes)
  suppress ID     stop enforcing one entry by its opaque id, at once (e.g. awaiting appeal)
  unsuppress ID   enforce it again
  (rollback, suppress and unsuppress act on the URL list; --kind hashes: the image hash list)

examples:
  blocklist-sync --config /etc/blocklist-proxy/sync.toml
  blocklist-sync --store redis://127.0.0.1:6379/0 --feed-url https://feed.example.net/list.csv \\
                 --format csv --name iwf
  blocklist-sync status
  blocklist-sync suppress 3f1c2a9d0b7e4c55 --note "appeal 1234"
  blocklist-sync --feed-url https://feed.example.net/hashes.jsonl --format hashes-jsonl \\
                 --name hotline-hashes
  blocklist-sync suppress --kind hashes 81234

Two-stage diversion (blocklist-divert): with --divert-key-file FILE (or divert_key_file in
the config, or $BLOCKLIST_DIVERT_KEY_FILE) the sync also keeps the active list's hostnames,
encrypted with that key, for blocklist-divert resolve; make the key with blocklist-divert keygen.
A key that cannot be used (missing, unsafe, not a key) fails that step only: the lists are
synced, the hostnames are not, and the sync exits 1 with one line saying why.

Credentials never go on the command line: name a token file or environment variables in the
config file. The Redis password comes from $BLOCKLIST_REDIS_PASSWORD or the file named by
$BLOCKLIST_REDIS_PASSWORD_FILE when the store URL has none.
"""


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help=f"TOML config (default: $BLOCKLIST_SYNC_CONFIG, else {DEFAULT_CONFIG} if present)",
    )
    common.add_argument(
        "--store",
        default=argparse.SUPPRESS,
        help=f"{URL_FORMS} URL (default: config, else the data dir)",
    )
    common.add_argument(
        "--quiet", action="store_true", default=argparse.SUPPRESS, help="print only failures"
    )
    common.add_argument(
        "--divert-key-file",
        type=Path,
        default=argparse.SUPPRESS,
        metavar="FILE",
        help="also keep the hostnames for blocklist-divert, encrypted with this key "
        f"(default: ${KEY_FILE_ENV}, else divert_key_file in the config)",
    )

    parser = argparse.ArgumentParser(
        prog="blocklist-sync",
        description="Download the licensed blocklist feed(s), validate, and activate them.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.add_argument("--feed-url", help="sync this one feed instead of the configured ones")
    parser.add_argument("--format", choices=FORMATS, help="format of --feed-url")
    parser.add_argument("--name", default="default", help="feed and list name for --feed-url")
    parser.add_argument(
        "--force", action="store_true", help="accept a feed that shrank beyond max_shrink"
    )
    parser.add_argument(
        "--metrics-file",
        type=Path,
        metavar="FILE",
        help="after the sync, write Prometheus metrics to FILE for node_exporter's textfile "
        "collector (e.g. /var/lib/prometheus/node-exporter/blocklist-sync.prom)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    status = sub.add_parser("status", parents=[common], help="show what is active")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    kind = argparse.ArgumentParser(add_help=False)
    kind.add_argument(
        "--kind",
        choices=KINDS,
        default="urls",
        help="which list: the URL list (default) or the image hash list",
    )
    sub.add_parser("rollback", parents=[common, kind], help="re-activate the previous version")
    for name, text in (("suppress", "stop enforcing"), ("unsuppress", "enforce again")):
        p = sub.add_parser(name, parents=[common, kind], help=f"{text} one entry by id")
        p.add_argument("entry_id", metavar="ID")
        if name == "suppress":
            p.add_argument("--note", default="", help="why (e.g. an appeal reference)")
    return parser


def resolve_config(args: argparse.Namespace) -> SyncConfig:
    path = getattr(args, "config", None) or os.environ.get("BLOCKLIST_SYNC_CONFIG")
    if path:
        config = load_config(Path(path))
    elif DEFAULT_CONFIG.exists():
        config = load_config(DEFAULT_CONFIG)
    else:
        config = SyncConfig(feeds=())
    feed_url = getattr(args, "feed_url", None)
    if feed_url:
        if not args.format:
            raise ConfigError("--feed-url needs --format (" + ", ".join(FORMATS) + ")")
        feed = make_feed(args.name, {"url": feed_url, "format": args.format})
        others = tuple(f for f in config.feeds if f.source.name != args.name)
        config = dataclasses.replace(config, feeds=(*others, feed))
    elif getattr(args, "format", None):
        raise ConfigError("--format goes with --feed-url")
    validate_limits(config)
    return config


def ago(t: float | None) -> str:
    if t is None:
        return "never"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))
    minutes = max(0, int(time.time() - t)) // 60
    if minutes < 120:
        return f"{stamp} ({minutes} min ago)"
    return f"{stamp} ({minutes // 60} h ago)"


def describe(v: VersionInfo) -> str:
    return (
        f"version {v.version}, {worker.entries_text(v.entries)}, {v.source}, "
        f"published {ago(v.created_at)}"
    )


async def cmd_sync(
    stores: Stores,
    config: SyncConfig,
    args: argparse.Namespace,
    *,
    progress: Progress | None = None,
    results: dict[str, worker.SyncResult] | None = None,
) -> int:
    """``progress`` None: a progress line on stderr if it is a terminal. --quiet: none.
    ``results``: filled with each kind's sync result (for --metrics-file)."""
    if not config.feeds:
        raise ConfigError(
            "no feeds configured: give --config FILE with [feeds.NAME] tables, "
            "or --feed-url URL --format FMT"
        )
    fetch = config.feeds[-1:] if args.feed_url else config.feeds
    quiet = getattr(args, "quiet", False)
    if quiet:
        progress = NO_PROGRESS
    elif progress is None:
        progress = terminal_progress(sys.stderr)
    status = EXIT_OK
    for kind in KINDS:
        todo = [feed for feed in fetch if feed.kind == kind]
        if not todo:
            continue
        of_kind = dataclasses.replace(config, feeds=_feeds(config, kind))
        hosts = None
        if kind == "urls":  # the hosts of URL lists, for diversion: a step of its own
            try:
                hosts = open_hosts(args, config)
            except ConfigError as e:
                print(
                    f"hostnames for diversion: FAILED: {e}; the lists are synced without them",
                    file=sys.stderr,
                )
                status = EXIT_FAILED
        try:
            result = await worker.run_sync(
                stores(kind), of_kind, todo, force=args.force, progress=progress, hosts=hosts
            )
        except HostKeyError as e:
            print(f"hostnames for diversion: FAILED: {e}", file=sys.stderr)
            status = EXIT_FAILED
            continue
        finally:
            if hosts is not None:
                await hosts.store.close()
        if results is not None:
            results[kind] = result
        label = LABELS[kind]
        if result.skipped:
            if not quiet:
                print(f"{label}skipped: another blocklist-sync holds the lock")
            continue
        for outcome in result.outcomes:
            if outcome.status == "failed":
                print(outcome.line(), file=sys.stderr)
            elif not quiet:
                print(outcome.line())
        if not quiet:
            if result.activated is not None:
                print(f"activated {label}{describe(result.activated)}")
            elif result.active is not None:
                print(f"active {label}".rstrip() + f": {describe(result.active)}")
            else:
                print(f"no {label or 'list '}is active yet")
        if result.failed:
            status = EXIT_FAILED
    return status


def _feeds(config: SyncConfig, kind: str) -> tuple[Feed, ...]:
    return tuple(feed for feed in config.feeds if feed.kind == kind)


async def cmd_status(stores: Stores, config: SyncConfig, args: argparse.Namespace) -> int:
    """The URL list as before, then the hash list when one is configured or active."""
    docs = {}
    for kind in KINDS:
        store = stores(kind)
        configured = [f.source.name for f in _feeds(config, kind)]
        names = list(dict.fromkeys([*configured, *await worker.known_feeds(store)]))
        active = await store.active()
        if kind != "urls" and active is None and not names:
            continue
        docs[kind] = {
            "store": store.url,
            "active": active,
            "versions": await store.versions(),
            "feeds": {n: await store.get_state(worker.feed_key(n)) or {} for n in names},
            "suppressed": (await store.get_state(worker.SUPPRESSED) or {}).get("ids", {}),
        }
    async with open_store(store_url(args, config), namespace="divert") as divert_store:
        divert = await divert_store.get_state("hosts")
    any_active = any(doc["active"] is not None for doc in docs.values())
    if args.json:
        doc = _status_json(docs["urls"])
        doc["divert_hosts"] = divert and {k: v for k, v in divert.items() if k != "inputs"}
        doc |= {kind: _status_json(d) for kind, d in docs.items() if kind != "urls"}
        print(json.dumps(doc, indent=2))
        return EXIT_OK if any_active else EXIT_FAILED
    for kind, doc in docs.items():
        _print_status(doc, LABELS[kind], divert if kind == "urls" else None)
    return EXIT_OK if any_active else EXIT_FAILED


def _status_json(doc: dict) -> dict:
    active = doc["active"]
    return {
        "store": doc["store"],
        "active": None if active is None else active.__dict__,
        "versions": [v.__dict__ for v in doc["versions"]],
        "feeds": {n: {k: v for k, v in s.items() if k != "fetch"} for n, s in doc["feeds"].items()},
        "suppressed": doc["suppressed"],
    }


def _print_status(doc: dict, label: str, divert: dict | None) -> None:
    active, versions = doc["active"], doc["versions"]
    if label:
        print()
    print(f"{label}store: {doc['store']}")
    none = "none (sync a hashes-jsonl or hashes-csv feed)" if label else "none (run blocklist-sync)"
    print(f"{label}active: {describe(active)}" if active else f"{label}active: {none}")
    if versions:
        print(f"{label}kept versions: " + ", ".join(str(v.version) for v in versions))
    for name, s in doc["feeds"].items():
        entries = s.get("entries")
        line = f"feed {name}: " + (
            "no entries kept" if entries is None else worker.entries_text(entries)
        )
        line += f", last ok {ago(s.get('last_ok'))}, last changed {ago(s.get('last_changed'))}"
        if s.get("last_error"):
            line += f", last error {ago(s.get('last_error_at'))}: {s['last_error']}"
        print(line)
    if divert:
        stale = "" if active and divert.get("list") == active.checksum else " (not the active list)"
        print(
            f"hostnames for diversion: {divert.get('hosts', 0):,} (encrypted) of list version "
            f"{divert.get('list_version')}{stale}, updated {ago(divert.get('updated_at'))}"
        )
    for entry_id, info in sorted(doc["suppressed"].items()):
        note = f", note: {info['note']}" if info.get("note") else ""
        print(f"{label}suppressed: {entry_id} since {ago(info.get('since'))}{note}")


async def cmd_rollback(stores: Stores, config: SyncConfig, args: argparse.Namespace) -> int:
    label = LABELS[args.kind]
    hosts = open_hosts(args, config) if args.kind == "urls" else None
    try:
        info = await worker.rollback(stores(args.kind), _feeds(config, args.kind), hosts)
    finally:
        if hosts is not None:
            await hosts.store.close()
    print(f"rolled back {label}".rstrip() + f": {describe(info)}")
    print("the rolled-back content stays inactive until the feed changes (or --force)")
    return EXIT_OK


async def cmd_suppress(stores: Stores, config: SyncConfig, args: argparse.Namespace) -> int:
    """Suppress or unsuppress one entry: the list is rebuilt from the feeds' kept entries
    and announced at once, from the configured feeds or, with no configuration naming
    any of this kind, from those the store records the active list was built from."""
    on = args.command == "suppress"
    store = stores(args.kind)
    feeds = _feeds(config, args.kind) or await worker.recorded_feeds(store, args.kind)
    label = LABELS[args.kind]
    hosts = open_hosts(args, config) if args.kind == "urls" else None
    try:
        info = await worker.set_suppressed(
            store, feeds, args.entry_id, on, getattr(args, "note", ""), hosts
        )
    except worker.UnknownEntry as e:
        where = f" ({label.strip()})" if label else ""
        print(f"blocklist-sync: {args.command}{where}: {e}; nothing changed", file=sys.stderr)
        return EXIT_USAGE
    finally:
        if hosts is not None:
            await hosts.store.close()
    verb = "suppressed" if on else "enforcing again"
    print(f"{verb}: {args.entry_id}" + (f" ({label.strip()})" if label else ""))
    if info is not None:
        print(f"activated {label}{describe(info)}")
    else:
        print(f"the active {label or 'list '}already {'leaves it out' if on else 'holds it'}")
    return EXIT_OK


COMMANDS = {
    None: cmd_sync,
    "status": cmd_status,
    "rollback": cmd_rollback,
    "suppress": cmd_suppress,
    "unsuppress": cmd_suppress,
}


def store_url(args: argparse.Namespace, config: SyncConfig) -> str | None:
    return getattr(args, "store", None) or config.store


def open_hosts(args: argparse.Namespace, config: SyncConfig) -> HostStore | None:
    """Where the hostnames for diversion go, when a key file is configured (else None)."""
    path = (
        getattr(args, "divert_key_file", None)
        or os.environ.get(KEY_FILE_ENV)
        or config.divert_key_file
    )
    if not path:
        return None
    try:
        key = hostkey.load(Path(path))
        store = open_store(store_url(args, config), namespace="divert")
    except (HostKeyError, StoreError) as e:
        raise ConfigError(str(e)) from None
    return HostStore(store, key)


async def run(args: argparse.Namespace, *, progress: Progress | None = None) -> int:
    """Run the command in ``args``; ``progress`` replaces the sync's terminal line (tests)."""
    config = resolve_config(args)
    url = store_url(args, config)
    opened: dict[str, Store] = {}

    def stores(kind: str) -> Store:
        """The store of one kind of list, opened on first use."""
        if kind not in opened:
            opened[kind] = open_store(url, keep=config.keep_versions, namespace=NAMESPACES[kind])
        return opened[kind]

    try:
        stores("urls")
    except StoreError as e:
        raise ConfigError(str(e)) from None
    try:
        if args.command is None and getattr(args, "metrics_file", None):
            return await _sync_with_metrics(stores, config, args, progress)
        if args.command is None:
            return await cmd_sync(stores, config, args, progress=progress)
        return await COMMANDS[args.command](stores, config, args)
    finally:
        for store in opened.values():
            await store.close()


async def _sync_with_metrics(
    stores: Stores, config: SyncConfig, args: argparse.Namespace, progress: Progress | None
) -> int:
    """The sync, then --metrics-file written whatever its outcome (a run that raised is a
    failed run there too)."""
    started, results, status = time.time(), {}, EXIT_FAILED
    try:
        status = await cmd_sync(stores, config, args, progress=progress, results=results)
        return status
    finally:
        feeds = {k: [f.source.name for f in _feeds(config, k)] for k in KINDS if _feeds(config, k)}
        try:
            await sync_metrics.write(
                args.metrics_file, stores, feeds, results, status=status, started=started
            )
        except (OSError, StoreError) as e:
            print(f"blocklist-sync: cannot write {args.metrics_file}: {e}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return asyncio.run(run(args))
    except ConfigError as e:
        print(f"blocklist-sync: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (StoreError, RuntimeError) as e:
        print(f"blocklist-sync: {e}; the previous list stays active", file=sys.stderr)
        return EXIT_FAILED
    except HostKeyError as e:
        print(f"blocklist-sync: hostnames for diversion: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
