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
(65535:65281), so they never leave the ISP's own network.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Iterator

from divert import DivertError
from divert.dataset import DiversionSet
from divert.nft import render as render_nft

__all__ = ["FORMATS", "next_hops", "render"]

FORMATS = ("nft", "json", "bird", "exabgp")
NO_EXPORT = (65535, 65281)


def next_hops(addresses: Iterable[str]) -> dict[int, str]:
    """{4: IPv4 next hop, 6: IPv6 next hop} from up to one address per family."""
    hops: dict[int, str] = {}
    for text in addresses:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            raise DivertError(f"next hop {text!r} is not an IP address") from None
        if address.version in hops:
            raise DivertError(f"two IPv{address.version} next hops: give one per family")
        hops[address.version] = address.compressed
    return hops


def render(
    fmt: str,
    dset: DiversionSet,
    *,
    version: int | None = None,
    table: str = "blocklist",
    next_hop: dict[int, str] | None = None,
    family: int | None = None,
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
    lines = _bird(dset, hops) if fmt == "bird" else _exabgp(dset, hops)
    header = f"# blocklist-divert: diversion set version {version}, {len(dset):,} routes\n"
    return header + "".join(lines)


def _routes(dset: DiversionSet) -> Iterator[tuple[str, int]]:
    for address in dset.ipv4:
        yield f"{address}/32", 4
    for address in dset.ipv6:
        yield f"{address}/128", 6


def _bird(dset: DiversionSet, hops: dict[int, str]) -> Iterator[str]:
    community = f"({NO_EXPORT[0]}, {NO_EXPORT[1]})"
    for prefix, v in _routes(dset):
        yield f"route {prefix} via {hops[v]} {{ bgp_community.add({community}); }};\n"


def _exabgp(dset: DiversionSet, hops: dict[int, str]) -> Iterator[str]:
    for prefix, v in _routes(dset):
        yield f"announce route {prefix} next-hop {hops[v]} community [no-export]\n"
