"""Listed links in pages going to users, neutralized.

HTML and CSS responses have their listed links neutralized (``content.pages.neutralize``):
links and frames point to the splash page, which the proxy serves itself at ``SPLASH_PATH``
on the page's own origin; resources are made unfetchable. A body is scanned up to
``blocklist_scan_max_bytes``; a larger one passes as it is, streamed, so a 50 MiB download
never sits in memory. Bodies of other types are streamed too when they are as large, or of
unknown length.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from urllib.parse import parse_qs, quote, urlsplit

from mitmproxy import ctx, http
from mitmproxy.net import encoding

from blocklist_addon.content import pages
from blocklist_addon.guards.flow import THREAD_BYTES, header, request_url, respond
from blocklist_addon.guards.urls import Enforcer
from blocklist_addon.lists.active import ActiveList
from blocklist_addon.ops import splash
from blocklist_addon.ops.blocklog import BlockEvent, BlockLog, client_address
from blocklist_addon.ops.metrics import Metrics
from blocklist_addon.ops.options import int_option
from blocklist_addon.urls.matcher import Match

__all__ = ["SPLASH_PATH", "UNCHECKED_PAGE", "PageScanner"]

log = logging.getLogger(__name__)

#: Where neutralized links point, on the page's own origin; the proxy answers it.
SPLASH_PATH = "/.well-known/blocklist-proxy/blocked"
_SCANNED_TYPES = ("text/html", "application/xhtml+xml", "text/css")
#: A page whose scan failed, with blocklist_on_error=closed.
UNCHECKED_PAGE = splash.SplashResponse(
    502,
    [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")],
    b"The proxy could not check this page for listed links; try again later.\n",
)


def _scannable(response: http.Response) -> bool:
    kind = (header(response.headers, b"content-type") or "").split(";", 1)[0].strip().lower()
    return kind in _SCANNED_TYPES


def _joined(headers: http.Headers, name: bytes) -> str | None:
    """Every field ``name`` (lower case) of ``headers`` joined by ", ", as ``headers.get``
    gives them (UTF-8, surrogate-escaped), read straight from the fields."""
    values = [
        value for key, value in headers.fields if len(key) == len(name) and key.lower() == name
    ]
    return b", ".join(values).decode("utf-8", "surrogateescape") if values else None


@dataclass(eq=False)
class PageScanner:
    lists: ActiveList
    metrics: Metrics
    blocklog: BlockLog
    enforcer: Enforcer
    # Options, read in configure (these defaults are the options' own).
    action: str = field(default="neutralize", init=False)
    limit: int = field(default=4 * 1024 * 1024, init=False)
    #: The list in force's verdicts, kept from page to page (sites repeat their links).
    verdicts: pages.Verdicts = field(default_factory=pages.Verdicts, init=False)

    def load(self, loader) -> None:
        loader.add_option(
            "blocklist_scan_pages",
            str,
            "neutralize",
            "Listed links in HTML and CSS responses: neutralize (links and frames point to "
            "the splash page, resources are removed), report (log and count only) or off.",
            choices=["neutralize", "report", "off"],
        )
        loader.add_option(
            "blocklist_scan_max_bytes",
            int,
            4 * 1024 * 1024,
            "Largest HTML or CSS body scanned, decoded; larger ones pass unscanned.",
        )

    def configure(self, updated: set[str]) -> None:
        # Read once here, not per response: option lookups cost more than the checks.
        self.action = ctx.options.blocklist_scan_pages
        self.limit = int_option("blocklist_scan_max_bytes", 0)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        """Answer the splash page a neutralized link points to."""
        if flow.response is None and flow.request.path.startswith(SPLASH_PATH + "?"):
            request = flow.request

            def render() -> splash.SplashResponse:
                query = parse_qs(urlsplit(request.path).query)
                return splash.render(
                    self.enforcer.splash,
                    url="a link on the previous page, removed by the proxy",
                    list_name=query.get("list", ["unknown"])[0],
                    reference=secrets.token_hex(6),
                    page=splash.wants_page(request.method, request.headers),
                    method=request.method,
                )

            self.enforcer.refuse(flow, render)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        response = flow.response
        if response is None or self.action == "off":
            return
        length = header(response.headers, b"content-length") or ""
        known = length.isdigit()
        too_large = known and int(length) > self.limit
        if not _scannable(response) or self.lists.blocklist is None:
            # Nothing to look at. Small bodies are buffered as mitmproxy does by default
            # (cheaper per request than streaming); large or unknown ones never sit in memory.
            if too_large or not known:
                response.stream = True
        elif too_large:
            self.metrics.inc("blocklist_pages_unscanned_total", reason="too-large")
            response.stream = True
        elif not known:
            # Length unknown (chunked, HTTP/2): collect up to the limit as it streams.
            response.stream = _Collector(self.limit, lambda body: self._scan_encoded(flow, body))

    def response(self, flow: http.HTTPFlow) -> Coroutine[None, None, None] | None:
        """Scan a buffered page. One larger than THREAD_BYTES is scanned off the event loop
        (a 1 MiB page takes about 40 ms, which would stall every other connection): the hook
        then returns a coroutine, which mitmproxy awaits."""
        response = flow.response
        if (
            response is None
            or response.stream  # streamed: passed, or scanned by the collector
            or self.action == "off"
            or not _scannable(response)
            or (raw := response.raw_content) is None
        ):
            return None
        # The body as Message.get_content decodes it, without its multidict lookups; a body
        # with no Content-Encoding is the raw one, which goes out as it came unless a link in
        # it is neutralized.
        content_type = _joined(response.headers, b"content-type")
        coding = _joined(response.headers, b"content-encoding")
        body = self._scannable_body(lambda: _decoded(raw, coding) if coding else raw)
        if body is None:
            return None
        if len(body) > THREAD_BYTES:
            return self._scan_in_thread(flow, body, content_type)
        self._replace(flow, body, self._scan(flow, body, content_type))
        return None

    async def _scan_in_thread(
        self, flow: http.HTTPFlow, body: bytes, content_type: str | None
    ) -> None:
        self._replace(flow, body, await asyncio.to_thread(self._scan, flow, body, content_type))

    @staticmethod
    def _replace(flow: http.HTTPFlow, body: bytes, scanned: bytes | None) -> None:
        if scanned is None:  # the scan failed and blocklist_on_error=closed
            respond(flow, UNCHECKED_PAGE)
        elif scanned is not body and flow.response is not None:
            flow.response.set_content(scanned)

    def _scan_encoded(self, flow: http.HTTPFlow, raw: bytes) -> bytes:
        """A collected body, still content-encoded as it came from the origin."""
        assert flow.response is not None
        coding = flow.response.headers.get("content-encoding", "")
        body = self._scannable_body(lambda: encoding.decode(raw, coding) if coding else raw)
        if body is None:
            return raw
        scanned = self._scan(flow, body, flow.response.headers.get("content-type"))
        if scanned is None:
            # The scan failed and blocklist_on_error=closed; the status line has gone out
            # already: withhold the body.
            return b""
        if scanned is body:
            return raw
        return encoding.encode(scanned, coding) if coding else scanned

    def _scannable_body(self, decode: Callable[[], bytes | None]) -> bytes | None:
        """The decoded body, or None (counted, by reason) when it cannot be scanned."""
        try:
            body = decode()
        except ValueError:
            self.metrics.inc("blocklist_pages_unscanned_total", reason="undecodable")
            return None
        if body is None or len(body) > self.limit:
            self.metrics.inc("blocklist_pages_unscanned_total", reason="too-large")
            return None
        return body

    def _scan(self, flow: http.HTTPFlow, body: bytes, content_type: str | None) -> bytes | None:
        """``body`` (of ``content_type``) with its listed links neutralized (the same object
        if none are; None when the scan failed and ``blocklist_on_error`` says the page is
        not delivered)."""
        blocklist = self.lists.blocklist
        if blocklist is None:
            return body
        page_url = request_url(flow.request, by_host_header=True)

        def splash_url(match: Match) -> str:
            # Only a page holding a listed link needs its origin: not split for every page.
            parts = urlsplit(page_url)
            return f"{parts.scheme}://{parts.netloc}{SPLASH_PATH}?list={quote(match.list_name)}"

        self.metrics.inc("blocklist_pages_scanned_total")
        try:
            scanned, found = pages.neutralize(
                body,
                content_type,
                page_url,
                blocklist.match,
                splash_url,
                kept=self.verdicts.of(blocklist),
            )
        except Exception as exc:
            return None if self.enforcer.check_failed("page", exc) else body
        if not found:
            return body
        action_word = "neutralize" if self.action == "neutralize" else "report"
        for link, match in found:
            self.metrics.inc(
                "blocklist_links_total", list=match.list_name, kind=link.kind, action=action_word
            )
            self.blocklog.write(
                BlockEvent(
                    match=match,
                    where="page",
                    action=action_word,  # type: ignore[arg-type]
                    client=client_address(flow.client_conn),
                    reference=secrets.token_hex(6),
                    url=page_url,
                    method=flow.request.method,
                )
            )
        return scanned if self.action == "neutralize" else body


def _decoded(raw: bytes, coding: str) -> bytes:
    """``raw`` undone of its Content-Encoding ``coding``, as ``Message.get_content`` does:
    ValueError when it cannot be."""
    content = encoding.decode(raw, coding)
    if not isinstance(content, bytes):  # a text codec named as a content encoding
        raise ValueError(f"invalid Content-Encoding: {coding}")
    return content


class _Collector:
    """A response ``stream`` callable: holds chunks until the end (then ``finish`` the whole
    body) unless they pass ``limit`` bytes, after which everything passes unchanged."""

    def __init__(self, limit: int, finish: Callable[[bytes], bytes]) -> None:
        self.limit = limit
        self.finish = finish
        self.chunks: list[bytes] = []
        self.size = 0
        self.passing = False

    def __call__(self, data: bytes) -> bytes | list[bytes]:
        # Holding back is [], not b"": an empty chunk would end a chunked body at once.
        if self.passing:
            return data
        if not data:  # the end of the body
            body, self.chunks = b"".join(self.chunks), []
            return self.finish(body)
        self.size += len(data)
        self.chunks.append(data)
        if self.size > self.limit:
            self.passing = True
            held, self.chunks = b"".join(self.chunks), []
            return held
        return []
