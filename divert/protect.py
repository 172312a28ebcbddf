"""Prefixes that are never diverted, whatever a listed host's DNS says.

Cleanfeed's attack (Clayton, PET 2005): a listed site points its DNS at someone else's
address, and the diversion sends that party's traffic through the proxy (or makes the
proxy an outage). The built-in prefixes cover what can never be a listed web server
reachable from the Internet and would break the network if diverted: loopback, RFC 1918,
CGNAT, link-local, multicast, unspecified and reserved space, and their IPv6 equivalents.
The operator adds their own (their resolvers, their customers' ranges, large CDNs they
choose) inline (``protect``) or in a file (``protect_file``, ``--protect-file``).

IPv4 embedded in IPv6 is protected like the IPv4 address it leads to: a listed host
answering ``AAAA 64:ff9b::<protected IPv4>`` would otherwise divert that IPv4 address for
every IPv6-only subscriber behind NAT64. The translation prefixes are NAT64's well-known
``64:ff9b::/96`` (RFC 6052), its local-use ``64:ff9b:1::/48`` (RFC 8215, any of RFC 6052's
formats inside it), 6to4's ``2002::/16`` (RFC 3056), Teredo's ``2001::/32`` (RFC 4380: the
client's address, stored inverted, and the server's), and the operator's own NAT64 prefixes
(``nat64_prefixes``, each of an RFC 6052 length). The config's own addresses (the next
hops, the resolvers, the health URL's host: an address, or a name resolved once per process
through the system's resolver) are protected without being listed (``Protected.for_config``).

The documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32)
are deliberately not built in: no Internet host lives there, so diverting them harms no
one, and they are the addresses tests and examples use.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

from divert.config import ConfigError, DivertConfig, parse_resolver

__all__ = ["BUILTIN", "Protected", "embedded_ipv4", "load_file", "own_addresses"]

log = logging.getLogger("blocklist-divert")

type Network = ipaddress.IPv4Network | ipaddress.IPv6Network

BUILTIN: tuple[str, ...] = (
    "0.0.0.0/8",  # "this network", with the unspecified address
    "10.0.0.0/8",  # RFC 1918
    "100.64.0.0/10",  # CGNAT (RFC 6598)
    "127.0.0.0/8",  # loopback
    "169.254.0.0/16",  # link-local
    "172.16.0.0/12",  # RFC 1918
    "192.168.0.0/16",  # RFC 1918
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved, with the limited broadcast address
    "::/128",  # unspecified
    "::1/128",  # loopback
    "::ffff:0:0/96",  # IPv4-mapped: the IPv4 address is what would be reached
    "fc00::/7",  # unique local
    "fe80::/10",  # link-local
    "fec0::/10",  # site-local (deprecated)
    "ff00::/8",  # multicast
)


_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_6TO4 = ipaddress.ip_network("2002::/16")
_TEREDO = ipaddress.ip_network("2001::/32")
#: RFC 6052's prefix lengths: where the IPv4 address starts (bits 64-71 are always skipped).
_RFC6052 = (32, 40, 48, 56, 64, 96)


def embedded_ipv4(
    address: ipaddress.IPv6Address, nat64: Iterable[ipaddress.IPv6Network] = ()
) -> Iterator[ipaddress.IPv4Address]:
    """The IPv4 addresses a packet to ``address`` may reach through a translator (``nat64``:
    the operator's own NAT64 prefixes, each of an RFC 6052 length)."""
    value = int(address)
    for prefix in nat64:
        if address in prefix:
            length = prefix.prefixlen
            yield ipaddress.IPv4Address(
                value & 0xFFFFFFFF if length == 96 else _rfc6052(value, length)
            )
    if address in _TEREDO and address.teredo is not None:
        yield from address.teredo[::-1]  # the client (the inverted bits), then the server
    if address in _NAT64:
        yield ipaddress.IPv4Address(value & 0xFFFFFFFF)
    elif address in _NAT64_LOCAL:  # the operator's prefix length is unknown: every format
        for length in _RFC6052:
            inner = _rfc6052(value, length) if length >= 48 else 0
            suffix = value & ((1 << max(0, 128 - length - 40)) - 1) if length < 96 else 0
            # A format whose suffix is not zero is not the one in use; 0.0.0.0/8 is what a
            # wrong format's zero padding reads as, never a translated destination.
            if inner >> 24 and not suffix:
                yield ipaddress.IPv4Address(inner)
    elif address in _6TO4:
        yield ipaddress.IPv4Address((value >> 80) & 0xFFFFFFFF)


def _rfc6052(value: int, length: int) -> int:
    """The 32 bits after the first ``length`` bits, skipping bits 64-71 (the "u" octet)."""
    bits = [(value >> (127 - i)) & 1 for i in range(length, 128) if not 64 <= i < 72]
    return int("".join(map(str, bits[:32])), 2)


class Protected:
    """A set of prefixes; ``match`` is a handful of set lookups (one per prefix length)."""

    def __init__(
        self, prefixes: Iterable[str | Network] = BUILTIN, nat64: Iterable[str] = ()
    ) -> None:
        self.nat64 = tuple(ipaddress.IPv6Network(p) for p in nat64)
        self.prefixes: tuple[Network, ...] = tuple(
            sorted(
                {ipaddress.ip_network(p, strict=False) for p in prefixes},
                key=lambda n: (n.version, n.network_address, n.prefixlen),
            )
        )
        self._by_length: dict[tuple[int, int], set[int]] = {}
        for net in self.prefixes:
            bits = net.max_prefixlen - net.prefixlen
            self._by_length.setdefault((net.version, bits), set()).add(
                int(net.network_address) >> bits
            )

    @classmethod
    def from_sources(
        cls, inline: Iterable[str] = (), files: Iterable[Path] = (), nat64: Iterable[str] = ()
    ) -> Protected:
        """The built-in prefixes plus the operator's."""
        extra: list[str | Network] = list(inline)
        for path in files:
            extra += load_file(path)
        return cls([*BUILTIN, *extra], nat64)

    @classmethod
    def for_config(cls, config: DivertConfig) -> Protected:
        """The built-in prefixes, the operator's, and the config's own addresses."""
        files = [config.protect_file] if config.protect_file else []
        return cls.from_sources(
            [*config.protect, *own_addresses(config)], files, config.nat64_prefixes
        )

    def match(self, address: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> Network | None:
        """The protected prefix holding ``address`` (or the IPv4 address embedded in it),
        or None."""
        addr = ipaddress.ip_address(address)
        found = self._match(addr)
        if found is None and isinstance(addr, ipaddress.IPv6Address):
            for inner in embedded_ipv4(addr, self.nat64):
                if (found := self._match(inner)) is not None:
                    break
        return found

    def _match(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Network | None:
        value = int(addr)
        for (version, bits), networks in self._by_length.items():
            if version == addr.version and value >> bits in networks:
                return ipaddress.ip_network((value >> bits << bits, addr.max_prefixlen - bits))
        return None

    def __len__(self) -> int:
        return len(self.prefixes)


def own_addresses(config: DivertConfig) -> list[str]:
    """The gateway's own infrastructure named in the config: never diverted."""
    own = [*config.next_hop, *(parse_resolver(r)[0] for r in config.resolvers)]
    host = urlsplit(config.health_url).hostname or ""
    try:
        own.append(str(ipaddress.ip_address(host)))
    except ValueError:
        own += _resolved(host)
    return own


@functools.cache
def _resolved(host: str) -> tuple[str, ...]:
    """The health URL's host name, resolved once per process by the system's resolver (the
    proxy's own name: never one a listed host's DNS answers); nothing when it fails."""
    try:
        answers = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as exc:
        log.warning("cannot resolve the health URL's host %r to protect it: %s", host, exc)
        return ()
    return tuple(dict.fromkeys(str(info[4][0]).split("%")[0] for info in answers))


def load_file(path: Path) -> list[Network]:
    """One address or prefix a line; ``#`` starts a comment. ConfigError names the line."""
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read protect file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"protect file {path} is not UTF-8 text") from None
    networks = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            networks.append(ipaddress.ip_network(line, strict=False))
        except ValueError:
            raise ConfigError(
                f"protect file {path} line {number}: not an address or prefix"
            ) from None
    return networks
