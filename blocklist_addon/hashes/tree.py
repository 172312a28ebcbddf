"""The files of a tree ``blocklist-scan`` checks, reached as an uploader's tree must be:
symbolic links, FIFOs, sockets and devices under a PATH are listed as skipped, never
followed or opened, and a file is opened beneath its tree with O_NOFOLLOW at every step
(``open_target``), so a link swapped in after the walk is refused too; a FIFO cannot hang
the scan."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator, Sequence
from typing import NamedTuple

__all__ = ["OS_REASONS", "Skipped", "Target", "kind_of", "open_target", "walk"]

#: The reason word of an OSError met reading a file or listing a directory (else io-error).
OS_REASONS = {errno.EACCES: "denied", errno.EPERM: "denied", errno.ENOENT: "gone"}
#: Opens a file to read without waiting (a FIFO) or taking a terminal.
_READ = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class Target(NamedTuple):
    """A file to check: ``relative`` to the tree ``top`` (opened beneath it, never through a
    symbolic link), or ``top`` itself when a PATH named a file ("")."""

    top: str
    relative: str

    @property
    def path(self) -> str:
        return os.path.join(self.top, self.relative) if self.relative else self.top


class Skipped(Exception):
    """Not a regular file (or reached through a symbolic link): skipped, never read."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def open_target(target: Target) -> int:
    """A descriptor of the target, reached without following any symbolic link beneath its
    tree (each directory opened relative to the last, O_NOFOLLOW): a link an uploader swaps
    in after the walk is refused, not followed out of the tree. A file named on the command
    line is the operator's choice and followed, but not opened unless regular."""
    if not target.relative:
        mode = os.stat(target.top).st_mode
        if not stat.S_ISREG(mode):
            raise Skipped(kind_of(mode))
        return os.open(target.top, _READ)
    *directories, name = target.relative.split(os.sep)
    fd = os.open(target.top, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in directories:
            inner = os.open(part, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = inner
            mode = os.fstat(fd).st_mode
            if not stat.S_ISDIR(mode):
                raise Skipped(kind_of(mode))
        return os.open(name, _READ | os.O_NOFOLLOW, dir_fd=fd)
    finally:
        os.close(fd)


def kind_of(mode: int) -> str:
    """The reason word for a file that is not a regular file."""
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "not-a-file"


def walk(
    paths: Sequence[str], unreadable: list[dict[str, object]], skipped: list[dict[str, object]]
) -> Iterator[Target]:
    """Regular files under ``paths``. Symbolic links, FIFOs, sockets and devices under them
    go to ``skipped`` (never followed, never opened); directories that cannot be listed go
    to ``unreadable``. A PATH that is itself a symbolic link is followed (named by the
    operator)."""
    for top in paths:
        if not os.path.isdir(top):
            yield Target(top, "")
            continue
        pending = [""]
        while pending:
            relative = pending.pop()
            directory = os.path.join(top, relative) if relative else top
            try:
                with os.scandir(directory) as listing:
                    entries = sorted(listing, key=lambda entry: entry.name)
            except OSError as exc:
                reason = OS_REASONS.get(exc.errno or 0, "io-error")
                error = exc.strerror or type(exc).__name__
                unreadable.append({"path": directory, "reason": reason, "error": error})
                continue
            below = []
            for entry in entries:
                inner = os.path.join(relative, entry.name) if relative else entry.name
                try:
                    mode = entry.stat(follow_symlinks=False).st_mode
                except OSError:
                    continue  # gone since the listing
                if stat.S_ISDIR(mode):
                    below.append(inner)
                elif stat.S_ISREG(mode):
                    yield Target(top, inner)
                else:
                    skipped.append({"path": entry.path, "reason": kind_of(mode)})
            pending.extend(reversed(below))
