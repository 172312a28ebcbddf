"""Checks every request at its headers and answers a listed one with the 451 splash page.

The check runs at ``requestheaders``, before any body is forwarded, against the URL as
requested and as the Host header names it (they differ in transparent and reverse mode;
in reverse mode the addon keeps the client's Host header, which mitmproxy would otherwise
replace with the backend's address before any hook runs).
The answer is made by the proxy itself; with mitmproxy's lazy connection strategy, which
this addon insists on, a blocked request never opens a connection to the listed origin.

Errors (DESIGN "Failure behaviour"): a known match is answered first with a minimal 451 and
only then with the rendered splash page, so nothing that fails afterwards can forward a
listed request. A check that fails with an error (a bug, a corrupt list) follows one policy
for every check of the addon, ``blocklist_on_error``: closed (default) refuses the traffic,
open passes it; both log a line without the URL and count it.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from mitmproxy import ctx, http
from mitmproxy.exceptions import OptionsError
from mitmproxy.proxy import mode_specs

from blocklist_addon.guards.flow import (
    UNCHECKED,
    Check,
    authority_url,
    host_field_url,
    names_another_host,
    request_url,
    respond,
)
from blocklist_addon.lists.active import ActiveList
from blocklist_addon.ops import splash
from blocklist_addon.ops.blocklog import BlockEvent, BlockLog, client_address, uploader_of
from blocklist_addon.ops.errors import describe_error
from blocklist_addon.ops.metrics import Metrics
from blocklist_addon.ops.options import int_option
from blocklist_addon.urls.matcher import Blocklist, Match, exempt_hosts

if TYPE_CHECKING:
    from blocklist_addon.hashes import HashMatch

__all__ = ["DEFAULT_MAX_URL_LENGTH", "Enforcer"]

log = logging.getLogger(__name__)

ON_ERROR_CHOICES = ["closed", "open"]

#: The answer to a listed request when the splash page cannot be rendered.
MINIMAL_451 = splash.SplashResponse(
    splash.STATUS,
    [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")],
    b"Blocked (451 Unavailable For Legal Reasons).\n",
)

#: The longest URL checked (characters, the request target's and the one by Host header).
#: The check is linear in the URL, but a URL has no limit in HTTP: past this one request
#: could hold the event loop for as long as its sender likes. Servers refuse far shorter
#: URLs (nginx and Apache at 8 KiB), so a longer one is refused, never forwarded unchecked.
DEFAULT_MAX_URL_LENGTH = 65_536
MIN_MAX_URL_LENGTH = 1024


class TooLong(Exception):
    """A URL past ``blocklist_max_url_length``: refused without a lookup."""


_SPLASH_OPTIONS = {
    "blocklist_about_url": "about_url",
    "blocklist_operator": "operator",
    "blocklist_contact": "contact",
    "blocklist_hotline": "hotline",
    "blocklist_appeal_url": "appeal_url",
    "blocklist_help_url": "help_url",
}


class Enforcer:
    def __init__(self, lists: ActiveList, metrics: Metrics, blocklog: BlockLog) -> None:
        self.lists = lists
        self.metrics = metrics
        self.blocklog = blocklog
        self.splash = splash.SplashConfig()
        self.fail_closed = True  # blocklist_on_error, read in configure
        self.embedded_exempt: frozenset[str] = frozenset()
        self.max_url_length = DEFAULT_MAX_URL_LENGTH

    def load(self, loader) -> None:
        loader.add_option(
            "blocklist_max_url_length",
            int,
            DEFAULT_MAX_URL_LENGTH,
            "The longest URL the check reads, in characters (the request's and the one its "
            "Host header names): a longer one is refused with 414 and never forwarded, so one "
            "request cannot hold the proxy for long. Servers refuse much less (8 KiB).",
        )
        loader.add_option(
            "blocklist_test_lists",
            str,
            "selftest",
            "Lists of test entries (comma-separated), such as the self-test feed: their 451 "
            "says it is a test, not the hotline's wording about abuse images.",
        )
        loader.add_option(
            "blocklist_about_url",
            str,
            splash.DEFAULT_ABOUT_URL,
            'The operator\'s page about blocking, sent as Link: <URL>; rel="blocked-by" '
            "(RFC 7725) and linked from the splash page.",
        )
        loader.add_option(
            "blocklist_operator",
            str,
            splash.DEFAULT_OPERATOR,
            "Who denied access, as the splash page names it (e.g. 'Example School IT').",
        )
        loader.add_option(
            "blocklist_contact",
            str,
            "",
            "Where users report a wrongly blocked page: an e-mail address or an http(s) URL.",
        )
        loader.add_option(
            "blocklist_hotline",
            str,
            splash.DEFAULT_HOTLINE,
            "The hotline whose list is enforced, as the splash page names it.",
        )
        loader.add_option(
            "blocklist_appeal_url",
            str,
            splash.DEFAULT_APPEAL_URL,
            "The hotline's content assessment appeal page.",
        )
        loader.add_option(
            "blocklist_help_url",
            str,
            splash.DEFAULT_HELP_URL,
            "Where to get confidential help, shown on the splash page.",
        )
        loader.add_option(
            "blocklist_embedded_exempt",
            str,
            "",
            "Hosts (comma-separated; their subdomains too) whose requests are checked, but "
            "not for URLs embedded in them: the hotline's report form, which carries the "
            "listed URL someone reports (e.g. report.hotline.example).",
        )
        loader.add_option(
            "blocklist_splash_template",
            str,
            "",
            "HTML template of the splash page (paste your licence's exact wording there). "
            "Placeholders: " + ", ".join(f"${name}" for name in sorted(splash.PLACEHOLDERS)) + ". "
            "Every value is HTML-escaped. Empty: the bundled page.",
        )
        loader.add_option(
            "blocklist_on_error",
            str,
            "closed",
            "What happens to traffic whose check fails with an internal error (a bug, a "
            "corrupt list): closed refuses it (a request or CONNECT gets 503, a TLS "
            "connection is closed before any upstream connection, a page or post is not "
            "delivered); open passes it as if nothing were listed. Either way a log line "
            "(without the URL) and blocklist_lookup_errors_total record it.",
            choices=ON_ERROR_CHOICES,
        )

    def configure(self, updated: set[str]) -> None:
        if "blocklist_max_url_length" in updated:
            self.max_url_length = int_option("blocklist_max_url_length", MIN_MAX_URL_LENGTH)
        if "blocklist_on_error" in updated:
            self.fail_closed = ctx.options.blocklist_on_error == "closed"
        if "blocklist_embedded_exempt" in updated:
            try:
                self.embedded_exempt = exempt_hosts(ctx.options.blocklist_embedded_exempt)
            except ValueError as exc:
                raise OptionsError(f"blocklist_embedded_exempt: {exc}") from None
        if updated & {*_SPLASH_OPTIONS, "blocklist_splash_template", "blocklist_test_lists"}:
            try:
                path = ctx.options.blocklist_splash_template
                wording = {
                    field: getattr(ctx.options, opt) for opt, field in _SPLASH_OPTIONS.items()
                }
                self.splash = splash.SplashConfig(
                    **wording,
                    template=splash.load_template(path) if path else None,
                    test_lists=frozenset(
                        n.strip() for n in ctx.options.blocklist_test_lists.split(",") if n.strip()
                    ),
                )
            except splash.SplashError as exc:
                raise OptionsError(str(exc)) from None

    def insist(self, updated: set[str]) -> None:
        """Set mitmproxy's own options the check depends on. Called after every concern's
        configure has passed: an update here configures every addon again, and a concern
        refusing a bad value then rolled it back into a loop (thousands of log lines and a
        RecursionError instead of one line naming the bad option)."""
        if "connection_strategy" in updated and ctx.options.connection_strategy != "lazy":
            # Eager connects upstream before the request is seen (at CONNECT in regular mode,
            # at once in transparent and socks5 mode): the listed origin would see the client.
            log.info("blocklist: connection_strategy=lazy, so blocked origins are never contacted")
            ctx.options.update(connection_strategy="lazy")
        if (
            updated & {"mode", "keep_host_header"}
            and not ctx.options.keep_host_header
            and any(_is_reverse(spec) for spec in ctx.options.mode)
        ):
            # Reverse mode rewrites Host to the backend's address before any hook sees the
            # request: the host the client asked for (the listed site) would be lost.
            log.info("blocklist: keep_host_header=true, so reverse-mode requests are checked")
            ctx.options.update(keep_host_header=True)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or flow.error is not None:
            return
        url = request_url(flow.request)
        if len(url) > self.max_url_length:
            self.refuse_too_long(flow)
            return
        blocklist = self.lists.blocklist
        if blocklist is None:
            if not self.lists.started:
                # Still not loaded after blocklist_start_wait (the hook waited): fail closed.
                flow.response = http.Response.make(
                    503, b"The blocklist is loading; try again in a moment.\n"
                )
            return
        try:
            match = self._match(blocklist, flow.request, url)
        except TooLong:
            self.refuse_too_long(flow)
            return
        except Exception as exc:
            if self.check_failed("request", exc):
                respond(flow, UNCHECKED)
            return
        if match is not None:
            self.block(flow, match, where="request")

    def block(self, flow: http.HTTPFlow, match: Match, *, where: str) -> None:
        """Answer ``flow`` with the splash page (a CONNECT gets the tiny body) and log it."""
        request = flow.request
        reference = secrets.token_hex(6)
        is_connect = request.method.upper() == "CONNECT"
        shown = ""

        def render() -> splash.SplashResponse:
            nonlocal shown
            shown = request_url(request, by_host_header=True)
            return splash.render(
                self.splash,
                url=shown,
                list_name=match.list_name,
                reference=reference,
                page=not is_connect and splash.wants_page(request.method, request.headers),
                method=request.method,
            )

        self.refuse(flow, render)
        self.metrics.inc("blocklist_blocks_total", list=match.list_name, where=where)
        self.blocklog.write(
            BlockEvent(
                match=match,
                where=where,  # type: ignore[arg-type]
                action="refuse" if is_connect else "splash",
                client=client_address(flow.client_conn),
                reference=reference,
                url=shown or None,
                method=request.method,
            )
        )

    def refuse_upload(
        self, flow: http.HTTPFlow, match: Match | HashMatch, *, where: Literal["upload", "image"]
    ) -> BlockEvent:
        """Refuse a post carrying listed content (``where``: "upload" for a URL, "image")
        before the site sees a byte of it: a 451, JSON for API clients; counted and logged.
        The event is returned for whoever reports it further (the image webhook)."""
        request = flow.request
        reference = secrets.token_hex(6)
        self.refuse(
            flow,
            lambda: splash.refused_upload(
                self.splash,
                list_name=match.list_name,
                reference=reference,
                as_json=_wants_json(request),
                image=where == "image",
                site=isinstance(flow.client_conn.proxy_mode, mode_specs.ReverseMode),
            ),
        )
        return self.record_upload(flow, match, where=where, reference=reference)

    def record_upload(
        self,
        flow: http.HTTPFlow,
        match: Match | HashMatch,
        *,
        where: Literal["upload", "image"],
        reference: str | None = None,
    ) -> BlockEvent:
        """Count and log a refused post (or a WebSocket message dropped for what it carried)."""
        request = flow.request
        self.metrics.inc("blocklist_blocks_total", list=match.list_name, where=where)
        event = BlockEvent(
            match=match,
            where=where,
            action="refuse",
            client=client_address(flow.client_conn),
            reference=reference or secrets.token_hex(6),
            url=request_url(request, by_host_header=True),
            method=request.method,
            uploader=uploader_of(request.headers),
        )
        self.blocklog.write(event)
        return event

    def refuse(self, flow: http.HTTPFlow, render: Callable[[], splash.SplashResponse]) -> None:
        """Answer a listed ``flow`` from the proxy: a minimal 451 first, so that whatever
        fails next the listed request is never forwarded, then ``render()``'s answer."""
        respond(flow, MINIMAL_451)
        try:
            answer = render()
        except Exception as exc:
            self.metrics.inc("blocklist_render_errors_total")
            log.error(
                f"blocklist: could not render the 451 answer ({describe_error(exc)}); "
                "sent the minimal 451 instead"
            )
            return
        respond(flow, answer)

    def refuse_too_long(self, flow: http.HTTPFlow) -> None:
        """414 for a URL past the bound: counted and logged, the URL itself never."""
        limit = self.max_url_length
        respond(
            flow,
            splash.SplashResponse(
                414,
                [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")],
                f"This URL is longer than the proxy checks ({limit} characters); "
                "it was not forwarded.\n".encode(),
            ),
        )
        self.metrics.inc("blocklist_too_long_total")
        log.info(f"blocklist: refused a URL longer than {limit} characters (414)")

    def check_failed(self, where: Check, exc: Exception) -> bool:
        """Log and count a check that raised; True when ``blocklist_on_error`` says refuse.
        The line names the error's type and place, never its message (which may hold
        the URL) and never the URL."""
        refuse = self.fail_closed
        self.metrics.inc(
            "blocklist_lookup_errors_total", where=where, action="refuse" if refuse else "pass"
        )
        log.error(
            f"blocklist: the {where} check failed ({describe_error(exc)}); "
            + ("refused" if refuse else "passed unchecked")
            + f" (blocklist_on_error={'closed' if refuse else 'open'})"
        )
        return refuse

    def _match(self, blocklist: Blocklist, request: http.Request, url: str) -> Match | None:
        """The match for ``url`` (the request's), else for the URL by Host header, else by an
        HTTP/1 absolute-form request line (``authority_url``), else by an HTTP/2 Host header
        that disagrees with the :authority (``host_field_url``); each runs even when another
        raised. With no match and an error, the request is answered (refused) or
        passed as ``blocklist_on_error`` says."""
        self.metrics.inc("blocklist_lookups_total")
        error: Exception | None = None
        try:
            found = blocklist.match(url, embedded_exempt=self.embedded_exempt)
        except Exception as exc:
            found, error = None, exc
        if found is None:
            try:
                if names_another_host(request):
                    by_host = request_url(request, by_host_header=True)
                    if len(by_host) > self.max_url_length:
                        raise TooLong
                    found = blocklist.match(by_host, embedded_exempt=self.embedded_exempt)
            except TooLong:
                raise
            except Exception as exc:
                error = error or exc
        for other_url in (authority_url, host_field_url):
            if found is not None:
                break
            try:
                if (by_other := other_url(request)) is not None:
                    if len(by_other) > self.max_url_length:
                        raise TooLong
                    found = blocklist.match(by_other, embedded_exempt=self.embedded_exempt)
            except TooLong:
                raise
            except Exception as exc:
                error = error or exc
        if found is None and error is not None:
            raise error
        return found


def _wants_json(request: http.Request) -> bool:
    """An API client: it posts JSON or asks for it."""
    return "json" in request.headers.get("content-type", "").lower() or (
        "json" in request.headers.get("accept", "").lower()
    )


def _is_reverse(spec: str) -> bool:
    try:
        return isinstance(mode_specs.ProxyMode.parse(spec), mode_specs.ReverseMode)
    except ValueError:  # mitmproxy itself reports a bad mode
        return False
