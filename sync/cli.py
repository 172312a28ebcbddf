"""``blocklist-sync``: one sync of the licensed feed(s) into the store, for cron.

Exit status: 0 the active list is current (updated or unchanged); 1 a feed could not be
fetched or failed validation, or the store is unreachable (the previous list stays active);
2 usage or configuration error. Output is one line per feed, for cron mail; on a terminal
(stderr a TTY, no --quiet) long phases also show a progress line, erased before the results.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from blocklist_addon.store import Store, StoreError, VersionInfo, open_store
from divert import DivertError, keyfile
from divert.config import KEY_FILE_ENV
from divert.hosts import HostStore
from sync import worker
from sync.config import (
    DEFAULT_CONFIG,
    ConfigError,
    SyncConfig,
    load_config,
    make_feed,
    validate_limits,
)
from sync.feeds import FORMATS
from sync.progress import NO_PROGRESS, Progress, terminal_progress

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

EPILOG = """\
commands:
  (none)          fetch every configured feed (or the one given by --feed-url) and activate
  status          show the active version, kept versions, each feed's state, suppressions
  rollback        re-activate the previous version (kept until the feed content changes)
  suppress ID     stop enforcing one entry by its opaque id, at once (e.g. awaiting appeal)
  unsuppress ID   enforce it again

examples:
  blocklist-sync --config /etc/blocklist-proxy/sync.toml
  blocklist-sync --store redis://127.0.0.1:6379/0 --feed-url https://feed.example.net/list.csv \\
                 --format csv --name iwf
  blocklist-sync status
  blocklist-sync suppress 3f1c2a9d0b7e4c55 --note "appeal 1234"

Two-stage diversion (blocklist-divert): with --divert-key-file FILE (or divert_key_file in
the config, or $BLOCKLIST_DIVERT_KEY_FILE) the sync also keeps the active list's hostnames,
encrypted with that key, for blocklist-divert resolve; make the key with blocklist-divert keygen.

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
        help="redis://, rediss://, unix:// or file:// URL (default: config, else the data dir)",
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
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    status = sub.add_parser("status", parents=[common], help="show what is active")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_parser("rollback", parents=[common], help="re-activate the previous version")
    for name, text in (("suppress", "stop enforcing"), ("unsuppress", "enforce again")):
        p = sub.add_parser(name, parents=[common], help=f"{text} one entry by id")
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
    store: Store, config: SyncConfig, args: argparse.Namespace, *, progress: Progress | None = None
) -> int:
    """``progress`` None: a progress line on stderr if it is a terminal. --quiet: none."""
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
    hosts = open_hosts(args, config)
    try:
        result = await worker.run_sync(
            store, config, fetch, force=args.force, progress=progress, hosts=hosts
        )
    except DivertError as e:
        print(f"hostnames for diversion: FAILED: {e}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        if hosts is not None:
            await hosts.store.close()
    if result.skipped:
        if not quiet:
            print("skipped: another blocklist-sync holds the lock")
        return EXIT_OK
    for outcome in result.outcomes:
        if outcome.status == "failed":
            print(outcome.line(), file=sys.stderr)
        elif not quiet:
            print(outcome.line())
    if not quiet:
        if result.activated is not None:
            print(f"activated {describe(result.activated)}")
        elif result.active is not None:
            print(f"active: {describe(result.active)}")
        else:
            print("no list is active yet")
    return EXIT_FAILED if result.failed else EXIT_OK


async def cmd_status(store: Store, config: SyncConfig, args: argparse.Namespace) -> int:
    active = await store.active()
    versions = await store.versions()
    names = [f.source.name for f in config.feeds]
    feeds = {n: await store.get_state(worker.feed_key(n)) or {} for n in names}
    suppressed = (await store.get_state(worker.SUPPRESSED) or {}).get("ids", {})
    async with open_store(store_url(args, config), namespace="divert") as divert_store:
        divert = await divert_store.get_state("hosts")
    if args.json:
        print(
            json.dumps(
                {
                    "store": store.url,
                    "active": None if active is None else active.__dict__,
                    "versions": [v.__dict__ for v in versions],
                    "feeds": {
                        n: {k: v for k, v in s.items() if k != "fetch"} for n, s in feeds.items()
                    },
                    "suppressed": suppressed,
                    "divert_hosts": divert and {k: v for k, v in divert.items() if k != "inputs"},
                },
                indent=2,
            )
        )
        return EXIT_OK if active else EXIT_FAILED
    print(f"store: {store.url}")
    print(f"active: {describe(active)}" if active else "active: none (run blocklist-sync)")
    if versions:
        print("kept versions: " + ", ".join(str(v.version) for v in versions))
    for name, s in feeds.items():
        entries = s.get("entries")
        line = f"feed {name}: " + (
            "no entries kept" if entries is None else worker.entries_text(entries)
        )
        line += f", last ok {ago(s.get('last_ok'))}, last changed {ago(s.get('last_changed'))}"
        if s.get("last_error"):
            line += f", last error: {s['last_error']}"
        print(line)
    if divert:
        stale = "" if active and divert.get("list") == active.checksum else " (not the active list)"
        print(
            f"hostnames for diversion: {divert.get('hosts', 0):,} (encrypted) of list version "
            f"{divert.get('list_version')}{stale}, updated {ago(divert.get('updated_at'))}"
        )
    for entry_id, info in sorted(suppressed.items()):
        note = f", note: {info['note']}" if info.get("note") else ""
        print(f"suppressed: {entry_id} since {ago(info.get('since'))}{note}")
    return EXIT_OK if active else EXIT_FAILED


async def cmd_rollback(store: Store, config: SyncConfig, args: argparse.Namespace) -> int:
    hosts = open_hosts(args, config)
    try:
        info = await worker.rollback(store, config.feeds, hosts)
    finally:
        if hosts is not None:
            await hosts.store.close()
    print(f"rolled back: {describe(info)}")
    print("the rolled-back content stays inactive until the feed changes (or --force)")
    return EXIT_OK


async def cmd_suppress(store: Store, config: SyncConfig, args: argparse.Namespace) -> int:
    on = args.command == "suppress"
    hosts = open_hosts(args, config)
    try:
        info = await worker.set_suppressed(
            store, config.feeds, args.entry_id, on, getattr(args, "note", ""), hosts
        )
    finally:
        if hosts is not None:
            await hosts.store.close()
    verb = "suppressed" if on else "enforcing again"
    print(f"{verb}: {args.entry_id}")
    if info is not None:
        print(f"activated {describe(info)}")
    elif config.feeds:
        print(f"note: the active list did not change: is {args.entry_id} an id in force?")
    else:
        print("note: no feeds configured here; it applies at the next sync (give --config)")
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
        key = keyfile.load(Path(path))
        store = open_store(store_url(args, config), namespace="divert")
    except (DivertError, StoreError) as e:
        raise ConfigError(str(e)) from None
    return HostStore(store, key)


async def run(args: argparse.Namespace, *, progress: Progress | None = None) -> int:
    """Run the command in ``args``; ``progress`` replaces the sync's terminal line (tests)."""
    config = resolve_config(args)
    try:
        store = open_store(store_url(args, config), keep=config.keep_versions)
    except StoreError as e:
        raise ConfigError(str(e)) from None
    try:
        if args.command is None:
            return await cmd_sync(store, config, args, progress=progress)
        return await COMMANDS[args.command](store, config, args)
    finally:
        await store.close()


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
    except DivertError as e:
        print(f"blocklist-sync: hostnames for diversion: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
