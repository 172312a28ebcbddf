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

What ExaBGP holds is read back with ``show adj-rib out``: ExaBGP answers every command in
the order it was sent (its API callbacks run one after the other), each with ``done`` or
``error`` (``ack = true``, the default), and writes the RIB as ``neighbor PEER ipv4 unicast
PREFIX next-hop H`` lines before the ``done`` of the ``show``. So the answers are matched to
the commands in a queue, and the lines before the ``show``'s answer are its RIB. A RIB
changed behind run's back (``clear adj-rib out`` from exabgpcli or another process, routes
announced by someone else) reads as a difference, and the repair announces the whole set
again (ExaBGP sends nothing for a route it already holds with the same attributes) and
withdraws what no longer belongs. Without acks (``ack = false``) nothing can be read back:
the read says so, and the set is announced whole again at each read-back instead.
"""

from __future__ import annotations

import collections
import ipaddress
import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TextIO

from divert import DivertError
from divert.dataset import DiversionSet
from divert.planes.export import communities, exabgp_communities, routes

__all__ = ["CHUNK", "ApiEvent", "ExaBgpPlane", "parse_api_line", "read_api"]

log = logging.getLogger("blocklist-divert")

#: Prefixes per ``announce attributes ... nlri`` line.
CHUNK = 200
#: How long a read-back waits for ExaBGP's answer to ``show adj-rib out``.
SHOW_TIMEOUT = 10.0


@dataclass(frozen=True)
class ApiEvent:
    """One line from ExaBGP: ``kind`` is done, error, up, down, shutdown, rib (a route of
    ``show adj-rib out``: ``peer``, ``detail`` the prefix) or other."""

    kind: str
    peer: str = ""
    detail: str = ""


def parse_api_line(line: str) -> ApiEvent:
    """What one line of ExaBGP's output to a helper (JSON encoder, acks on) means to us."""
    text = line.strip()
    if text in ("done", "error", "shutdown"):
        return ApiEvent(text)
    words = text.split()
    if (
        len(words) >= 5
        and words[0] == "neighbor"
        and words[2:4] in (["ipv4", "unicast"], ["ipv6", "unicast"])
    ):
        return ApiEvent("rib", words[1], words[4])
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


class _Show:
    """One ``show adj-rib out`` waiting for its answer: the routes by peer."""

    def __init__(self) -> None:
        self.routes: dict[str, set[str]] = {}
        self.answered = threading.Event()
        self.ok = False


def _host_route(prefix: str) -> str | None:
    """``prefix`` as ``routes()`` writes it, when it is one address (a /32 or /128)."""
    try:
        network = ipaddress.ip_network(prefix)
    except ValueError:
        return None
    return f"{network.network_address}/{network.prefixlen}" if network.num_addresses == 1 else None


@dataclass
class ExaBgpPlane:
    """``run``'s data plane for ExaBGP: commands on ``out`` (the process's stdout)."""

    out: TextIO
    next_hop: dict[int, str]
    community: str | None = None
    name: str = "exabgp"
    announced: dict[str, int] | None = None  # prefix -> family; None: not known yet
    lines_written: int = 0
    peers: set[str] = field(default_factory=set)  # neighbors named in ExaBGP's events
    _drift: dict[str, int] | None = None  # what ExaBGP held when read differing, for repair
    _show: _Show | None = None  # the read-back waiting for its answer
    # What ExaBGP's next answers (done/error) answer: a count of commands, or a show.
    _answers: collections.deque[int | _Show] = field(default_factory=collections.deque)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _answer_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.tags = exabgp_communities(communities(self.community))

    @property
    def what(self) -> str:
        return "the BGP routes (ExaBGP)"

    def apply(self, dset: DiversionSet) -> None:
        """Announce what joined, withdraw what left (everything of a predecessor first;
        after a read-back found ExaBGP holding something else: the whole set, and withdraw
        what it held beyond it)."""
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
            elif self._drift is not None:
                gone = {p: f for p, f in self._drift.items() if p not in target}
                new = target
            else:
                gone = {p: f for p, f in self.announced.items() if p not in target}
                new = {p: f for p, f in target.items() if p not in self.announced}
            lines += commands("withdraw", gone.items(), self.next_hop, self.tags)
            lines += commands("announce", new.items(), self.next_hop, self.tags)
            self._write(lines)
            self.announced, self._drift = target, None

    @property
    def lock(self) -> None:
        return None  # ExaBGP starts its own run; another ExaBGP is another speaker

    def read(self) -> DiversionSet | None:
        """What ExaBGP's adj-rib-out holds (``show adj-rib out``); where its neighbors
        differ, the first that differs from what this process announced. None before the
        first apply: a predecessor's routes are not this process's to claim."""
        with self._lock:
            if self.announced is None:
                return None
            show = self._show
            if show is None:
                show = self._show = _Show()
                self._write(["show adj-rib out\n"], show)
            announced = set(self.announced)
        if not show.answered.wait(SHOW_TIMEOUT):
            with self._lock:
                self._drift = {}  # unknown: the whole set again at the repair
            raise DivertError(
                f"exabgp: no answer to show adj-rib out within {SHOW_TIMEOUT:.0f} s "
                "(ack = true in exabgp.env?): announcing the whole set again instead"
            )
        with self._lock:
            if self._show is show:
                self._show = None
            if not show.ok:
                raise DivertError("exabgp: ExaBGP refused show adj-rib out")
            self.peers |= set(show.routes)
            peers = sorted(self.peers)
            ribs = [show.routes.get(peer, set()) for peer in peers] or [set()]
            differing = [rib for rib in ribs if rib != announced]
            held = differing[0] if differing else announced
            if differing:
                self._drift = {p: 6 if ":" in p else 4 for p in set().union(*ribs)}
        return DiversionSet(
            tuple(p.split("/")[0] for p in held if ":" not in p),
            tuple(p.split("/")[0] for p in held if ":" in p),
        )

    def answered(self, event: ApiEvent) -> None:
        """One of ExaBGP's answers (done, error, or a route of a show), from read_api."""
        with self._answer_lock:
            head = self._answers[0] if self._answers else None
            if event.kind == "rib":
                route = _host_route(event.detail)
                if isinstance(head, _Show) and route is not None:
                    head.routes.setdefault(event.peer, set()).add(route)
                return
            if isinstance(head, _Show):
                self._answers.popleft()
                head.ok = event.kind == "done"
                head.answered.set()
            elif head is not None and head > 1:
                self._answers[0] = head - 1
            elif head is not None:
                self._answers.popleft()

    def resend(self) -> None:
        """The whole current set again (a neighbor came up)."""
        with self._lock:
            if self.announced:
                self._write(
                    list(commands("announce", self.announced.items(), self.next_hop, self.tags))
                )

    def _write(self, lines: list[str], show: _Show | None = None) -> None:
        if not lines:
            return
        with self._answer_lock:  # counted first: an answer may come before write returns
            if show is not None:
                self._answers.append(show)
            elif self._answers and isinstance(self._answers[-1], int):
                self._answers[-1] += len(lines)
            else:
                self._answers.append(len(lines))
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
            if event.kind in ("done", "error", "rib"):
                plane.answered(event)
            if event.peer and event.kind in ("up", "down"):
                plane.peers.add(event.peer)
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
