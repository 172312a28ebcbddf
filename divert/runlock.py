"""One ``blocklist-divert run`` per data plane, and no ``apply`` by hand behind its back.

Two ``run``s on one gateway fight: each applies its own view (one withdrawn, one not), and
they converge on whichever wrote last, empty included; an ``apply`` by hand refills sets that
``run`` emptied because the proxy is ill. So ``run`` holds an exclusive ``flock`` on
``<runtime_dir>/<plane>.lock`` for its whole life (the kernel drops it when the process dies,
however it dies), with its pid in the file for the message; a second ``run`` exits 1, and
``apply`` refuses while the lock is held unless ``--force``.

The runtime directory is ``runtime_dir`` in the config, else ``$RUNTIME_DIRECTORY`` (systemd
sets it from the unit's ``RuntimeDirectory=``), else ``/run/blocklist-divert``. The lock is
named after the plane (``DataPlane.lock``): the nft table and the network namespace, or
BIRD's include directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from divert import DivertError
from divert.config import DivertConfig

__all__ = ["DEFAULT_RUNTIME_DIR", "hold", "lock_path", "outside_run"]

DEFAULT_RUNTIME_DIR = Path("/run/blocklist-divert")


def lock_path(config: DivertConfig, name: str) -> Path:
    """Where the lock of plane ``name`` lives."""
    systemd = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    directory = config.runtime_dir or (Path(systemd) if systemd else DEFAULT_RUNTIME_DIR)
    return directory / f"{name}.lock"


@contextlib.contextmanager
def hold(path: Path, what: str) -> Iterator[None]:
    """``run``: the plane's lock for as long as the block runs; DivertError (one line) when
    another process holds it or it cannot be made."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise DivertError(
            f"cannot make run's lock {path}: {exc.strerror or exc} (runtime_dir in the config)"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DivertError(
                f"another blocklist-divert run (pid {_holder(fd)}) keeps {what} current "
                f"(lock {path}): one run per data plane"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def outside_run(path: Path, what: str) -> Iterator[None]:
    """``apply`` by hand: DivertError while a ``run`` holds the plane's lock (it would undo
    a withdrawal, and ``run`` would undo the apply); held meanwhile, so that a ``run``
    starting now waits for the apply to end. No lock file: no ``run`` since boot."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        yield
        return
    except OSError as exc:
        raise DivertError(f"cannot open run's lock {path}: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DivertError(
                f"blocklist-divert run (pid {_holder(fd)}) keeps {what} current and withdraws "
                "them while the proxy is ill: apply would undo that; stop run first, or give "
                "--force"
            ) from None
        yield
    finally:
        os.close(fd)


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        return str(int(os.pread(fd, 32, 0).decode().strip()))
    return "?"
