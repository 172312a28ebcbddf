"""The diversion set as an ExaBGP API process: ``blocklist-divert run --data-plane exabgp``.

ExaBGP starts ``run`` itself (the ``process`` stanza of ``deploy/exabgp.conf``) and reads
its standard output as API commands; it writes its answers and events to ``run``'s
standard input. So here:

- stdout carries commands only (logs go to stderr, which ExaBGP passes to its own log):
  ``announce attributes next-hop H community [no-export ASN:V] nlri P1 P2 ...``, grouped by
  family, :data:`CHUNK` prefixes a line, and the matching ``withdraw attributes`` lines;
- after the first apply only the difference is written: what left the set is withdrawn,
  what joined it is announced;
- the first apply of a process starts with ``clear adj-rib out``: ExaBGP keeps routes
  announced by a previous process (one that crashed and was respawned), which this one
  cannot know; clearing them first leaves exactly the set;
- stdin is read all the time (ExaBGP's writes to a helper that does not read its answers
  back up and stall it):
  ``error`` answers are logged, a neighbor coming ``up`` gets the whole current set again
  (ExaBGP normally re-sends its RIB after a session flap by itself; this makes sure), and
  ExaBGP's shutdown notice or the end of stdin (ExaBGP is gone) stops ``run``. Nothing else
  stops it: a store or health failure is logged and waited out, because a helper that
  exits is respawned by ExaBGP without the set, and ExaBGP gives up after a few respawns.

A new ExaBGP (a restart) starts a new ``run``, which announces the whole set once the proxy
answers healthy.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TextIO

from divert import DivertError
from divert.dataset import DiversionSet
from divert.export import communities, exabgp_communities, routes

__all__ = ["CHUNK", "ApiEvent", "ExaBgpPlane", "parse_api_line", "read_api"]

log = logging.getLogger("blocklist-divert")

#: Prefixes per ``announce attributes ... nlri`` line.
CHUNK = 200


@dataclass(frozen=True)
class ApiEvent:
    """One line from ExaBGP: ``kind`` is done, error, up, down, shutdown or other."""

    kind: str
    peer: str = ""
    detail: str = ""


def parse_api_line(line: str) -> ApiEvent:
    """What one line of ExaBGP's output to a helper (JSON encoder, acks on) means to us."""
    text = line.strip()
    if text in ("done", "error", "shutdown"):
        return ApiEvent(text)
    if not text.startswith("{"):
        return ApiEvent("other", detail=text[:200])
    try:
        doc = json.loads(text)
    except ValueError:
        return ApiEvent("other", detail=text[:200])
    if not isinstance(doc, dict):
        return ApiEvent("other")
    if doc.get("type") == "notification" and doc.get("notification") == "shutdown":
        return ApiEvent("shutdown")
    neighbor = doc.get("neighbor")
    if doc.get("type") == "state" and isinstance(neighbor, dict):
        address = neighbor.get("address")
        peer = str(address.get("peer", "")) if isinstance(address, dict) else ""
        state = str(neighbor.get("state", ""))
        if state in ("up", "down"):
            return ApiEvent(state, peer, str(neighbor.get("reason", ""))[:200])
        return ApiEvent("other", peer, state)
    return ApiEvent("other", detail=str(doc.get("type", "")))


Route = tuple[str, int]  # (prefix, family)


def commands(
    action: str, prefixes: Iterable[Route], hops: dict[int, str], tags: str
) -> Iterator[str]:
    """``announce``/``withdraw attributes ... nlri ...`` lines for ``prefixes``."""
    by_family: dict[int, list[str]] = {4: [], 6: []}
    for prefix, family in prefixes:
        by_family[family].append(prefix)
    for family, listed in by_family.items():
        for start in range(0, len(listed), CHUNK):
            nlri = " ".join(listed[start : start + CHUNK])
            attributes = f"next-hop {hops[family]}"
            if action == "announce":
                attributes += f" community {tags}"
            yield f"{action} attributes {attributes} nlri {nlri}\n"


@dataclass
class ExaBgpPlane:
    """``run``'s data plane for ExaBGP: commands on ``out`` (the process's stdout)."""

    out: TextIO
    next_hop: dict[int, str]
    community: str | None = None
    name: str = "exabgp"
    announced: dict[str, int] | None = None  # prefix -> family; None: not known yet
    lines_written: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.tags = exabgp_communities(communities(self.community))

    @property
    def what(self) -> str:
        return "the BGP routes (ExaBGP)"

    def apply(self, dset: DiversionSet) -> None:
        """Announce what joined, withdraw what left (everything of a predecessor first)."""
        target = dict(routes(dset))
        for family in set(target.values()):
            if family not in self.next_hop:
                raise DivertError(f"exabgp: no IPv{family} next hop: set next_hop in the config")
        with self._lock:
            lines: list[str] = []
            if self.announced is None:
                lines.append("clear adj-rib out\n")
                gone: dict[str, int] = {}
                new = target
            else:
                gone = {p: f for p, f in self.announced.items() if p not in target}
                new = {p: f for p, f in target.items() if p not in self.announced}
            lines += commands("withdraw", gone.items(), self.next_hop, self.tags)
            lines += commands("announce", new.items(), self.next_hop, self.tags)
            self._write(lines)
            self.announced = target

    @property
    def lock(self) -> None:
        return None  # ExaBGP starts its own run; another ExaBGP is another speaker

    def read(self) -> DiversionSet | None:
        """What this process has announced (ExaBGP's RIB is changed only by its commands,
        and a restarted ExaBGP starts a new run); None before the first apply."""
        with self._lock:
            if self.announced is None:
                return None
            return DiversionSet(
                tuple(p.split("/")[0] for p, f in self.announced.items() if f == 4),
                tuple(p.split("/")[0] for p, f in self.announced.items() if f == 6),
            )

    def resend(self) -> None:
        """The whole current set again (a neighbor came up)."""
        with self._lock:
            if self.announced:
                self._write(
                    list(commands("announce", self.announced.items(), self.next_hop, self.tags))
                )

    def _write(self, lines: list[str]) -> None:
        if not lines:
            return
        try:
            self.out.write("".join(lines))
            self.out.flush()
        except (BrokenPipeError, ValueError, OSError) as exc:
            raise DivertError(f"exabgp: cannot write to ExaBGP ({exc})") from None
        self.lines_written += len(lines)


def read_api(stream: TextIO, plane: ExaBgpPlane, stopped: Callable[[str], None]) -> None:
    """Read ExaBGP's answers and events until it shuts down (in a thread of its own)."""
    try:
        for line in stream:
            event = parse_api_line(line)
            if event.kind == "error":
                log.error("ExaBGP refused a command (its log says which)")
            elif event.kind == "up":
                log.info("BGP session with %s up: announcing the whole set", event.peer)
                try:
                    plane.resend()
                except DivertError as exc:
                    log.error("%s", exc)
            elif event.kind == "down":
                log.warning(
                    "BGP session with %s down (%s): ExaBGP keeps the routes and sends them "
                    "when it is back",
                    event.peer,
                    event.detail or "no reason given",
                )
            elif event.kind == "shutdown":
                stopped("ExaBGP is shutting down")
                return
    except (OSError, ValueError) as exc:
        stopped(f"cannot read from ExaBGP ({exc})")
        return
    stopped("ExaBGP closed the API pipe")
