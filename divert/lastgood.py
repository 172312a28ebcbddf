"""``run``'s local copy of the last set it applied from the store (DESIGN "Failure
behaviour": the proxy keeps its own last-known-good copy; so does ``run``).

``run`` never applies a set it has not read, and leaves the data plane as it finds it while
the store is down. That protects a plane that still holds the set, but not one that comes
up empty at the same time as the store is unreachable: a reboot of the gateway (empty nft
sets), or a restarted ExaBGP (which announces nothing). Then, and only then, ``run`` applies
this copy (logged, ``blocklist_divert_from_lastgood 1``) until the store answers. A plane
that holds anything is never overwritten with it: what it holds may be newer.

The copy is the addresses only (no host digests, no hostnames: DESIGN "Data held in the
store"), written atomically (temporary file, fsync, rename), mode 0600, in ``state_dir``
(else ``$STATE_DIRECTORY``, which systemd sets from ``StateDirectory=``, else
``$BLOCKLIST_DATA_DIR``, the project's data directory), one file per data plane kind:
``divert-lastgood-nft.json``, ``-bird``, ``-exabgp``. It must survive a reboot, so it is not
in the runtime directory.
"""

from __future__ import annotations

import os
from pathlib import Path

from blocklist_addon.lists.store import default_data_dir, write_atomic
from divert import DivertError
from divert.config import DivertConfig
from divert.dataset import DiversionSet

__all__ = ["load", "path", "save"]


def path(config: DivertConfig, plane: str) -> Path:
    """Where the copy of plane kind ``plane`` lives."""
    systemd = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    directory = config.state_dir or (Path(systemd) if systemd else default_data_dir())
    return directory / f"divert-lastgood-{plane}.json"


def save(where: Path, dset: DiversionSet) -> None:
    """The set's addresses into ``where``, atomically, 0600; OSError when it cannot."""
    where.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    addresses = DiversionSet(dset.ipv4, dset.ipv6, created_at=dset.created_at)
    write_atomic(where, addresses.to_bytes(), mode=0o600)


def load(where: Path) -> DiversionSet | None:
    """The saved set; None when there is none; DivertError when it is not an intact set
    (or a symbolic link: never followed)."""
    try:
        fd = os.open(where, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DivertError(f"cannot read {where}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as f:
        data = f.read()
    try:
        return DiversionSet.from_bytes(data)
    except DivertError as exc:
        raise DivertError(f"{where}: {exc}") from None
