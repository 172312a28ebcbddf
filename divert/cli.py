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
import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from blocklist_addon.store import StoreError
from divert import DivertError, keyfile
from divert import run as run_command
from divert.config import (
    CONFIG_ENV,
    DEFAULT_CONFIG,
    KEY_FILE_ENV,
    ConfigError,
    DivertConfig,
    load_config,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_KEY_FILE = Path("/etc/blocklist-proxy/divert.key")

EPILOG = f"""\
commands:
  keygen          write a new hostname key file (mode 0600; never overwrites one)
  run             long-running, on the gateway: keep the nft sets current, empty them
                  while the proxy is ill (deploy/systemd/blocklist-divert.service)

examples:
  blocklist-divert keygen --key-file /etc/blocklist-proxy/divert.key
  blocklist-sync --config /etc/blocklist-proxy/sync.toml \\
                 --divert-key-file /etc/blocklist-proxy/divert.key

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
        help="the sync's store URL: redis://, rediss://, unix:// or file:// (default: config, "
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
    run_command.add_parser(sub, common)
    return parser


def resolve_config(args: argparse.Namespace) -> DivertConfig:
    path = getattr(args, "config", None) or os.environ.get(CONFIG_ENV)
    if path:
        config = load_config(Path(path))
    elif DEFAULT_CONFIG.exists():
        config = load_config(DEFAULT_CONFIG)
    else:
        config = DivertConfig()
    key_file = getattr(args, "key_file", None) or os.environ.get(KEY_FILE_ENV)
    if key_file:
        config = dataclasses.replace(config, key_file=Path(key_file))
    if getattr(args, "store", None):
        config = dataclasses.replace(config, store=args.store)
    return config


def key_path(config: DivertConfig) -> Path:
    return config.key_file or DEFAULT_KEY_FILE


async def cmd_keygen(config: DivertConfig, args: argparse.Namespace) -> int:
    path = key_path(config)
    keyfile.generate(path)
    if not getattr(args, "quiet", False):
        print(f"wrote a new hostname key to {path} (mode 0600)")
        print("give blocklist-sync the same file: --divert-key-file or divert_key_file")
    return EXIT_OK


COMMANDS = {"keygen": cmd_keygen, "run": run_command.cmd_run}


async def run(args: argparse.Namespace) -> int:
    config = resolve_config(args)
    return await COMMANDS[args.command](config, args)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(run(args))
    except ConfigError as e:
        print(f"blocklist-divert: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (DivertError, StoreError) as e:
        print(f"blocklist-divert: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
