"""Prefixes that are never diverted, whatever a listed host's DNS says.

Cleanfeed's attack (Clayton, PET 2005): a listed site points its DNS at someone else's
address, and the diversion sends that party's traffic through the proxy (or makes the
proxy an outage). The built-in prefixes cover what can never be a listed web server
reachable from the Internet and would break the network if diverted: loopback, RFC 1918,
CGNAT, link-local, multicast, unspecified and reserved space, and their IPv6 equivalents.
The operator adds their own (their resolvers, their customers' ranges, large CDNs they
choose) inline (``protect``) or in a file (``protect_file``, ``--protect-file``).

The documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32)
are deliberately not built in: no Internet host lives there, so diverting them harms no
one, and they are the addresses tests and examples use.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from pathlib import Path

from divert.config import ConfigError

__all__ = ["BUILTIN", "Protected", "load_file"]

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


class Protected:
    """A set of prefixes; ``match`` is a handful of set lookups (one per prefix length)."""

    def __init__(self, prefixes: Iterable[str | Network] = BUILTIN) -> None:
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
    def from_sources(cls, inline: Iterable[str] = (), files: Iterable[Path] = ()) -> Protected:
        """The built-in prefixes plus the operator's."""
        extra: list[str | Network] = list(inline)
        for path in files:
            extra += load_file(path)
        return cls([*BUILTIN, *extra])

    def match(self, address: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> Network | None:
        """The protected prefix holding ``address``, or None."""
        addr = ipaddress.ip_address(address)
        value = int(addr)
        for (version, bits), networks in self._by_length.items():
            if version == addr.version and value >> bits in networks:
                return ipaddress.ip_network((value >> bits << bits, addr.max_prefixlen - bits))
        return None

    def __len__(self) -> int:
        return len(self.prefixes)


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
