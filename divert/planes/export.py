"""The diversion set for each data plane (pure renderers; ``nft`` also applies its own).

- ``nft``: the one-transaction script of ``divert.nft.render`` (flush and refill
  ``divert4``/``divert6`` of ``inet blocklist``).
- ``json``: ``{"version": N, "ipv4": [...], "ipv6": [...]}`` for anything else.
- ``bird``: static routes for BIRD 2, one family per file (a static protocol has one
  channel), to ``include`` inside ``protocol static { ipv4; include "..."; }``::

      route 192.0.2.10/32 via 198.51.100.1 { bgp_community.add((65535, 65281)); };

- ``exabgp``: ExaBGP's text API, one ``announce`` line per address::

      announce route 192.0.2.10/32 next-hop 198.51.100.1 community [no-export]

Routes go to the proxy (``next_hop``, one address per family) and carry NO_EXPORT
(65535:65281), so they never leave the ISP's own network, plus the operator's
``community`` when one is given (the core router accepts only routes carrying it)::

      route 192.0.2.10/32 via 198.51.100.1 { bgp_community.add((65535, 65281));
          bgp_community.add((64512, 666)); };   (one line)
      announce route 192.0.2.10/32 next-hop 198.51.100.1 community [no-export 64512:666]

``blocklist-divert run`` keeps BIRD (``divert.bird``) and ExaBGP (``divert.exabgp``) current
with the same text.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Iterator

from blocklist_addon.ops.config import ConfigError
from divert import DivertError
from divert.config import parse_community
from divert.dataset import DiversionSet
from divert.planes.nft import render as render_nft

__all__ = ["FORMATS", "communities", "next_hops", "render", "routes"]

FORMATS = ("nft", "json", "bird", "exabgp")
NO_EXPORT = (65535, 65281)


def next_hops(addresses: Iterable[str]) -> dict[int, str]:
    """{4: IPv4 next hop, 6: IPv6 next hop} from up to one address per family."""
    hops: dict[int, str] = {}
    for text in addresses:
        if "%" in text:  # any text, newlines too, and it goes verbatim into BIRD and ExaBGP
            raise DivertError(f"next hop {text!r}: scope ids (%...) are not accepted")
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            raise DivertError(f"next hop {text!r} is not an IP address") from None
        if address.version in hops:
            raise DivertError(f"two IPv{address.version} next hops: give one per family")
        hops[address.version] = address.compressed
    return hops


def communities(community: str | None) -> tuple[tuple[int, int], ...]:
    """NO_EXPORT, then the operator's community when there is one."""
    if community is None:
        return (NO_EXPORT,)
    try:
        return NO_EXPORT, parse_community(community)
    except ConfigError as exc:
        raise DivertError(str(exc)) from None


def render(
    fmt: str,
    dset: DiversionSet,
    *,
    version: int | None = None,
    table: str = "blocklist",
    next_hop: dict[int, str] | None = None,
    family: int | None = None,
    community: str | None = None,
) -> str:
    """``dset`` as ``fmt`` (one of FORMATS). ``family`` (4 or 6) keeps one family only; bird
    needs it. DivertError for a missing next hop or family."""
    if family not in (None, 4, 6):
        raise DivertError("family is 4 or 6")
    if family is not None:
        dset = DiversionSet(
            ipv4=dset.ipv4 if family == 4 else (), ipv6=dset.ipv6 if family == 6 else ()
        )
    if fmt == "nft":
        return render_nft(dset, table=table)
    if fmt == "json":
        doc = {"version": version, "ipv4": list(dset.ipv4), "ipv6": list(dset.ipv6)}
        return json.dumps(doc, indent=1) + "\n"
    if fmt not in ("bird", "exabgp"):
        raise DivertError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")
    hops = next_hop or {}
    if fmt == "bird" and family is None:
        raise DivertError(
            "bird: give --family 4 or --family 6 (a static protocol has one channel: one "
            "include file per family)"
        )
    for v, addresses in ((4, dset.ipv4), (6, dset.ipv6)):
        if addresses and v not in hops:
            raise DivertError(f"{fmt}: no IPv{v} next hop: give --next-hop (the proxy's address)")
    tags = communities(community)
    lines = _bird(dset, hops, tags) if fmt == "bird" else _exabgp(dset, hops, tags)
    header = f"# blocklist-divert: diversion set version {version}, {len(dset):,} routes\n"
    return header + "".join(lines)


def routes(dset: DiversionSet) -> Iterator[tuple[str, int]]:
    """(prefix, family) for each address: a /32 or a /128."""
    for address in dset.ipv4:
        yield f"{address}/32", 4
    for address in dset.ipv6:
        yield f"{address}/128", 6


def bird_communities(tags: tuple[tuple[int, int], ...]) -> str:
    return " ".join(f"bgp_community.add(({a}, {b}));" for a, b in tags)


def exabgp_communities(tags: tuple[tuple[int, int], ...]) -> str:
    names = ["no-export" if tag == NO_EXPORT else f"{tag[0]}:{tag[1]}" for tag in tags]
    return f"[{' '.join(names)}]"


def _bird(
    dset: DiversionSet, hops: dict[int, str], tags: tuple[tuple[int, int], ...]
) -> Iterator[str]:
    attributes = bird_communities(tags)
    for prefix, v in routes(dset):
        yield f"route {prefix} via {hops[v]} {{ {attributes} }};\n"


def _exabgp(
    dset: DiversionSet, hops: dict[int, str], tags: tuple[tuple[int, int], ...]
) -> Iterator[str]:
    attributes = exabgp_communities(tags)
    for prefix, v in routes(dset):
        yield f"announce route {prefix} next-hop {hops[v]} community {attributes}\n"
