"""The diversion set into BIRD 2: static routes in two include files, then ``birdc configure``.

``deploy/bird-divert.conf`` includes ``<bird_dir>/divert4.conf`` and ``divert6.conf`` in two
static protocols and exports them to the core router over iBGP. Each apply writes both files
atomically (temporary file + rename: BIRD never reads half a file) and asks BIRD to reload.
BIRD re-reads its whole configuration and changes only what differs: routes added or
removed are announced or withdrawn, the BGP session stays up.

``birdc configure`` exits 0 even when BIRD refused the new configuration (a parse error in
any file: it then keeps running the old one, and says so as ``file:line:col message``), so
its output is read, not only its exit status. On a refusal the include files are put back
as they were, so that the files on disk are what BIRD runs and a restart of BIRD starts
with the routes it had; the error is one line naming BIRD's message.

What the plane holds is read from BIRD itself (``show route table all protocol P`` for the
two static protocols, through the control socket), not only from the files: a BIRD
restarted or reconfigured with another configuration (``birdc configure "other.conf"``,
a bird.conf that lost the include) announces nothing while the files still hold the set.
After ``birdc configure`` the routes are read back too: BIRD can take a configuration and
still not hold the routes (the include missing from bird.conf, a protocol disabled by
hand, a next hop it cannot reach), and that is an error, not an applied set.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from blocklist_addon.lists.store import write_atomic
from divert import DivertError
from divert.dataset import DiversionSet
from divert.planes.export import render
from divert.planes.tools import run_tool

__all__ = ["FILES", "PROTOCOLS", "BirdPlane", "configure", "held"]

#: The include file of each family inside ``bird_dir``.
FILES = {4: "divert4.conf", 6: "divert6.conf"}
#: The static protocol of each family that includes it (``deploy/bird-divert.conf``).
PROTOCOLS = {4: "blocklist_divert4", 6: "blocklist_divert6"}
#: What ``birdc configure`` prints when BIRD took the new configuration.
ACCEPTED = ("Reconfigured", "Reconfiguration in progress", "Reconfiguration already in progress")
TIMEOUT = 60.0
#: A route line of the include files (``divert.export``'s bird format).
_ROUTE = re.compile(r"^route (\S+)/(?:32|128) via ", re.MULTILINE)
#: A network in ``birdc show route`` (its further routes and attributes are indented).
_SHOWN = re.compile(r"^([0-9A-Fa-f.:]+)/(?:32|128)\s", re.MULTILINE)
#: A protocol line of ``birdc show protocols``: name, kind, table, state.
_PROTOCOL = re.compile(r"^(\S+)\s+(\S+)\s+(\S+)\s+(\S+)", re.MULTILINE)
#: Why BIRD can take a configuration and hold fewer routes than its files.
BARE = (
    "do the static protocols of bird.conf still include the files, and can BIRD reach the next hop?"
)
#: Readable by BIRD's group (make the directory setgid bird: the files inherit the group).
MODE = 0o640


def _birdc(socket: Path, birdc: str | Sequence[str], *args: str) -> tuple[int, list[str]]:
    """``birdc -s SOCKET ARGS``: its exit status and the lines it said (banner left out)."""
    done = run_tool(
        birdc,
        ["-s", str(socket), *args],
        timeout=TIMEOUT,
        install="install BIRD 2 (Debian: bird2)",
        slow=f"birdc {args[0]} did not answer within {TIMEOUT:.0f} s",
    )
    said = [
        line.rstrip()
        for line in (done.stdout + done.stderr).splitlines()
        if line.strip() and not line.startswith(("BIRD ", "Reading configuration"))
    ]
    if any("Unable to connect" in line for line in said):
        why = "; ".join(line.strip() for line in said)[:300]
        raise DivertError(f"birdc: {why} (is BIRD running? bird_socket in the config)")
    return done.returncode, said


def configure(socket: Path, birdc: str | Sequence[str] = "birdc") -> str:
    """``birdc -s SOCKET configure``; BIRD's answer when it took the new configuration,
    DivertError with BIRD's own message otherwise."""
    status, said = _birdc(socket, birdc, "configure")
    said = [line.strip() for line in said]
    if status == 0 and any(line.startswith(ACCEPTED) for line in said):
        return said[-1]
    why = "; ".join(said)[:300] or f"exit status {status}"
    raise DivertError(f"BIRD refused the new configuration and keeps the old one: {why}")


def held(socket: Path, birdc: str | Sequence[str] = "birdc") -> tuple[DiversionSet, str]:
    """The routes BIRD's static protocols hold now, and what is wrong when a protocol is
    missing or not up ("" when both are up): what BIRD announces, whatever the files say."""
    status, said = _birdc(socket, birdc, "show", "protocols")
    if status != 0:
        raise DivertError(f"birdc show protocols: {'; '.join(said)[:300]}")
    states = {m[1]: m[4] for m in _PROTOCOL.finditer("\n".join(said))}
    found: dict[int, list[str]] = {4: [], 6: []}
    wrong = []
    for family, name in PROTOCOLS.items():
        if name not in states:
            wrong.append(f"BIRD has no protocol {name} (does bird.conf include bird-divert.conf?)")
            continue
        if states[name] != "up":
            wrong.append(f"BIRD's protocol {name} is {states[name]} (birdc enable {name}?)")
        status, said = _birdc(socket, birdc, "show", "route", "table", "all", "protocol", name)
        if status != 0:
            raise DivertError(f"birdc show route protocol {name}: {'; '.join(said)[:300]}")
        found[family] += _SHOWN.findall("\n".join(said))
    try:
        return DiversionSet(tuple(found[4]), tuple(found[6])), "; ".join(wrong)
    except DivertError as exc:
        raise DivertError(f"BIRD's routes: {exc}") from None


@dataclass
class BirdPlane:
    """``run``'s data plane for BIRD: what ``apply`` writes is what BIRD announces."""

    directory: Path
    socket: Path
    next_hop: dict[int, str]
    community: str | None = None
    birdc: str | Sequence[str] = "birdc"
    name: str = "bird"
    written: DiversionSet | None = None  # what the last apply BIRD took wrote to the files

    @property
    def what(self) -> str:
        return f"the BGP routes (BIRD, {self.directory})"

    def render(self, dset: DiversionSet) -> dict[Path, str]:
        return {
            self.directory / name: render(
                "bird", dset, next_hop=self.next_hop, family=family, community=self.community
            )
            for family, name in FILES.items()
        }

    def apply(self, dset: DiversionSet) -> None:
        """Both files replaced, BIRD reconfigured; on any failure the files as they were."""
        files = self.render(dset)
        before: dict[Path, bytes | None] = {}
        for path in files:
            try:
                before[path] = path.read_bytes()
            except FileNotFoundError:
                before[path] = None
            except OSError as exc:
                raise DivertError(f"cannot read {path}: {exc.strerror or exc}") from None
        try:
            for path, text in files.items():
                write_atomic(path, text.encode(), mode=MODE)
            answer = configure(self.socket, self.birdc)
        except (OSError, DivertError) as exc:
            self._restore(before)
            if isinstance(exc, OSError):
                raise DivertError(
                    f"cannot write {exc.filename or self.directory}: {exc.strerror or exc}"
                ) from None
            raise
        self.written = dset
        if not answer.startswith("Reconfigured"):
            return  # still in progress: the next read-back sees the result
        routes, wrong = held(self.socket, self.birdc)
        if routes.addresses != dset.addresses:
            raise DivertError(
                f"BIRD took the configuration but holds {len(routes)} of the {len(dset)} "
                f"routes in {self.directory}: {wrong or BARE}"
            )

    @property
    def lock(self) -> str:
        return "bird-" + hashlib.sha256(str(self.directory.resolve()).encode()).hexdigest()[:16]

    def read(self) -> DiversionSet:
        """What BIRD holds, unless the include files (what BIRD loads at its next start or
        configure) say otherwise: then the files, so that a file edited or deleted behind
        run's back reads as a difference even while BIRD still holds the set."""
        routes, _ = held(self.socket, self.birdc)
        files = self.read_files()
        if files.addresses == routes.addresses or self.written is None:
            return routes
        return routes if files.addresses == self.written.addresses else files

    def read_files(self) -> DiversionSet:
        """The routes of the include files; a file deleted or emptied reads as fewer."""
        found: dict[int, list[str]] = {4: [], 6: []}
        for family, name in FILES.items():
            path = self.directory / name
            try:
                text = path.read_text()
            except FileNotFoundError:
                continue
            except (OSError, UnicodeDecodeError) as exc:
                raise DivertError(f"cannot read {path}: {exc}") from None
            found[family] += _ROUTE.findall(text)
        try:
            return DiversionSet(tuple(found[4]), tuple(found[6]))
        except DivertError as exc:
            raise DivertError(f"{self.directory}: {exc}") from None

    @staticmethod
    def _restore(before: dict[Path, bytes | None]) -> None:
        for path, data in before.items():
            with contextlib.suppress(OSError):
                if data is None:
                    path.unlink(missing_ok=True)
                else:
                    write_atomic(path, data, mode=MODE)
