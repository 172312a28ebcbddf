"""The diversion set into nftables: sets ``divert4``/``divert6`` of table ``inet blocklist``
(``deploy/nftables-divert.nft`` creates them).

One ``nft -f`` script flushes both sets and refills them, and nft applies a script as one
transaction: a packet sees the old set or the new one, never an empty or half-filled set
(measured: as two commands, 7,810 of 8,607 requests to a listed address leaked past the
proxy during updates; as one transaction, none). Emptying the sets (``apply(EMPTY)``) is
how ``run`` withdraws diversion when the proxy is unhealthy.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence

from divert import DivertError
from divert.dataset import DiversionSet
from divert.planes.tools import run_tool

__all__ = ["CHUNK", "SETS", "apply", "read", "render"]

SETS = ("divert4", "divert6")
#: Elements per ``add element`` statement: keeps lines reasonable at 100,000 addresses
#: (one statement of 100,000 is no faster).
CHUNK = 8192
#: How long nft may take: replacing 100,000 addresses takes about half a second.
TIMEOUT = 60.0
_TABLE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
_MISSING = ("No such file or directory", "does not exist")


def render(dset: DiversionSet, *, table: str = "blocklist") -> str:
    """The ``nft -f`` script that makes the sets hold exactly ``dset``'s addresses."""
    return "".join(_lines(dset, _check_table(table)))


def _lines(dset: DiversionSet, table: str) -> Iterator[str]:
    for name in SETS:
        yield f"flush set inet {table} {name}\n"
    for name, addresses in zip(SETS, (dset.ipv4, dset.ipv6), strict=True):
        for start in range(0, len(addresses), CHUNK):
            elements = ", ".join(addresses[start : start + CHUNK])
            yield f"add element inet {table} {name} {{ {elements} }}\n"


def apply(
    dset: DiversionSet, *, table: str = "blocklist", nft: str | Sequence[str] = "nft"
) -> None:
    """Replace the sets' contents with ``dset`` in one transaction.

    ``nft`` is the command (a list such as ``["ip", "netns", "exec", NS, "nft"]`` runs it
    elsewhere). DivertError, one line, when nft is missing, not permitted, or the table
    has not been loaded; the sets are then unchanged (nft applies all or nothing).
    """
    _nft(nft, ["-f", "-"], render(dset, table=table), table)


def read(*, table: str = "blocklist", nft: str | Sequence[str] = "nft") -> DiversionSet:
    """What the kernel's sets hold now (``run`` compares it with what it applied: a ruleset
    reloaded or a table deleted behind its back empties them). DivertError as for apply."""
    listing = _nft(nft, ["-j", "list", "table", "inet", _check_table(table)], None, table)
    try:
        found = {
            item["set"]["name"]: item["set"].get("elem", [])
            for item in json.loads(listing)["nftables"]
            if "set" in item
        }
        elements = [found[name] for name in SETS]
    except (ValueError, KeyError, TypeError):
        raise DivertError(_missing(table)) from None
    try:
        return DiversionSet(*(tuple(_element(e) for e in listed) for listed in elements))
    except (DivertError, ValueError, TypeError) as exc:
        raise DivertError(f"nft: unexpected elements in inet {table}: {exc}") from None


def _element(elem: object) -> str:
    """One set element as nft -j lists it: an address, or an object around one (a set
    with counters or timeouts, made by hand)."""
    if isinstance(elem, dict) and "elem" in elem:
        elem = elem["elem"].get("val") if isinstance(elem["elem"], dict) else elem["elem"]
    if not isinstance(elem, str):
        raise DivertError(f"not a single address: {str(elem)[:80]}")
    return elem


def _nft(nft: str | Sequence[str], args: list[str], script: str | None, table: str) -> str:
    """Run nft; its stdout, or DivertError with one line."""
    done = run_tool(
        nft,
        args,
        script=script,
        timeout=TIMEOUT,
        install="install nftables (Debian: nftables)",
        slow=f"nft did not finish within {TIMEOUT:.0f} s; the sets are unchanged",
    )
    if done.returncode == 0:
        return done.stdout
    error = done.stderr.strip()
    if any(m in error for m in _MISSING):
        raise DivertError(_missing(table))
    if "Operation not permitted" in error:
        raise DivertError("nft: operation not permitted (run as root or with CAP_NET_ADMIN)")
    first = error.splitlines()[0] if error else f"exit status {done.returncode}"
    raise DivertError(f"nft failed: {first}; the sets are unchanged")


def _missing(table: str) -> str:
    return (
        f"nft: table inet {table} with sets {' and '.join(SETS)} is missing: load "
        "deploy/nftables-divert.nft first (nft -D SUBSCRIBERS=<interface> -f "
        "deploy/nftables-divert.nft)"
    )


def _check_table(table: str) -> str:
    if not _TABLE.fullmatch(table):
        raise DivertError(f"invalid nft table name {table!r}")
    return table
