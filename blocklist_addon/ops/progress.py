"""Progress of the sync worker's long phases, as one self-overwriting line on a terminal.

A large feed takes seconds to download, parse and build. When ``blocklist-sync`` runs on a
terminal (stderr is a TTY, no ``--quiet``) it shows what it is doing the way curl, pip and apt
do: one line, redrawn in place at most ``1 / interval`` times a second, erased before the
normal result lines are printed. Anywhere else (cron, systemd, pipes, tests) it prints
nothing at all, so cron mail stays one line per feed; a job over within ``delay`` seconds
shows nothing either.

The line holds a job title (a feed's configured name), the phase, counts, sizes and rates:
callers only ever pass names and numbers here, never feed content (the list is
confidential).

Code that reports progress takes a keyword-only ``progress: Progress = NO_PROGRESS``, so
library callers and tests pass nothing. A job is ``start``ed (or wrapped in ``job``) and
``done``; within it, each ``phase`` may have a ``total`` that ``advance`` counts towards.
Not thread-safe: one job at a time, as the worker runs them (a phase may advance from a
worker thread while the event loop awaits it).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

__all__ = ["NO_PROGRESS", "Progress", "TerminalProgress", "render", "terminal_progress"]


class Progress:
    """Receives progress and shows nothing: the default."""

    def start(self, title: str) -> None:
        """A new job, titled by a name from the configuration (never feed content)."""

    def phase(self, name: str, *, total: int | None = None, unit: str = "") -> None:
        """The job's next phase, counting from 0 towards ``total`` (if known) in ``unit``s
        ("bytes" shows sizes and a rate; "" shows the phase name only)."""

    def advance(self, n: int) -> None:
        """``n`` more units of the current phase are done."""

    def clear(self) -> None:
        """Erase the line now, before something else writes to the terminal (a warning);
        the next update draws it again."""

    def done(self) -> None:
        """The job is over: erase the line."""

    @contextmanager
    def job(self, title: str) -> Iterator[None]:
        """``start(title)``, then ``done()`` however the block ends."""
        self.start(title)
        try:
            yield
        finally:
            self.done()


NO_PROGRESS = Progress()


class TerminalProgress(Progress):
    """The line on ``stream``, a terminal.

    Nothing is drawn until ``delay`` seconds into a job (a small feed shows nothing), unless
    a line was already shown in this run: then later jobs show at once, so a slow phase
    that reports no counts (building the list) is still named. ``advance`` redraws at most
    every ``interval`` seconds; a new phase redraws at once. ``clock`` and ``columns``
    (default: the terminal's width) are for tests.
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        clock: Callable[[], float] = time.monotonic,
        interval: float = 0.1,
        delay: float = 0.5,
        columns: int | None = None,
    ) -> None:
        self._stream = stream
        self._clock = clock
        self._interval = interval
        self._delay = delay
        self._columns = columns or _columns(stream)
        self._shown = 0  # width of the line on the terminal, 0 when there is none
        self._seen = False  # a line was drawn in this run
        self._broken = False  # writing failed: stop trying
        self._begin("")

    def _begin(self, title: str) -> None:
        now = self._clock()
        self._title = title
        self._phase, self._total, self._unit, self._count = "", None, "", 0
        self._phase_start = now
        self._visible_at = now if self._seen else now + self._delay
        self._next_draw = self._visible_at

    def start(self, title: str) -> None:
        self.clear()
        self._begin(title)

    def phase(self, name: str, *, total: int | None = None, unit: str = "") -> None:
        now = self._clock()
        self._phase, self._total, self._unit, self._count = name, total, unit, 0
        self._phase_start = now
        if now >= self._visible_at:
            self._draw(now)

    def advance(self, n: int) -> None:
        self._count += n
        now = self._clock()
        if now >= self._next_draw:
            self._draw(now)

    def clear(self) -> None:
        if self._shown:
            self._write("\r" + " " * self._shown + "\r")
            self._shown = 0

    def done(self) -> None:
        self.clear()
        self._begin("")

    def _draw(self, now: float) -> None:
        line = render(
            self._title, self._phase, self._count, self._total, self._unit, now - self._phase_start
        )
        # A config name could hold control characters; a wrapped line could not be redrawn.
        line = "".join(c if c.isprintable() else "?" for c in line)[: self._columns - 1]
        self._write("\r" + line + " " * (self._shown - len(line)))
        self._shown = len(line)
        self._seen = True
        self._next_draw = now + self._interval

    def _write(self, text: str) -> None:
        if self._broken:
            return
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):  # a closed terminal must not fail the sync
            self._broken = True


def terminal_progress(stream: TextIO | None, **options: Any) -> Progress:
    """A TerminalProgress on ``stream`` when it is a terminal, else NO_PROGRESS."""
    try:
        tty = stream is not None and stream.isatty()
    except (AttributeError, ValueError):  # no stream, or a closed one
        tty = False
    return TerminalProgress(stream, **options) if tty and stream is not None else NO_PROGRESS


def render(title: str, phase: str, count: int, total: int | None, unit: str, elapsed: float) -> str:
    """The progress line, e.g. "iwf: downloading 12.3 MB of 57.7 MB (21%) at 48.2 MB/s"
    or "iwf: parsing 393,216 of 1,000,000 lines (39%)"."""
    parts = [f"{title}: {phase}" if title and phase else title or phase]
    if unit:
        is_bytes = unit == "bytes"
        shown = _size if is_bytes else "{:,}".format
        suffix = "" if is_bytes else f" {unit}"
        if total:
            percent = math.floor(100 * min(count, total) / total)
            parts.append(f"{shown(count)} of {shown(total)}{suffix} ({percent}%)")
        else:
            parts.append(f"{shown(count)}{suffix}")
        if is_bytes and count and elapsed > 0:
            parts.append(f"at {_size(count / elapsed)}/s")
    return " ".join(parts)


def _size(n: float) -> str:
    if n < 1000:
        return f"{n:.0f} B"
    for unit in ("kB", "MB", "GB"):
        n /= 1000
        if n < 1000:
            return f"{n:.1f} {unit}"
    return f"{n / 1000:.1f} TB"


def _columns(stream: TextIO) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns or 80
    except (AttributeError, OSError, ValueError):
        return 80
