"""The sync worker's TOML configuration: a store, validation limits and named feeds.

    store = "redis://127.0.0.1:6379/0"     # or "file:///var/lib/blocklist"; default: data dir
    keep_versions = 5
    max_shrink = 0.5          # refuse a feed that lost more than half its entries
    max_invalid_ratio = 0.01  # refuse a feed with more than 1% invalid records
    min_entries = 1
    max_entries = 20000000    # refuse a feed of more entries (reading stops there)
    lock_wait = 0             # seconds a second sync waits for the first; 0: skip at once
    divert_key_file = "/etc/blocklist-proxy/divert.key"  # also keep the hostnames, encrypted,
                              # for blocklist-divert (two-stage diversion); default: none

    [feeds.iwf]
    url = "https://feed.example.net/urllist.csv"
    format = "csv"            # text | csv | json | sha256 | hashes-jsonl | hashes-csv
    list = "iwf"              # list name in logs and on the splash page (default: feed name)
    token_file = "/etc/blocklist-proxy/iwf.token"
    # basic_auth_env = "IWF"  # $IWF_USERNAME / $IWF_PASSWORD
    # client_cert = "/etc/blocklist-proxy/client.pem"
    # checksum_url = "https://feed.example.net/urllist.csv.sha256"
    # timeout = 600           # seconds the whole download may take, retries included

    [feeds.hotline-hashes]    # an image hash list: its own list of kind "hashes"
    url = "https://feed.example.net/hashes.jsonl"
    format = "hashes-jsonl"
    token_file = "/etc/blocklist-proxy/iwf.token"

Secrets are never in this file's values themselves: only the names of files and
environment variables that hold them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from blocklist_addon.ops.config import ConfigError, read_toml
from sync.feeds import FORMATS, kind_of
from sync.fetch import FeedSource

DEFAULT_CONFIG = Path("/etc/blocklist-proxy/sync.toml")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
_PATH_FIELDS = {"token_file", "client_cert", "client_key", "ca_file"}
_SOURCE_FIELDS = {f.name for f in fields(FeedSource)} - {"name"}


@dataclass(frozen=True)
class Feed:
    source: FeedSource
    list_name: str

    @property
    def kind(self) -> str:
        """ "urls" or "hashes": which list (and store namespace) the feed goes into."""
        return kind_of(self.source.format)


@dataclass(frozen=True)
class SyncConfig:
    feeds: tuple[Feed, ...]
    store: str | None = None
    keep_versions: int = 5
    min_entries: int = 1
    #: Past this many entries a feed is refused as it is read, before it takes the sync's
    #: memory (a hash feed is packed, ~72 B a record of MD5 + PDQ; a URL feed is not).
    max_entries: int = 20_000_000
    max_invalid_ratio: float = 0.01
    max_shrink: float = 0.5
    lock_wait: float = 0.0
    divert_key_file: Path | None = None


def check_name(name: str, what: str = "feed name") -> str:
    """Names become store keys and log fields: keep them short and plain."""
    if not _NAME.fullmatch(name):
        raise ConfigError(f"{what} {name!r}: use letters, digits, '.', '_' or '-' (max 64)")
    return name


def make_feed(name: str, table: dict[str, Any], base: Path | None = None) -> Feed:
    check_name(name)
    table = dict(table)
    list_name = check_name(str(table.pop("list", name)), "list name")
    unknown = set(table) - _SOURCE_FIELDS
    if unknown:
        raise ConfigError(f"feed {name}: unknown setting(s) {', '.join(sorted(unknown))}")
    if "url" not in table:
        raise ConfigError(f"feed {name}: 'url' is required")
    fmt = table.setdefault("format", "text")
    if fmt not in FORMATS:
        raise ConfigError(f"feed {name}: format {fmt!r} is not one of {', '.join(FORMATS)}")
    for key in _PATH_FIELDS & set(table):
        path = Path(os.path.expanduser(str(table[key])))
        table[key] = path if path.is_absolute() or base is None else base / path
    try:
        return Feed(FeedSource(name=name, **table), list_name)
    except TypeError as e:
        raise ConfigError(f"feed {name}: {e}") from None


def load_config(path: Path) -> SyncConfig:
    raw = read_toml(path)
    feeds_table = raw.pop("feeds", {})
    if not isinstance(feeds_table, dict) or not all(
        isinstance(t, dict) for t in feeds_table.values()
    ):
        raise ConfigError(f"config {path}: [feeds.NAME] tables expected")
    feeds = tuple(make_feed(n, t, path.parent) for n, t in feeds_table.items())
    if "divert_key_file" in raw:
        key_file = raw["divert_key_file"]
        if not isinstance(key_file, str):
            raise ConfigError(f"config {path}: divert_key_file must be a path")
        raw["divert_key_file"] = path.parent / os.path.expanduser(key_file)
    known = {f.name for f in fields(SyncConfig)} - {"feeds"}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"config {path}: unknown setting(s) {', '.join(sorted(unknown))}")
    try:
        config = SyncConfig(feeds=feeds, **raw)
    except TypeError as e:
        raise ConfigError(f"config {path}: {e}") from None
    validate_limits(config)
    return config


def validate_limits(config: SyncConfig) -> None:
    if not 0 <= config.max_shrink <= 1 or not 0 <= config.max_invalid_ratio <= 1:
        raise ConfigError("max_shrink and max_invalid_ratio are fractions between 0 and 1")
    if config.max_entries < max(config.min_entries, 1):
        raise ConfigError("max_entries must be at least min_entries and 1")
    for feed in config.feeds:
        source = feed.source
        timeouts = (source.connect_timeout, source.read_timeout, source.timeout)
        if not all(
            isinstance(t, int | float) and not isinstance(t, bool) and t > 0 for t in timeouts
        ):
            raise ConfigError(f"feed {source.name}: timeouts must be positive numbers of seconds")
    if config.keep_versions < 2:
        raise ConfigError("keep_versions must be at least 2 (rollback needs the previous one)")
    if len({f.list_name for f in config.feeds}) > 255:
        raise ConfigError("at most 255 list names")
