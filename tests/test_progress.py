"""The progress line of `blocklist-sync` on a terminal (blocklist_addon/ops/progress.py).

The renderer runs on a fake clock and a StringIO; a `screen` helper replays what a terminal
shows for its output (CR returns to column 0 and overwrites). End to end, the CLI syncs a
file:// feed of reserved names into a file store: nothing is printed unless stderr is a
terminal, and the line never holds list content.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import pathlib
import sys
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from blocklist_addon.ops.progress import (
    NO_PROGRESS,
    Progress,
    TerminalProgress,
    render,
    terminal_progress,
)
from sync import cli
from sync.feeds import PROGRESS_EVERY, FeedError, parse_feed
from sync.fetch import FeedSource, FetchState, fetch_feed

LINES = 50_000
# Reserved names only; none of these may ever show on the progress line.
CONTENT = ["blocked", "listed", "example", ".test", "http", "/page"]


class Clock:
    """A monotonic clock that moves only when told (``step``: by itself on every read)."""

    def __init__(self, step: float = 0.0) -> None:
        self.now = 1000.0
        self.step = step

    def __call__(self) -> float:
        now = self.now
        self.now += self.step
        return now


class Tty(io.StringIO):
    """A terminal, as far as isatty() tells; counts write calls."""

    writes = 0

    def isatty(self) -> bool:
        super().isatty()  # ValueError once closed
        return True

    def write(self, s: str) -> int:
        self.writes += 1
        return super().write(s)


class Recorder(Progress):
    def __init__(self) -> None:
        self.events: list[tuple[object, ...]] = []

    def start(self, title: str) -> None:
        self.events.append(("start", title))

    def phase(self, name: str, *, total: int | None = None, unit: str = "") -> None:
        self.events.append(("phase", name, total, unit))

    def advance(self, n: int) -> None:
        self.events.append(("advance", n))

    def clear(self) -> None:
        self.events.append(("clear",))

    def done(self) -> None:
        self.events.append(("done",))

    def advanced(self) -> int:
        return sum(int(e[1]) for e in self.events if e[0] == "advance")  # type: ignore[call-overload]


def screen(text: str) -> list[str]:
    """The lines a terminal shows for ``text`` (the last one is where the cursor is)."""
    lines: list[str] = []
    line: list[str] = []
    column = 0
    for ch in text:
        if ch == "\n":
            lines.append("".join(line).rstrip())
            line, column = [], 0
        elif ch == "\r":
            column = 0
        else:
            if column < len(line):
                line[column] = ch
            else:
                line.append(ch)
            column += 1
    lines.append("".join(line).rstrip())
    return lines


def terminal(clock: Clock, **kw: object) -> tuple[Tty, TerminalProgress]:
    out = Tty()
    return out, TerminalProgress(out, clock=clock, **kw)  # type: ignore[arg-type]


# -- the renderer ------------------------------------------------------------------------


def test_render() -> None:
    assert (
        render("iwf", "downloading", 12_300_000, 57_700_000, "bytes", 0.5)
        == "iwf: downloading 12.3 MB of 57.7 MB (21%) at 24.6 MB/s"
    )
    assert render("iwf", "downloading", 1_500, None, "bytes", 2.0) == (
        "iwf: downloading 1.5 kB at 750 B/s"
    )
    assert render("iwf", "downloading", 0, None, "bytes", 0.0) == "iwf: downloading 0 B"
    assert render("iwf", "parsing", 393_216, 1_000_000, "lines", 3.0) == (
        "iwf: parsing 393,216 of 1,000,000 lines (39%)"
    )
    assert render("iwf", "parsing", 999_999, 1_000_000, "lines", 3.0).endswith("(99%)")
    assert render("iwf", "parsing", 12, None, "entries", 1.0) == "iwf: parsing 12 entries"
    assert render("active list", "building", 0, None, "", 1.0) == "active list: building"
    assert render("", "parsing", 0, None, "", 1.0) == "parsing"
    assert render("iwf", "", 0, None, "", 1.0) == "iwf"


def test_throttled_to_one_write_per_interval() -> None:
    clock = Clock()
    out, progress = terminal(clock, delay=0.0, interval=0.1)
    progress.start("iwf")
    progress.phase("downloading", total=10_000_000, unit="bytes")
    first = out.writes
    assert first == 1  # a new phase is drawn at once
    for _ in range(1000):  # 1,000 chunks within 0.05 s
        clock.now += 0.05 / 1000
        progress.advance(1000)
    assert out.writes - first <= 1
    clock.now += 0.1
    progress.advance(1000)
    assert out.writes - first <= 2
    assert screen(out.getvalue())[-1].startswith("iwf: downloading 1.0 MB of 10.0 MB (10%) at ")


def test_the_line_shows_counts_bytes_and_rate() -> None:
    clock = Clock()
    out, progress = terminal(clock, delay=0.0)
    progress.start("iwf")
    progress.phase("downloading", unit="bytes")
    clock.now += 2.0
    progress.advance(3_000_000)
    assert screen(out.getvalue()) == ["iwf: downloading 3.0 MB at 1.5 MB/s"]
    progress.phase("parsing", total=200_000, unit="lines")
    clock.now += 0.2
    progress.advance(PROGRESS_EVERY)
    # The shorter line overwrote the longer one completely.
    assert screen(out.getvalue()) == ["iwf: parsing 16,384 of 200,000 lines (8%)"]


def test_done_clears_the_line() -> None:
    clock = Clock()
    out, progress = terminal(clock, delay=0.0)
    with progress.job("iwf"):
        progress.phase("parsing", total=10, unit="lines")
        assert screen(out.getvalue()) == ["iwf: parsing 0 of 10 lines (0%)"]
    assert screen(out.getvalue()) == [""]
    assert out.getvalue().endswith("\r")  # the cursor is back at column 0
    progress.done()  # nothing left to clear: no write
    assert out.getvalue().count("\r") == 3


def test_a_fast_small_job_shows_nothing() -> None:
    clock = Clock()
    out, progress = terminal(clock)  # the default delay, 0.5 s
    with progress.job("iwf"):
        progress.phase("reading", total=4_000, unit="bytes")
        clock.now += 0.1
        progress.advance(4_000)
        progress.phase("parsing", total=100, unit="lines")
        clock.now += 0.3
        progress.advance(100)
        progress.phase("saving")
    with progress.job("active list"):
        clock.now += 0.3
        progress.phase("building")
    assert out.getvalue() == ""


def test_a_slow_job_shows_after_the_delay_and_later_jobs_at_once() -> None:
    clock = Clock()
    out, progress = terminal(clock, delay=0.5)
    progress.start("iwf")
    progress.phase("parsing", total=1_000_000, unit="lines")
    clock.now += 0.4
    progress.advance(PROGRESS_EVERY)
    assert out.getvalue() == ""
    clock.now += 0.2
    progress.advance(PROGRESS_EVERY)
    assert screen(out.getvalue()) == ["iwf: parsing 32,768 of 1,000,000 lines (3%)"]
    progress.done()
    # Building reports no counts: it is named at once, since a line was already shown.
    progress.start("active list")
    progress.phase("building")
    assert screen(out.getvalue()) == ["active list: building"]


def test_the_line_fits_the_terminal_and_holds_no_control_characters() -> None:
    clock = Clock()
    out, progress = terminal(clock, delay=0.0, columns=30)
    progress.start("feed\x1b[2J\rname")
    progress.phase("downloading", total=10**9, unit="bytes")
    text = out.getvalue()
    assert text.startswith("\r") and "\x1b" not in text[1:] and "\r" not in text[1:]
    assert len(text) == 1 + 29
    assert text[1:].startswith("feed?[2J?name: downloading")


def test_a_broken_terminal_does_not_fail_the_sync() -> None:
    class Broken(Tty):
        def write(self, s: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    progress = TerminalProgress(Broken(), clock=Clock(), delay=0.0)
    with progress.job("iwf"):
        progress.phase("parsing", total=10, unit="lines")
        progress.advance(10)


def test_no_progress_does_nothing() -> None:
    assert type(NO_PROGRESS) is Progress
    with NO_PROGRESS.job("iwf"):
        NO_PROGRESS.phase("downloading", total=10, unit="bytes")
        NO_PROGRESS.advance(10)
        NO_PROGRESS.clear()
    NO_PROGRESS.done()


def test_only_a_terminal_gets_a_progress_line() -> None:
    assert terminal_progress(io.StringIO()) is NO_PROGRESS
    assert terminal_progress(None) is NO_PROGRESS
    closed = Tty()
    closed.close()
    assert terminal_progress(closed) is NO_PROGRESS
    assert isinstance(terminal_progress(Tty()), TerminalProgress)


# -- where the sync reports ----------------------------------------------------------------


def test_parsing_reports_lines_every_so_many_records() -> None:
    data = "".join(f"http://listed{i}.example.com/page{i}.html\n" for i in range(100_000))
    data = "# comment\n" + data
    recorder = Recorder()
    feed = parse_feed(data.encode(), "text", progress=recorder)
    assert len(feed.entries) == 100_000
    assert ("phase", "parsing", 100_001, "lines") in recorder.events
    assert recorder.advanced() == 100_001
    advances = [e for e in recorder.events if e[0] == "advance"]
    assert len(advances) == 100_000 // PROGRESS_EVERY + 1


def test_parsing_json_reports_entries() -> None:
    data = json.dumps([{"url": f"listed{i}.example.com/"} for i in range(20_000)]).encode()
    recorder = Recorder()
    parse_feed(data, "json", progress=recorder)
    assert ("phase", "parsing", 20_000, "entries") in recorder.events
    assert recorder.advanced() == 20_000


def test_parsing_csv_reports_lines() -> None:
    rows = "".join(f"{i},http://listed{i}.example.com/\n" for i in range(20_000))
    recorder = Recorder()
    parse_feed(("id,url\n" + rows).encode(), "csv", progress=recorder)
    assert ("phase", "parsing", 20_001, "lines") in recorder.events
    assert recorder.advanced() == 20_001


def test_a_feed_that_is_not_a_list_fails_as_before() -> None:
    recorder = Recorder()
    with pytest.raises(FeedError, match="HTML"):
        parse_feed(b"<!DOCTYPE html><html></html>", "text", progress=recorder)


BODY = b"".join(b"http://listed%d.example.com/page.html\n" % i for i in range(20_000))


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    failures = {"flaky": 1}

    async def sized(request: web.Request) -> web.StreamResponse:
        return web.Response(body=BODY)

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(BODY), 100_000):
            await response.write(BODY[start : start + 100_000])
        await response.write_eof()
        return response

    async def flaky(request: web.Request) -> web.StreamResponse:
        if failures["flaky"]:
            failures["flaky"] -= 1
            return web.Response(status=503)
        return web.Response(body=BODY)

    app = web.Application()
    app.router.add_get("/sized", sized)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/flaky", flaky)
    test_server = TestServer(app, host="127.0.0.1")
    await test_server.start_server()
    try:
        yield test_server
    finally:
        await test_server.close()


async def download(server: TestServer, path: str, recorder: Recorder) -> bytes | None:
    source = FeedSource("test", str(server.make_url(path)), "text", backoff=0.0)
    result = await fetch_feed(source, FetchState(), progress=recorder)
    return result.data


async def test_downloading_reports_bytes_of_the_content_length(server: TestServer) -> None:
    recorder = Recorder()
    assert await download(server, "/sized", recorder) == BODY
    assert recorder.events[0] == ("phase", "downloading", len(BODY), "bytes")
    assert recorder.advanced() == len(BODY)


async def test_downloading_without_a_content_length(server: TestServer) -> None:
    recorder = Recorder()
    assert await download(server, "/chunked", recorder) == BODY
    assert recorder.events[0] == ("phase", "downloading", None, "bytes")
    assert recorder.advanced() == len(BODY)


async def test_a_retry_warning_gets_a_clean_line(
    server: TestServer, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder()
    with caplog.at_level(logging.WARNING, logger="blocklist.sync"):
        assert await download(server, "/flaky", recorder) == BODY
    assert "attempt 1 of 4 failed" in caplog.text
    assert recorder.events[:2] == [("clear",), ("phase", "downloading", len(BODY), "bytes")]


async def test_reading_a_file_reports_bytes(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "list.txt"
    path.write_bytes(BODY)
    recorder = Recorder()
    source = FeedSource("test", path.as_uri(), "text")
    assert (await fetch_feed(source, FetchState(), progress=recorder)).data == BODY
    assert recorder.events == [("phase", "reading", len(BODY), "bytes"), ("advance", len(BODY))]


# -- the CLI -------------------------------------------------------------------------------


@pytest.fixture
def argv(tmp_path: pathlib.Path) -> list[str]:
    """A file:// feed of LINES reserved-name entries, into a file store."""
    feed = tmp_path / "list.txt"
    lines = (
        f"http://blocked{i}.example.com/page{i}.html" if i % 2 else f"listed{i}.test/"
        for i in range(LINES)
    )
    feed.write_text("# sample\n" + "\n".join(lines) + "\n")
    store = (tmp_path / "store").as_uri()
    return ["--store", store, "--feed-url", feed.as_uri(), "--format", "text", "--name", "iwf"]


@pytest.fixture
def slow_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's terminal check as it is, but every clock read 0.1 s after the last: any
    line past the first few reads is drawn, however fast this machine is."""
    monkeypatch.setattr(
        cli, "terminal_progress", functools.partial(terminal_progress, clock=Clock(step=0.1))
    )


async def sync(*argv: str) -> int:
    return await cli.run(cli.build_parser().parse_args(list(argv)))


def assert_no_content(text: str) -> None:
    for needle in CONTENT:
        assert needle not in text


@pytest.mark.usefixtures("slow_clock")
async def test_no_progress_when_stderr_is_not_a_terminal(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert await sync(*argv) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert "\r" not in out
    assert out.splitlines()[0] == f"iwf: updated, {LINES:,} entries"


@pytest.mark.usefixtures("slow_clock")
async def test_progress_on_a_terminal_names_no_entry(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    tty = Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    assert await sync(*argv) == 0
    shown = tty.getvalue()
    assert "\r" in shown
    frames = [f.strip() for f in shown.split("\r") if f.strip()]
    assert f"iwf: parsing {LINES + 1:,} of {LINES + 1:,} lines (100%)" in frames
    # Every PROGRESS_EVERY records (here after the comment line): the line number reached.
    assert f"iwf: parsing 16,385 of {LINES + 1:,} lines (32%)" in frames
    assert "active list: building" in frames and "active list: publishing" in frames
    assert_no_content(shown)
    assert screen(shown) == [""]  # erased: the terminal shows nothing of it
    # The result lines are unchanged.
    assert capsys.readouterr().out.splitlines()[0] == f"iwf: updated, {LINES:,} entries"


@pytest.mark.usefixtures("slow_clock")
async def test_a_failure_line_starts_on_a_clean_line(
    tmp_path: pathlib.Path, argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "list.txt").write_text("not a url\n" * LINES)
    tty = Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    assert await sync(*argv) == 1
    assert "iwf: parsing" in tty.getvalue()
    lines = screen(tty.getvalue())
    assert len(lines) == 2 and lines[1] == ""
    assert lines[0].startswith("iwf: FAILED: ") and lines[0].endswith("stay in force")


@pytest.mark.usefixtures("slow_clock")
async def test_quiet_shows_no_progress_on_a_terminal(
    argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    tty = Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    assert await sync("--quiet", *argv) == 0
    assert tty.getvalue() == ""


async def test_the_cli_reports_one_job_per_feed_and_one_for_the_list(argv: list[str]) -> None:
    recorder = Recorder()
    assert await cli.run(cli.build_parser().parse_args(argv), progress=recorder) == 0
    phases = [e[1] for e in recorder.events if e[0] in ("start", "phase")]
    assert phases == [
        "iwf",
        "reading",
        "parsing",
        "parsing",
        "validating",
        "saving",
        "active list",
        "building",
        "publishing",
    ]
    assert recorder.events[-1] == ("done",)
    assert_no_content(repr(recorder.events))
    # Unchanged: one short job, and the list is not rebuilt.
    recorder.events.clear()
    assert await cli.run(cli.build_parser().parse_args(argv), progress=recorder) == 0
    assert recorder.events == [("start", "iwf"), ("done",), ("start", "active list"), ("done",)]
