"""The data planes ``blocklist-divert run`` keeps current: one interface, three kinds.

``run`` decides *what* should be diverted (the store's active set, or nothing while the
proxy is ill); a data plane only makes the network hold it:

- ``nft``: the sets of ``deploy/nftables-divert.nft`` on this gateway (``divert.nft``);
- ``bird``: static routes in BIRD's include files, then ``birdc configure`` (``divert.bird``);
- ``exabgp``: announce/withdraw commands to the ExaBGP that started ``run`` (``divert.exabgp``).

``apply(dset)`` makes the plane hold exactly ``dset`` (``DiversionSet.EMPTY``: withdraw
everything), raising DivertError with one line when it could not (the plane then holds what
it held). ``read()`` says what the plane holds now, so that ``run`` can repair what was
changed behind its back (a reloaded ruleset, a deleted table, edited include files) and
report what is really diverted; None when it cannot know (ExaBGP before the first apply).
Both are called from a worker thread. ``lock`` names the plane for ``run``'s one-per-plane
lock (``divert.runlock``); None: no lock (ExaBGP runs its own ``run``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TextIO

from blocklist_addon.ops.config import ConfigError
from divert import DivertError
from divert.config import DivertConfig
from divert.dataset import DiversionSet
from divert.planes.bird import BirdPlane
from divert.planes.exabgp import ExaBgpPlane
from divert.planes.export import next_hops
from divert.planes.nft import apply as nft_apply
from divert.planes.nft import read as nft_read

__all__ = ["DataPlane", "NftPlane", "make_plane"]


class DataPlane(Protocol):
    name: str

    @property
    def what(self) -> str:
        """What holds the set, for log lines ("the nft sets", "the BGP routes (BIRD)")."""
        ...

    @property
    def lock(self) -> str | None:
        """The lock file's name for this plane, or None."""
        ...

    def apply(self, dset: DiversionSet) -> None: ...

    def read(self) -> DiversionSet | None: ...


@dataclass
class NftPlane:
    table: str = "blocklist"
    nft: str | Sequence[str] = "nft"
    name: str = "nft"

    @property
    def what(self) -> str:
        return f"the nft sets (inet {self.table})"

    @property
    def lock(self) -> str:
        # The sets live in this network namespace: a run in another one is another plane.
        return f"nft-{self.table}-net{os.stat('/proc/self/ns/net').st_ino}"

    def apply(self, dset: DiversionSet) -> None:
        nft_apply(dset, table=self.table, nft=self.nft)

    def read(self) -> DiversionSet:
        return nft_read(table=self.table, nft=self.nft)


def make_plane(
    config: DivertConfig,
    *,
    kind: str | None = None,
    nft: str | Sequence[str] = "nft",
    birdc: str | Sequence[str] = "birdc",
    out: TextIO | None = None,
) -> DataPlane:
    """The plane ``kind`` (default: ``data_plane`` in the config) configured from ``config``.
    ConfigError (exit 2) when a BGP plane lacks its next hop or community."""
    kind = kind or config.data_plane
    if kind == "nft":
        return NftPlane(config.nft_table, nft)
    if kind not in ("bird", "exabgp"):
        raise ConfigError(f"unknown data plane {kind!r} (nft, bird or exabgp)")
    try:
        hops = next_hops(config.next_hop)
    except DivertError as exc:
        raise ConfigError(str(exc)) from None
    if not hops:
        raise ConfigError(
            f"{kind}: set next_hop in the config (the proxy's address, one per family)"
        )
    if config.community is None:
        raise ConfigError(
            f"{kind}: set community in the config (ASN:VALUE, e.g. 64512:666): the core "
            "router should accept only diversion routes that carry it"
        )
    if kind == "bird":
        return BirdPlane(config.bird_dir, config.bird_socket, hops, config.community, birdc)
    if out is None:
        raise ConfigError("exabgp: the plane writes to ExaBGP's pipe (run under ExaBGP)")
    return ExaBgpPlane(out, hops, config.community)
