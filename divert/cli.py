"""``blocklist-divert``: the addresses of the listed hosts, for a gateway or router to send
through the proxy (DESIGN "Two-stage diversion").

Exit status, like blocklist-sync: 0 done (the set is current, updated or unchanged); 1 the
run failed or a gate refused the new set (the previous set stays active), or the store is
unreachable; 2 usage or configuration error. One line per outcome, for cron mail; gate
decisions name hosts by digest, never by name.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from blocklist_addon.lists import hostkey
from blocklist_addon.lists.hostkey import HostKeyError
from blocklist_addon.lists.hosts import ACTIVE as HOSTS_STATE
from blocklist_addon.lists.store import URL_FORMS, Store, StoreError, open_store, write_atomic
from blocklist_addon.ops.progress import NO_PROGRESS, Progress, terminal_progress
from divert import DivertError, runcmd, runlock
from divert.config import (
    CONFIG_ENV,
    DEFAULT_CONFIG,
    KEY_FILE_ENV,
    ConfigError,
    DivertConfig,
    load_config,
)
from divert.dataset import DiversionSet
from divert.gates import STATES
from divert.planes import NftPlane, export
from divert.resolve import LAST_RUN, load_set, resolve_once, rollback, scheduled

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_KEY_FILE = Path("/etc/blocklist-proxy/divert.key")

EPILOG = f"""\
commands:
  keygen          write a new hostname key file (mode 0600; never overwrites one)
  resolve         resolve the listed hosts, apply the gates, publish the diversion set
  export          print the active set for nft, BIRD, ExaBGP or as JSON
  apply           load the active set into local nftables (one transaction)
  status          the active set, the hostnames, the last run's gate decisions
  rollback        re-activate the previous set (kept until DNS gives another)
  run             long-running: keep the nft sets (or BIRD's or ExaBGP's BGP routes)
                  current, withdraw them while the proxy is ill
                  (deploy/systemd/blocklist-divert.service; deploy/exabgp.conf)

examples:
  blocklist-divert keygen --key-file /etc/blocklist-proxy/divert.key
  blocklist-sync --config /etc/blocklist-proxy/sync.toml \\
                 --divert-key-file /etc/blocklist-proxy/divert.key
  blocklist-divert --config /etc/blocklist-proxy/divert.toml resolve --quiet
  blocklist-divert apply
  blocklist-divert export --format bird --family 4 --next-hop 198.51.100.1 \\
                   --output /etc/bird/divert4.conf
  blocklist-divert export --format exabgp --next-hop 198.51.100.1 --next-hop 2001:db8::1
  blocklist-divert run --data-plane bird     # routes in bird_dir, then birdc configure

Gate decisions name hosts by digest, never by name.

The key file comes from --key-file, else ${KEY_FILE_ENV}, else key_file in the config, else
{DEFAULT_KEY_FILE}. The config is --config, else ${CONFIG_ENV}, else {DEFAULT_CONFIG} if
present. Give blocklist-sync the same key file: it stores the active list's hostnames
encrypted with it, and only this command decrypts them, in memory.
"""


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help=f"TOML config (default: ${CONFIG_ENV}, else {DEFAULT_CONFIG} if present)",
    )
    common.add_argument(
        "--store",
        default=argparse.SUPPRESS,
        help=f"the sync's store URL: {URL_FORMS} (default: config, "
        "else the data dir); the set lives in its namespace 'divert'",
    )
    common.add_argument(
        "--key-file",
        type=Path,
        default=argparse.SUPPRESS,
        metavar="FILE",
        help=f"hostname key (default: ${KEY_FILE_ENV}, else key_file in the config, "
        f"else {DEFAULT_KEY_FILE})",
    )
    common.add_argument(
        "--quiet", action="store_true", default=argparse.SUPPRESS, help="print only failures"
    )
    parser = argparse.ArgumentParser(
        prog="blocklist-divert",
        description="Resolve the listed hosts into a diversion set and load it into the data "
        "plane (nftables, BIRD, ExaBGP), with sanity gates against DNS tricks.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    sub.add_parser("keygen", parents=[common], help="write a new hostname key file")
    res = sub.add_parser("resolve", parents=[common], help="one resolution run (cron)")
    res.add_argument(
        "--resolver",
        action="append",
        metavar="HOST[:PORT]",
        help="resolver address (repeatable; default: resolvers in the config, else "
        "/etc/resolv.conf)",
    )
    res.add_argument(
        "--protect-file",
        type=Path,
        metavar="FILE",
        help="prefixes never diverted, one a line (instead of protect_file in the config)",
    )
    res.add_argument(
        "--force",
        action="store_true",
        help=(
            "publish a set that grew beyond max_growth, with most hosts unanswered, or with"
            " most listed hosts gone at once (max_vanished)"
        ),
    )
    exp = sub.add_parser("export", parents=[common], help="the active set for a data plane")
    exp.add_argument("--format", required=True, choices=export.FORMATS)
    exp.add_argument(
        "--next-hop",
        action="append",
        metavar="ADDR",
        help="bird/exabgp: the proxy's address, one per family (default: next_hop in config)",
    )
    exp.add_argument(
        "--community",
        metavar="ASN:VALUE",
        help="bird/exabgp: the operator community the routes carry beside NO_EXPORT "
        "(default: community in config)",
    )
    exp.add_argument("--family", type=int, choices=(4, 6), help="only IPv4 or only IPv6")
    exp.add_argument("--output", type=Path, metavar="FILE", help="write here (atomically)")
    exp.add_argument("--table", help="nft table name (default: nft_table in config)")
    app = sub.add_parser("apply", parents=[common], help="the active set into local nftables")
    app.add_argument("--table", help="nft table name (default: nft_table in config)")
    app.add_argument(
        "--force",
        action="store_true",
        help="apply even while blocklist-divert run keeps the sets (it may have withdrawn "
        "them because the proxy is ill, and will undo this)",
    )
    status = sub.add_parser("status", parents=[common], help="show the set and the last run")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_parser("rollback", parents=[common], help="re-activate the previous set")
    runcmd.add_parser(sub, common)
    return parser


def config_path(args: argparse.Namespace) -> Path | None:
    """The config file this command reads: --config, else $BLOCKLIST_DIVERT_CONFIG, else
    the default location when a file is there."""
    path = getattr(args, "config", None) or os.environ.get(CONFIG_ENV)
    if path:
        return Path(path)
    return DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None


def resolve_config(args: argparse.Namespace) -> DivertConfig:
    path = config_path(args)
    config = load_config(path) if path is not None else DivertConfig()
    key_file = getattr(args, "key_file", None) or os.environ.get(KEY_FILE_ENV)
    if key_file:
        config = dataclasses.replace(config, key_file=Path(key_file))
    if getattr(args, "store", None):
        config = dataclasses.replace(config, store=args.store)
    return config


def store_origin(args: argparse.Namespace, config: DivertConfig) -> str:
    """Where the store URL came from, for every line that names the store: an operator who
    meant Redis must see at once that the embedded file store was read instead."""
    if getattr(args, "store", None):
        return "from --store"
    path = config_path(args)
    if config.store is not None and path is not None:
        return f"from {path}"
    if path is not None:
        return f"the embedded store: {path} names no store; set store there or give --store"
    return (
        f"the embedded store: no --store, no ${CONFIG_ENV} and no {DEFAULT_CONFIG}; give "
        "--config or --store to read another"
    )


def store_label(config: DivertConfig, origin: str) -> str:
    """``<store URL without its password> (<origin>)``; the store is not contacted."""
    try:
        url = open_divert(config).url  # nothing is contacted before the first operation
    except ConfigError:
        url = "an invalid store URL"
    return f"{url} ({origin})"


def key_path(config: DivertConfig) -> Path:
    return config.key_file or DEFAULT_KEY_FILE


async def cmd_keygen(config: DivertConfig, args: argparse.Namespace) -> int:
    path = key_path(config)
    hostkey.generate(path)
    if not getattr(args, "quiet", False):
        print(f"wrote a new hostname key to {path} (mode 0600)")
        print("give blocklist-sync the same file: --divert-key-file or divert_key_file")
    return EXIT_OK


async def cmd_resolve(
    config: DivertConfig, args: argparse.Namespace, *, progress: Progress | None = None
) -> int:
    if args.resolver:
        config = dataclasses.replace(config, resolvers=tuple(args.resolver))
    if args.protect_file:
        config = dataclasses.replace(config, protect_file=args.protect_file)
    config = dataclasses.replace(config, key_file=key_path(config))
    quiet = getattr(args, "quiet", False)
    if quiet:
        progress = NO_PROGRESS
    elif progress is None:
        progress = terminal_progress(sys.stderr)
    with _logging(quiet, progress):
        result = await resolve_once(config, force=args.force, progress=progress)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if result.failed:
        print(result.line(), file=sys.stderr)
        return EXIT_FAILED
    if not quiet:
        print(result.line())
    return EXIT_OK


async def _active(store: Store, label: str) -> tuple[int, DiversionSet]:
    loaded = await load_set(store)
    if loaded is None:
        raise DivertError(f"no diversion set yet in {label}: run blocklist-divert resolve first")
    return loaded[0].version, loaded[1]


def open_divert(config: DivertConfig) -> Store:
    try:
        return open_store(config.store, keep=config.keep_versions, namespace="divert")
    except StoreError as e:
        raise ConfigError(str(e)) from None


async def cmd_export(config: DivertConfig, args: argparse.Namespace) -> int:
    hops = export.next_hops(args.next_hop or config.next_hop)
    async with open_divert(config) as store:
        version, dset = await _active(store, args.store_label)
    text = export.render(
        args.format,
        dset,
        version=version,
        table=args.table or config.nft_table,
        next_hop=hops,
        family=args.family,
        community=args.community or config.community,
    )
    if args.output is None:
        sys.stdout.write(text)
        return EXIT_OK
    try:
        # 0640: BIRD reads the file as its own user (give the directory its group, setgid).
        await asyncio.to_thread(write_atomic, args.output, text.encode(), mode=0o640)
    except OSError as e:
        raise DivertError(f"cannot write {args.output}: {e.strerror or e}") from None
    if not getattr(args, "quiet", False):
        print(
            f"wrote diversion set version {version} ({len(dset):,} addresses) from "
            f"{args.store_label} to {args.output}"
        )
    return EXIT_OK


async def cmd_apply(config: DivertConfig, args: argparse.Namespace) -> int:
    table = args.table or config.nft_table
    plane = NftPlane(table)
    async with open_divert(config) as store:
        version, dset = await _active(store, args.store_label)
    if args.force:
        await asyncio.to_thread(plane.apply, dset)
    else:
        with runlock.outside_run(runlock.lock_path(config, plane.lock), plane.what):
            await asyncio.to_thread(plane.apply, dset)
    if not getattr(args, "quiet", False):
        print(
            f"applied diversion set version {version} of {args.store_label}: "
            f"{len(dset):,} addresses ({len(dset.ipv4):,} IPv4, {len(dset.ipv6):,} IPv6) into "
            f"nft table inet {table}"
        )
    return EXIT_OK


async def cmd_status(config: DivertConfig, args: argparse.Namespace) -> int:
    async with open_divert(config) as store:
        loaded = await load_set(store)
        versions = await store.versions()
        hosts = await store.get_state(HOSTS_STATE)
        last = await store.get_state(LAST_RUN)
        url = store.url
    info, dset = loaded if loaded else (None, None)
    if args.json:
        doc: dict[str, Any] = {
            "store": url,
            "store_origin": args.store_origin,
            "active": None
            if info is None or dset is None
            else {**info.__dict__, "ipv4": len(dset.ipv4), "ipv6": len(dset.ipv6)},
            "versions": [v.__dict__ for v in versions],
            "hostnames": hosts and {k: v for k, v in hosts.items() if k != "inputs"},
            "last_run": last,
        }
        print(json.dumps(doc, indent=2))
        return EXIT_OK if info else EXIT_FAILED
    print(f"store: {args.store_label}")
    if info is None or dset is None:
        print("active set: none (run blocklist-divert resolve)")
    else:
        print(
            f"active set: version {info.version}, {len(dset):,} addresses ({len(dset.ipv4):,} "
            f"IPv4, {len(dset.ipv6):,} IPv6) from {len(dset.hosts):,} hosts, {info.source}, "
            f"published {_ago(info.created_at)}"
        )
    if versions:
        print("kept versions: " + ", ".join(str(v.version) for v in versions))
    if hosts:
        print(
            f"hostnames: {hosts.get('hosts', 0):,} (encrypted) of list version "
            f"{hosts.get('list_version')}, updated {_ago(hosts.get('updated_at'))}"
        )
    else:
        print("hostnames: none stored (run blocklist-sync with --divert-key-file)")
    if last:
        print(
            f"last run: {_ago(last.get('at'))}, {last.get('duration', 0):.1f} s: {last.get('line')}"
        )
        states = last.get("states") or {}
        if states:
            ordered = sorted(states.items(), key=lambda i: STATES.index(i[0]))
            print("hosts by state: " + ", ".join(f"{s} {n:,}" for s, n in ordered))
        for warning in last.get("warnings") or []:
            print(f"warning: {warning}")
        decisions = last.get("decisions") or []
        for d in decisions:
            who = f"host {d['digest']}" if d.get("digest") else "set"
            print(f"gate: {who}: {d['gate']}: {d['detail']}")
        hidden = int(last.get("decisions_total", 0)) - len(decisions)
        if hidden > 0:
            print(f"gate: ... and {hidden:,} more decisions (in the log of that run)")
    return EXIT_OK if info else EXIT_FAILED


async def cmd_rollback(config: DivertConfig, args: argparse.Namespace) -> int:
    async with open_divert(config) as store:
        info = await rollback(store)
    print(
        f"rolled back: diversion set version {info.version} ({info.source}), "
        f"{info.entries:,} addresses, in {args.store_label}"
    )
    print("the rolled-back set is not published again until DNS answers change (or --force)")
    return EXIT_OK


def run_key(config: DivertConfig) -> Path | None:
    """The hostname key ``run`` resolves with: the one given (--key-file, the environment,
    key_file in the config), else the default file when this user can read it, else None:
    ``run`` only follows the store. A default this user cannot read is no key: under ExaBGP
    ``run`` is ExaBGP's user, whose config leaves key_file out (another job resolves), and
    which may see the blocklist user's key without reading it: taking it failed every
    resolution with "Permission denied"."""
    if config.key_file:
        return config.key_file
    if os.access(DEFAULT_KEY_FILE, os.R_OK):
        return DEFAULT_KEY_FILE
    if os.path.lexists(DEFAULT_KEY_FILE):
        logging.getLogger("blocklist_divert").info(
            "not resolving: %s is not readable by this user and the config names no "
            "key_file; run follows the store (resolve elsewhere, with the key)",
            DEFAULT_KEY_FILE,
        )
    return None


async def cmd_run(config: DivertConfig, args: argparse.Namespace) -> int:
    """``run`` resolves on its schedule when it has the hostname key; without one it only
    follows the store (another machine resolves) and withdraws on ill health."""
    # run's log format (runcmd's own call then changes nothing), so that run_key's line is
    # said, not dropped as an INFO line before logging is set up.
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    key = run_key(config)
    resolve = scheduled(dataclasses.replace(config, key_file=key)) if key else None
    return await runcmd.cmd_run(config, args, resolve)


def _ago(t: float | None) -> str:
    if t is None:
        return "never"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))
    minutes = max(0, int(time.time() - t)) // 60
    return f"{stamp} ({minutes} min ago)" if minutes < 120 else f"{stamp} ({minutes // 60} h ago)"


class _ProgressHandler(logging.Handler):
    """Log lines on stderr, erasing the progress line first so they do not mix."""

    def __init__(self, progress: Progress) -> None:
        super().__init__()
        self.progress = progress
        self.setFormatter(logging.Formatter("blocklist-divert: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.progress.clear()
        with contextlib.suppress(OSError, ValueError):
            print(self.format(record), file=sys.stderr)


class _logging:
    """Gate decisions to stderr for one run: refusals always, the rest unless --quiet."""

    def __init__(self, quiet: bool, progress: Progress) -> None:
        self.logger = logging.getLogger("blocklist_divert")
        self.handler = _ProgressHandler(progress)
        self.handler.setLevel(logging.WARNING if quiet else logging.INFO)

    def __enter__(self) -> None:
        self.level = self.logger.level
        self.logger.addHandler(self.handler)
        self.logger.setLevel(logging.INFO)
        self.logger.propagate = False

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.level)
        self.logger.propagate = True


COMMANDS = {
    "keygen": cmd_keygen,
    "resolve": cmd_resolve,
    "export": cmd_export,
    "apply": cmd_apply,
    "status": cmd_status,
    "rollback": cmd_rollback,
    "run": cmd_run,
}


async def run(args: argparse.Namespace, *, progress: Progress | None = None) -> int:
    """Run the command in ``args``; ``progress`` replaces resolve's terminal line (tests)."""
    config = resolve_config(args)
    args.store_origin = store_origin(args, config)
    args.store_label = store_label(config, args.store_origin)
    if args.command == "resolve":
        return await cmd_resolve(config, args, progress=progress)
    return await COMMANDS[args.command](config, args)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(run(args))
    except ConfigError as e:
        print(f"blocklist-divert: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (DivertError, HostKeyError, StoreError) as e:
        keeps = "; the previous set stays active" if args.command == "resolve" else ""
        label = getattr(args, "store_label", None)
        where = f"; store {label}" if isinstance(e, StoreError) and label else ""
        print(f"blocklist-divert: {e}{where}{keeps}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
