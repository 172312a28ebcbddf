"""The diversion set: which addresses a gateway or router sends through the proxy.

What ``blocklist-divert resolve`` publishes in the store namespace ``divert`` and every data
plane reads (nftables sets, BIRD static routes, ExaBGP announcements). It holds addresses
and opaque host digests (keyed, see ``hosts.host_digest``), never a hostname: the store,
the gateway and whoever reads the set learn which addresses are diverted, never which
listed host made them so.

Stored as JSON::

    {"format": "blocklist-divert-set", "version": 1, "created_at": 1767225600.0,
     "ipv4": ["192.0.2.10", ...], "ipv6": ["2001:db8::10", ...],
     "hosts": {"<16 hex digits>": ["192.0.2.10", "2001:db8::10"], ...},
     "checksum": "<sha256 hex>"}

Addresses are single addresses (a /32 or /128 each), in compressed text, unique and in
numeric order. The checksum covers the content (addresses and hosts) but not
``created_at``, so an unchanged resolution gives an unchanged checksum and is not
published again.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from divert import DivertError

__all__ = ["FORMAT", "FORMAT_VERSION", "DiversionSet", "normalize"]

FORMAT = "blocklist-divert-set"
FORMAT_VERSION = 1

type Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class DiversionSet:
    """An immutable diversion set. ``ipv4``/``ipv6`` are normalized on construction (any
    iterable of address strings is accepted); ``hosts`` maps a host digest to the addresses
    it contributed (IP-literal entries included), for status and the next run's grace."""

    ipv4: tuple[str, ...] = ()
    ipv6: tuple[str, ...] = ()
    hosts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    created_at: float = 0.0

    EMPTY: ClassVar[DiversionSet]

    def __post_init__(self) -> None:
        seen: dict[str, tuple[int, int, str]] = {}
        v4, wrong6 = normalize(self.ipv4, seen)
        wrong4, v6 = normalize(self.ipv6, seen)
        if wrong6 or wrong4:
            raise DivertError("an address is in the wrong family's list (ipv4/ipv6)")
        object.__setattr__(self, "ipv4", v4)
        object.__setattr__(self, "ipv6", v6)
        hosts = {}
        for digest, addresses in self.hosts.items():
            if not isinstance(digest, str) or not digest:
                raise DivertError("a host digest must be a non-empty string")
            parsed = {seen.get(a) or seen.setdefault(a, _parse(a)) for a in addresses}
            hosts[digest] = tuple(text for _, _, text in sorted(parsed))  # IPv4 first
        object.__setattr__(self, "hosts", dict(sorted(hosts.items())))

    @classmethod
    def build(
        cls, hosts: Mapping[str, Iterable[str]], *, created_at: float | None = None
    ) -> DiversionSet:
        """The set of every host's addresses."""
        everything = {a for addresses in hosts.values() for a in addresses}
        return cls(  # sorted into families by text here, checked and normalized there
            tuple(a for a in everything if ":" not in a),
            tuple(a for a in everything if ":" in a),
            {d: tuple(a) for d, a in hosts.items()},
            time.time() if created_at is None else created_at,
        )

    def __len__(self) -> int:
        """The number of addresses (what the store records as ``entries``)."""
        return len(self.ipv4) + len(self.ipv6)

    @property
    def addresses(self) -> frozenset[str]:
        return frozenset(self.ipv4) | frozenset(self.ipv6)

    def _content(self) -> dict[str, Any]:
        return {"ipv4": list(self.ipv4), "ipv6": list(self.ipv6), "hosts": dict(self.hosts)}

    @property
    def checksum(self) -> str:
        """Hex SHA-256 of the content (not ``created_at``)."""
        canonical = json.dumps(self._content(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def to_bytes(self) -> bytes:
        document = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "created_at": self.created_at,
            **self._content(),
            "checksum": self.checksum,
        }
        return json.dumps(document, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> DiversionSet:
        """Parse and verify stored bytes; DivertError when they are not an intact set."""
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise DivertError("diversion set is not JSON (corrupt or not a set)") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise DivertError("not a diversion set")
        if doc.get("version") != FORMAT_VERSION:
            raise DivertError(
                f"diversion set format version {doc.get('version')!r} is not one this "
                f"version reads ({FORMAT_VERSION}): upgrade blocklist-proxy"
            )
        try:
            hosts = doc["hosts"]
            if not isinstance(hosts, dict) or not all(isinstance(a, list) for a in hosts.values()):
                raise TypeError("hosts")
            dset = cls(
                tuple(doc["ipv4"]),
                tuple(doc["ipv6"]),
                {d: tuple(a) for d, a in hosts.items()},
                float(doc["created_at"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise DivertError(f"malformed diversion set: {e}") from None
        if (dset.ipv4, dset.ipv6) != (tuple(doc["ipv4"]), tuple(doc["ipv6"])):
            raise DivertError("malformed diversion set: addresses not normalized")
        if dset.checksum != doc.get("checksum"):
            raise DivertError("diversion set checksum mismatch (corrupt or truncated)")
        return dset


def normalize(
    addresses: Iterable[str], seen: dict[str, tuple[int, int, str]] | None = None
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(IPv4, IPv6) as unique compressed text in numeric order. DivertError for anything
    that is not a single address (a prefix, a name, an IPv6 zone). ``seen`` caches parsed
    text across calls (a set's hosts repeat its addresses: parsing is most of the cost)."""
    seen = {} if seen is None else seen
    v4: dict[int, str] = {}
    v6: dict[int, str] = {}
    for text in addresses:
        parsed = seen.get(text) if isinstance(text, str) else None
        if parsed is None:
            parsed = seen[text] = _parse(text)
        version, value, compressed = parsed
        (v4 if version == 4 else v6)[value] = compressed
    return tuple(v4[k] for k in sorted(v4)), tuple(v6[k] for k in sorted(v6))


def _parse(text: object) -> tuple[int, int, str]:
    """(version, value, compressed text). The C library parses and formats: ipaddress takes
    about 20 us per IPv6 address, which is seconds at 100,000; both give RFC 5952 text, but
    ipaddress writes IPv4-mapped and -compatible addresses in hex, so those go through it."""
    if not isinstance(text, str):
        raise DivertError(f"not an IP address: {str(text)[:60]!r}")
    family = socket.AF_INET6 if ":" in text else socket.AF_INET
    try:
        packed = socket.inet_pton(family, text)
    except (OSError, ValueError):
        return _parse_slowly(text)  # a zone, or not an address: say which
    value = int.from_bytes(packed)
    if family == socket.AF_INET:
        return 4, value, socket.inet_ntop(family, packed)
    if value >> 32 in (0, 0xFFFF):
        return 6, value, ipaddress.IPv6Address(value).compressed
    return 6, value, socket.inet_ntop(family, packed)


def _parse_slowly(text: str) -> tuple[int, int, str]:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise DivertError(f"not an IP address: {text[:60]!r}") from None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        raise DivertError(f"scoped IPv6 address cannot be diverted: {text!r}")
    return address.version, int(address), address.compressed


DiversionSet.EMPTY = DiversionSet()
