"""Posts carrying listed URLs, refused before the platform sees them (reverse mode).

In reverse mode (the proxy in front of a platform), a post whose fields carry a listed URL
(``content.uploads.listed_in_body``) is refused with 451 before any of it reaches the
platform; a body is read decoded (``content.inflate``) up to ``blocklist_upload_max_bytes``.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from mitmproxy import ctx, http
from mitmproxy.proxy import mode_specs

from blocklist_addon.content import uploads
from blocklist_addon.content.inflate import TooLarge, inflate
from blocklist_addon.guards.flow import UNCHECKED, UPLOAD_METHODS, header, respond
from blocklist_addon.guards.urls import Enforcer
from blocklist_addon.lists.active import ActiveList
from blocklist_addon.ops.options import int_option

__all__ = ["UploadGuard"]


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
        self.patterns = [p.strip() for p in paths.split(",") if p.strip()]
        self.limit = int_option("blocklist_upload_max_bytes", 0)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or not self._guarded(flow):
            return
        length = flow.request.headers.get("content-length", "")
        if length.isdigit() and int(length) > self.limit:
            flow.request.stream = True  # passes unchecked, without sitting in memory

    def request(self, flow: http.HTTPFlow) -> None:
        request = flow.request
        if request.stream or flow.response is not None or not self._guarded(flow):
            return
        blocklist = self.lists.blocklist
        body = request.raw_content
        if blocklist is None or not body or len(body) > self.limit:
            return
        try:
            try:
                # Decoded in steps under the limit: a 1 MiB gzip body can inflate to 1 GiB.
                content = inflate(body, header(request.headers, b"content-encoding"), self.limit)
            except TooLarge:
                return  # as a body over the limit: passes unchecked
            except ValueError:  # a coding unknown or broken: the origin gets it as sent
                content = body
            match = uploads.listed_in_body(
                content, request.headers.get("content-type"), blocklist.match
            )
        except Exception as exc:
            if self.enforcer.check_failed("upload", exc):
                respond(flow, UNCHECKED)
            return
        if match is None:
            return
        self.enforcer.refuse_upload(flow, match, where="upload")

    def _guarded(self, flow: http.HTTPFlow) -> bool:
        if flow.request.method.upper() not in UPLOAD_METHODS or not self.patterns:
            return False
        if not isinstance(flow.client_conn.proxy_mode, mode_specs.ReverseMode):
            return False
        path = flow.request.path.split("?", 1)[0]
        return any(fnmatch.fnmatchcase(path, pattern) for pattern in self.patterns)
