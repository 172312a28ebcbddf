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
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from blocklist_addon.store import write_atomic
from divert import DivertError
from divert.dataset import DiversionSet
from divert.export import render

__all__ = ["FILES", "BirdPlane", "configure"]

#: The include file of each family inside ``bird_dir``.
FILES = {4: "divert4.conf", 6: "divert6.conf"}
#: What ``birdc configure`` prints when BIRD took the new configuration.
ACCEPTED = ("Reconfigured", "Reconfiguration in progress", "Reconfiguration already in progress")
TIMEOUT = 60.0
#: A route line of the include files (``divert.export``'s bird format).
_ROUTE = re.compile(r"^route (\S+)/(?:32|128) via ", re.MULTILINE)
#: Readable by BIRD's group (make the directory setgid bird: the files inherit the group).
MODE = 0o640


def configure(socket: Path, birdc: str | Sequence[str] = "birdc") -> str:
    """``birdc -s SOCKET configure``; BIRD's answer when it took the new configuration,
    DivertError with BIRD's own message otherwise."""
    command = [birdc] if isinstance(birdc, str) else list(birdc)
    try:
        done = subprocess.run(
            [*command, "-s", str(socket), "configure"],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        raise DivertError(f"{command[0]} not found: install BIRD 2 (Debian: bird2)") from None
    except subprocess.TimeoutExpired:
        raise DivertError(f"birdc configure did not answer within {TIMEOUT:.0f} s") from None
    said = [
        line.strip()
        for line in (done.stdout + done.stderr).splitlines()
        if line.strip() and not line.startswith(("BIRD ", "Reading configuration"))
    ]
    if done.returncode == 0 and any(line.startswith(ACCEPTED) for line in said):
        return said[-1]
    why = "; ".join(said)[:300] or f"exit status {done.returncode}"
    if "Unable to connect" in why:
        raise DivertError(f"birdc: {why} (is BIRD running? bird_socket in the config)")
    raise DivertError(f"BIRD refused the new configuration and keeps the old one: {why}")


@dataclass
class BirdPlane:
    """``run``'s data plane for BIRD: what ``apply`` writes is what BIRD announces."""

    directory: Path
    socket: Path
    next_hop: dict[int, str]
    community: str | None = None
    birdc: str | Sequence[str] = "birdc"
    name: str = "bird"

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
            configure(self.socket, self.birdc)
        except (OSError, DivertError) as exc:
            self._restore(before)
            if isinstance(exc, OSError):
                raise DivertError(
                    f"cannot write {exc.filename or self.directory}: {exc.strerror or exc}"
                ) from None
            raise

    @property
    def lock(self) -> str:
        return "bird-" + hashlib.sha256(str(self.directory.resolve()).encode()).hexdigest()[:16]

    def read(self) -> DiversionSet:
        """The routes of the include files (what BIRD loads at its next start or configure);
        a file deleted or emptied behind run's back reads as fewer routes."""
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
