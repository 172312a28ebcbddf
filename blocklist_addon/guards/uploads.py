"""Posts carrying listed URLs, refused before the platform sees them (reverse mode).

In reverse mode (the proxy in front of a platform), a post whose fields carry a listed URL
(``content.uploads.listed_in_body``) is refused with 451 before any of it reaches the
platform; a body is read decoded (``content.inflate``) up to ``blocklist_upload_max_bytes``.

A body (or WebSocket message) larger than ``THREAD_BYTES`` decoded, or in a content coding,
is read in a worker thread as the page check reads a large page (about 0.8 s for 1 MB of
dotted words, which would stall every other connection of the proxy): the hook then returns
a coroutine, which mitmproxy awaits before anything goes upstream.

A path is guarded as the site routes it (decoded, its dot segments resolved), not only as
sent, and a text body is read as text whatever type it declares. mitmproxy's
``stream_large_bodies`` is refused: it streams a body past its size to the site as the body
arrives, after the ``requestheaders`` hooks and before ``request``, whatever they set, so
neither this check nor the image hash check would read it.
"""

from __future__ import annotations

import asyncio
import fnmatch
import urllib.parse
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field

from mitmproxy import ctx, http, websocket
from mitmproxy.exceptions import OptionsError
from mitmproxy.proxy import mode_specs

from blocklist_addon.content import uploads
from blocklist_addon.content.inflate import decoded_head, inflate
from blocklist_addon.guards.flow import (
    THREAD_BYTES,
    UNCHECKED,
    UPLOAD_METHODS,
    carries_body,
    header,
    respond,
)
from blocklist_addon.guards.urls import Enforcer
from blocklist_addon.lists.active import ActiveList
from blocklist_addon.ops.options import int_option
from blocklist_addon.urls.matcher import Match

__all__ = ["UploadGuard"]

#: Percent-decodings of a path tried when matching blocklist_upload_paths (servers decode once;
#: a proxy or framework in front of the site may decode again).
DECODINGS = 3


def routed_paths(path: str) -> set[str]:
    """``path`` (without its query) as sent and as servers route it, lower case: percent-decoded
    up to ``DECODINGS`` times, each with its ``;parameters`` dropped, empty segments merged
    and dot segments resolved. Guarding a post the site would not route there costs a check,
    never a refusal of anything unlisted."""
    path = path.split("?", 1)[0].split("#", 1)[0]
    forms = {path.lower()}
    for _ in range(DECODINGS + 1):
        forms.add(_resolved(path).lower())
        decoded = urllib.parse.unquote(path)
        if decoded == path:
            break
        path = decoded
    return forms


def _resolved(path: str) -> str:
    """RFC 3986's remove_dot_segments, with empty segments and ``;parameters`` dropped."""
    segments: list[str] = []
    parts = path.split("/")
    for number, part in enumerate(parts):
        part = part.split(";", 1)[0]
        last = number == len(parts) - 1
        if part in (".", ".."):
            if part == ".." and segments:
                segments.pop()
            if last:
                segments.append("")
        elif part or last:
            segments.append(part)
    return "/" + "/".join(segments)


def _unread_text(body: bytes, content_type: str) -> bool:
    """A text body whose declared type was not read whole as text: a type the reader skips
    (``application/octet-stream``: JSON APIs often read the body whatever its type) or a
    multipart body (which need not be one: its boundary may be nowhere in it). UTF-8 only,
    so that images and archives are not scanned as text (about 1 ms a KiB)."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if not kind or kind.startswith("text/") or kind == "application/x-www-form-urlencoded":
        return False  # read whole as text already, or field by field
    if kind == "application/json" or kind.endswith("+json"):
        return False  # every string, or the whole body as text when it is no JSON
    return _utf8(body)


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@dataclass(eq=False)
class UploadGuard:
    lists: ActiveList
    enforcer: Enforcer
    # Options, read in configure (these defaults are the options' own).
    patterns: list[str] = field(default_factory=lambda: ["*"], init=False)
    limit: int = field(default=1024 * 1024, init=False)

    def load(self, loader) -> None:
        loader.add_option(
            "blocklist_upload_paths",
            str,
            "*",
            "In reverse mode, the request paths whose posts (form fields, multipart text "
            "fields, JSON strings, text) are refused with 451 when they carry a listed URL: "
            "comma-separated shell patterns such as /forum/*,/api/posts. Empty: off.",
        )
        loader.add_option(
            "blocklist_upload_max_bytes",
            int,
            1024 * 1024,
            "Largest post body checked for listed URLs; larger ones pass unchecked.",
        )

    def configure(self, updated: set[str]) -> None:
        paths = ctx.options.blocklist_upload_paths
        self.patterns = [p.strip().lower() for p in paths.split(",") if p.strip()]
        self.limit = int_option("blocklist_upload_max_bytes", 0)
        if "stream_large_bodies" in updated and getattr(ctx.options, "stream_large_bodies", None):
            raise OptionsError(
                "stream_large_bodies: mitmproxy streams a post past it to the site before the "
                "upload and image checks read it; leave it unset (pages and downloads past "
                "blocklist_scan_max_bytes are streamed by the page check) and bound what is "
                "held with body_size_limit"
            )

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or not self._guarded(flow):
            return
        length = flow.request.headers.get("content-length", "")
        if length.isdigit() and int(length) > self.limit:
            flow.request.stream = True  # passes unchecked, without sitting in memory

    def request(self, flow: http.HTTPFlow) -> Coroutine[None, None, None] | None:
        request = flow.request
        if request.stream or flow.response is not None or not self._guarded(flow):
            return None
        blocklist = self.lists.blocklist
        body = request.raw_content
        if blocklist is None or not body or len(body) > self.limit:
            return None
        coding = header(request.headers, b"content-encoding")
        content_type = request.headers.get("content-type", "")
        limit = self.limit

        def find() -> Match | None:
            try:
                # Decoded in steps under the limit: a 1 MiB gzip body can inflate to 1 GiB.
                content = inflate(body, coding, limit)
            except ValueError:
                # Inflating past the limit: its head is checked, the rest passes unchecked
                # as a body over the limit does. Broken: as a lenient decoder reads it (a
                # gzip member cut short, or junk after it); unknown: as sent.
                content = decoded_head(body, coding, limit) or body
            match = uploads.listed_in_body(content, content_type, blocklist.match)
            if match is None and _unread_text(content, content_type):
                match = uploads.listed_in_body(content, "text/plain", blocklist.match)
            return match

        if coding or len(body) > THREAD_BYTES:  # a small coded body may inflate to the limit
            return self._post_in_thread(flow, find)
        try:
            match = find()
        except Exception as exc:
            self._post_failed(flow, exc)
            return None
        self._refuse_post(flow, match)
        return None

    async def _post_in_thread(self, flow: http.HTTPFlow, find: Callable[[], Match | None]) -> None:
        try:
            match = await asyncio.to_thread(find)
        except Exception as exc:
            self._post_failed(flow, exc)
            return
        self._refuse_post(flow, match)

    def _post_failed(self, flow: http.HTTPFlow, exc: Exception) -> None:
        if self.enforcer.check_failed("upload", exc) and flow.response is None:
            respond(flow, UNCHECKED)

    def _refuse_post(self, flow: http.HTTPFlow, match: Match | None) -> None:
        if match is not None and flow.response is None:  # None: nothing answered meanwhile
            self.enforcer.refuse_upload(flow, match, where="upload")

    def websocket_message(self, flow: http.HTTPFlow) -> Coroutine[None, None, None] | None:
        """A message a client sends over a WebSocket opened on a guarded path (a post in a
        chat), read as a post's text: dropped when it carries a listed URL (a WebSocket has
        no answer to refuse it with, and mitmproxy cannot close one in transit), counted
        and logged. A binary message is read when it is UTF-8. One larger than
        THREAD_BYTES is read in a worker thread (a coroutine), and dropped when that
        fails under blocklist_on_error=closed."""
        socket = flow.websocket
        if socket is None or not socket.messages:
            return None
        message = socket.messages[-1]
        if not message.from_client or not self._guarded_path(flow):
            return None
        blocklist = self.lists.blocklist
        content = message.content
        if blocklist is None or not content or len(content) > self.limit:
            return None
        if not message.is_text and not _utf8(content):
            return None

        def find() -> Match | None:
            # As JSON when it is (every string, "\/" unescaped), else as text.
            return uploads.listed_in_body(content, "application/json", blocklist.match)

        if len(content) > THREAD_BYTES:
            return self._message_in_thread(flow, message, find)
        self._drop_message(flow, message, find())
        return None

    async def _message_in_thread(
        self,
        flow: http.HTTPFlow,
        message: websocket.WebSocketMessage,
        find: Callable[[], Match | None],
    ) -> None:
        try:
            match = await asyncio.to_thread(find)
        except Exception as exc:
            if self.enforcer.check_failed("upload", exc):
                message.drop()
            return
        self._drop_message(flow, message, match)

    def _drop_message(
        self, flow: http.HTTPFlow, message: websocket.WebSocketMessage, match: Match | None
    ) -> None:
        if match is not None:
            message.drop()
            self.enforcer.record_upload(flow, match, where="upload")

    def _guarded(self, flow: http.HTTPFlow) -> bool:
        """A post (any method that carries a body: servers read one whatever the method) on
        a guarded path, in reverse mode."""
        if not self.patterns or not isinstance(flow.client_conn.proxy_mode, mode_specs.ReverseMode):
            return False
        request = flow.request
        if request.method.upper() not in UPLOAD_METHODS and not carries_body(request):
            return False
        return self._path_matches(request.path)

    def _guarded_path(self, flow: http.HTTPFlow) -> bool:
        if not self.patterns:
            return False
        if not isinstance(flow.client_conn.proxy_mode, mode_specs.ReverseMode):
            return False
        return self._path_matches(flow.request.path)

    def _path_matches(self, path: str) -> bool:
        paths = routed_paths(path)
        return any(fnmatch.fnmatchcase(p, pattern) for p in paths for pattern in self.patterns)
