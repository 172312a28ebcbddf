"""``blocklist-divert``'s TOML configuration (``/etc/blocklist-proxy/divert.toml``).

    store = "redis://127.0.0.1:6379/0"   # the sync's store; the set lives in namespace "divert"
    key_file = "/etc/blocklist-proxy/divert.key"   # `blocklist-divert keygen` writes it
    resolvers = ["192.0.2.53", "[2001:db8::53]:53"]   # default: /etc/resolv.conf
    protect = ["198.51.100.0/24"]        # never diverted, beside the built-in prefixes
    protect_file = "/etc/blocklist-proxy/protect.txt"   # one prefix a line, # comments
    nat64_prefixes = ["2001:db8:64::/96"]   # your NAT64's prefixes: the IPv4 inside is protected
    max_per_host = 16        # a host answering with more addresses is refused
    max_total = 50000        # a set with more addresses is refused (exit 1)
    max_growth = 2.0         # a set growing beyond 2x the previous is refused (--force)
    growth_allowance = 32    # ... unless it grew by at most this many addresses
    max_failed = 0.5         # over half the hosts failing: the resolvers are broken (exit 1)
    max_vanished = 0.5       # over half the listed hosts losing every address at once (--force)
    vanished_allowance = 8   # ... unless at most this many hosts did
    grace = 21600            # seconds a failing or vanished host keeps its last addresses
    timeout = 3.0            # per DNS query
    deadline = 120.0         # for the whole resolution
    concurrency = 100        # hosts resolved at once

    # blocklist-divert run
    interval = 300           # resolve every 5 minutes
    health_url = "http://127.0.0.1:9451/healthz"   # the transparent proxy's health
    withdraw_after = 30      # seconds of ill health before the sets are emptied
    verify_interval = 10     # seconds between reading back (and repairing) the sets
    runtime_dir = "/run/blocklist-divert"   # run's lock (default: $RUNTIME_DIRECTORY)
    state_dir = "/var/lib/blocklist-proxy"  # run's copy of the last set it applied
                             # (default: $STATE_DIRECTORY, else $BLOCKLIST_DATA_DIR)
    nft_table = "blocklist"
    data_plane = "nft"       # what run keeps current: nft, bird or exabgp

    # BGP (bird, exabgp): routes to the proxy, NO_EXPORT plus the operator's community
    next_hop = ["198.51.100.1", "2001:db8::1"]     # the proxy: one address per family
    community = "64512:666"  # the core router accepts only /32 and /128 carrying it
    bird_dir = "/etc/bird/blocklist-divert"   # divert4.conf and divert6.conf, included
    bird_socket = "/run/bird/bird.ctl"        # birdc -s: BIRD's control socket

Every key has a safe default; unknown keys are an error (a typo must not silently leave a
gate at its default). Secrets are never values here: the key is in ``key_file``.
"""

from __future__ import annotations

import ipaddress
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from blocklist_addon.lists.hostkey import KEY_FILE_ENV
from blocklist_addon.ops.config import ConfigError, read_toml

__all__ = [
    "CONFIG_ENV",
    "DATA_PLANES",
    "DEFAULT_CONFIG",
    "KEY_FILE_ENV",
    "ConfigError",
    "DivertConfig",
    "load_config",
    "parse_community",
    "parse_resolver",
]

DEFAULT_CONFIG = Path("/etc/blocklist-proxy/divert.toml")
CONFIG_ENV = "BLOCKLIST_DIVERT_CONFIG"
#: Shared with blocklist-sync, which stores the hostnames with the same key.
_PATHS = {"key_file", "protect_file", "bird_dir", "bird_socket", "runtime_dir", "state_dir"}
_ADDRESS_LISTS = {"resolvers", "protect", "next_hop", "nat64_prefixes"}
#: What ``run`` keeps current (``divert.planes``).
DATA_PLANES = ("nft", "bird", "exabgp")


@dataclass(frozen=True)
class DivertConfig:
    store: str | None = None
    key_file: Path | None = None
    resolvers: tuple[str, ...] = ()
    protect: tuple[str, ...] = ()
    protect_file: Path | None = None
    nat64_prefixes: tuple[str, ...] = ()
    max_per_host: int = 16
    max_total: int = 50_000
    max_growth: float = 2.0
    growth_allowance: int = 32
    max_failed: float = 0.5
    max_vanished: float = 0.5
    vanished_allowance: int = 8
    grace: float = 6 * 3600.0
    timeout: float = 3.0
    deadline: float = 120.0
    concurrency: int = 100
    keep_versions: int = 5
    lock_wait: float = 0.0
    interval: float = 300.0
    health_url: str = "http://127.0.0.1:9451/healthz"
    withdraw_after: float = 30.0
    verify_interval: float = 10.0
    runtime_dir: Path | None = None
    state_dir: Path | None = None
    nft_table: str = "blocklist"
    next_hop: tuple[str, ...] = ()
    data_plane: str = "nft"
    community: str | None = None
    bird_dir: Path = Path("/etc/bird/blocklist-divert")
    bird_socket: Path = Path("/run/bird/bird.ctl")

    def __post_init__(self) -> None:
        validate(self)


def load_config(path: Path) -> DivertConfig:
    """Read and check the TOML file; ConfigError (exit 2) names the file and the key."""
    raw = read_toml(path)
    return from_mapping(raw, base=path.parent, where=f"config {path}")


def from_mapping(
    raw: dict[str, Any], *, base: Path | None = None, where: str = "config"
) -> DivertConfig:
    """A config from TOML-like values: relative paths are relative to ``base``."""
    known = {f.name: f for f in fields(DivertConfig)}
    unknown = set(raw) - set(known)
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for name, value in raw.items():
        if name in _PATHS:
            if not isinstance(value, str | os.PathLike):
                raise ConfigError(f"{where}: {name} must be a path")
            path = Path(os.path.expanduser(str(value)))
            values[name] = path if path.is_absolute() or base is None else base / path
        elif name in _ADDRESS_LISTS:
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where}: {name} must be a list of strings")
            values[name] = tuple(value)
        else:
            values[name] = value
    try:
        return DivertConfig(**values)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from None


def validate(config: DivertConfig) -> None:
    """Refuse values that would disable a gate by accident (a negative cap, a zero deadline)."""
    for name in ("max_per_host", "max_total", "concurrency", "keep_versions"):
        value = getattr(config, name)
        if type(value) is not int or value < 1:
            raise ConfigError(f"{name} must be a whole number of at least 1, not {value!r}")
    for name in ("growth_allowance", "vanished_allowance"):
        value = getattr(config, name)
        if type(value) is not int or value < 0:
            raise ConfigError(f"{name} must be a whole number >= 0, not {value!r}")
    positive = ("timeout", "deadline", "interval", "withdraw_after", "verify_interval")
    for name in (*positive, "max_growth", "grace", "lock_wait", "max_failed", "max_vanished"):
        value = getattr(config, name)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ConfigError(f"{name} must be a number, not {value!r}")
        if value < 0 or (name in positive and value == 0):
            raise ConfigError(
                f"{name} must be {'> 0' if name in positive else '>= 0'}, not {value!r}"
            )
    if config.max_growth < 1:
        raise ConfigError(
            f"max_growth is a ratio of at least 1 (2.0: may double), not {config.max_growth!r}"
        )
    for name in ("max_failed", "max_vanished"):
        if getattr(config, name) > 1:
            raise ConfigError(
                f"{name} is a fraction between 0 and 1, not {getattr(config, name)!r}"
            )
    if not config.nft_table or not config.nft_table.replace("_", "a").replace("-", "a").isalnum():
        raise ConfigError(f"nft_table {config.nft_table!r}: use letters, digits, '_' and '-'")
    for resolver in config.resolvers:
        parse_resolver(resolver)
    for prefix in config.protect:
        _no_scope("protect", prefix)
        try:
            ipaddress.ip_network(prefix, strict=False)
        except ValueError:
            raise ConfigError(f"protect: {prefix!r} is not an address or prefix") from None
    for prefix in config.nat64_prefixes:
        _no_scope("nat64_prefixes", prefix)
        try:
            network = ipaddress.IPv6Network(prefix)
        except ValueError:
            network = None
        if network is None or network.prefixlen not in (32, 40, 48, 56, 64, 96):
            raise ConfigError(
                f"nat64_prefixes: {prefix!r} is not an IPv6 prefix of length 32, 40, 48, 56, "
                "64 or 96 (RFC 6052)"
            )
    families = []
    for hop in config.next_hop:
        _no_scope("next_hop", hop)
        try:
            families.append(ipaddress.ip_address(hop).version)
        except ValueError:
            raise ConfigError(f"next_hop: {hop!r} is not an IP address") from None
    if len(families) != len(set(families)):
        raise ConfigError("next_hop: at most one IPv4 and one IPv6 address")
    if config.data_plane not in DATA_PLANES:
        raise ConfigError(f"data_plane {config.data_plane!r}: one of {', '.join(DATA_PLANES)}")
    if config.community is not None:
        parse_community(config.community)


def _no_scope(name: str, text: str) -> None:
    """Python accepts ``fe80::1%<anything>``, newlines included, and these values go
    verbatim into BIRD include files and ExaBGP command lines: no scope ids (a link-local
    next hop is not one a router can use for iBGP routes anyway)."""
    if "%" in text:
        raise ConfigError(
            f"{name}: {text!r}: scope ids (%...) are not accepted: give a global address"
        )


def parse_community(text: str) -> tuple[int, int]:
    """``"64512:666"`` as (64512, 666): a standard BGP community, each half 0-65535. The
    well-known ones (65535:x, such as BLACKHOLE 65535:666) are refused: the routes already
    carry NO_EXPORT, and a BLACKHOLE would make routers drop the traffic."""
    asn, colon, value = str(text).strip().partition(":")
    if not (colon and asn.isdigit() and value.isdigit()):
        raise ConfigError(f"community {text!r}: write it as ASN:VALUE, e.g. 64512:666")
    pair = int(asn), int(value)
    if not all(0 <= n <= 0xFFFF for n in pair):
        raise ConfigError(f"community {text!r}: each half is 0-65535")
    if pair[0] in (0, 0xFFFF):
        raise ConfigError(
            f"community {text!r} is reserved or well-known: choose one of your own AS "
            "(e.g. 64512:666 in a private AS)"
        )
    return pair


def parse_resolver(text: str) -> tuple[str, int]:
    """``"192.0.2.53"``, ``"192.0.2.53:5353"``, ``"2001:db8::53"`` or ``"[2001:db8::53]:53"``
    as (address, port). Resolvers are addresses: resolving a resolver's name would need one."""
    _no_scope("resolver", text)
    host, port = text.strip(), 53
    if host.startswith("["):
        inside, bracket, rest = host[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ConfigError(f"resolver {text!r}: use ADDRESS, ADDRESS:PORT or [IPv6]:PORT")
        host, port_text = inside, rest[1:]
        if rest:
            port = _port(port_text, text)
    elif host.count(":") == 1:
        host, port_text = host.split(":")
        port = _port(port_text, text)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(
            f"resolver {text!r} is not an IP address (optionally with :PORT)"
        ) from None
    return address.compressed, port


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ConfigError(f"resolver {whole!r}: port must be 1-65535")
    return int(text)
