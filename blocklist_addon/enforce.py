"""Checks every request at its headers and answers a listed one with the 451 splash page.

The check runs at ``requestheaders``, before any body is forwarded, against the URL as
requested and as the Host header names it (they differ in transparent and reverse mode;
in reverse mode the addon keeps the client's Host header, which mitmproxy would otherwise
replace with the backend's address before any hook runs).
The answer is made by the proxy itself; with mitmproxy's lazy connection strategy, which
this addon insists on, a blocked request never opens a connection to the listed origin.
"""

from __future__ import annotations

import logging
import secrets

from mitmproxy import ctx, http
from mitmproxy.exceptions import OptionsError
from mitmproxy.net.http import url
from mitmproxy.proxy import mode_specs

from blocklist_addon import splash
from blocklist_addon.active import ActiveList
from blocklist_addon.blocklog import BlockEvent, BlockLog, client_address
from blocklist_addon.matcher import Blocklist, Match
from blocklist_addon.metrics import Metrics

__all__ = ["Enforcer", "request_url", "respond"]

log = logging.getLogger(__name__)

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

    def load(self, loader) -> None:
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
            "blocklist_splash_template",
            str,
            "",
            "HTML template of the splash page (paste your licence's exact wording there). "
            "Placeholders: " + ", ".join(f"${name}" for name in sorted(splash.PLACEHOLDERS)) + ". "
            "Every value is HTML-escaped. Empty: the bundled page.",
        )

    def configure(self, updated: set[str]) -> None:
        if updated & {*_SPLASH_OPTIONS, "blocklist_splash_template"}:
            try:
                path = ctx.options.blocklist_splash_template
                wording = {
                    field: getattr(ctx.options, opt) for opt, field in _SPLASH_OPTIONS.items()
                }
                self.splash = splash.SplashConfig(
                    **wording,
                    template=splash.load_template(path) if path else None,
                )
            except splash.SplashError as exc:
                raise OptionsError(str(exc)) from None
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
        blocklist = self.lists.blocklist
        if blocklist is None:
            if not self.lists.started:
                # Fail closed while the list is loading at start (a few ms to a few s).
                flow.response = http.Response.make(
                    503, b"The blocklist is loading; try again in a moment.\n"
                )
            return
        match = self._match(blocklist, flow.request)
        if match is not None:
            self.block(flow, match, where="request")

    def block(self, flow: http.HTTPFlow, match: Match, *, where: str) -> None:
        """Answer ``flow`` with the splash page (a CONNECT gets the tiny body) and log it."""
        request = flow.request
        shown = request_url(request, by_host_header=True)
        reference = secrets.token_hex(6)
        is_connect = request.method.upper() == "CONNECT"
        page = not is_connect and splash.wants_page(request.method, request.headers)
        answer = splash.render(
            self.splash,
            url=shown,
            list_name=match.list_name,
            reference=reference,
            page=page,
            method=request.method,
        )
        respond(flow, answer)
        self.metrics.inc("blocklist_blocks_total", list=match.list_name, where=where)
        self.blocklog.write(
            BlockEvent(
                match=match,
                where=where,  # type: ignore[arg-type]
                action="refuse" if is_connect else "splash",
                client=client_address(flow.client_conn),
                reference=reference,
                url=shown,
                method=request.method,
            )
        )

    def _match(self, blocklist: Blocklist, request: http.Request) -> Match | None:
        self.metrics.inc("blocklist_lookups_total")
        try:
            found = blocklist.match(request_url(request))
            if found is None and _names_another_host(request):
                found = blocklist.match(request_url(request, by_host_header=True))
            return found
        except Exception as exc:  # never let one odd request take the proxy down
            self.metrics.inc("blocklist_lookup_errors_total")
            log.warning(f"blocklist: could not check a request ({type(exc).__name__}); passed")
            return None


def request_url(request: http.Request, *, by_host_header: bool = False) -> str:
    """The URL the client asked for, as the matcher (and a log or a page's base) must read it.

    mitmproxy keeps an IPv6 host without its brackets, so ``request.url`` and
    ``pretty_url`` give ``http://2001:db8::7/x``, which every URL parser reads as host
    ``2001``: a listed IPv6 address, and any IPv4 address written IPv4-mapped
    (``[::ffff:192.0.2.44]``), would pass. Build the URL here with the brackets put back;
    every URL taken from a request goes through this function. ``by_host_header``: the
    host the Host header (or HTTP/2 authority) names instead (transparent, reverse mode).
    """
    host, port = request.host, request.port
    if by_host_header and (header := request.host_header):
        host, header_port = url.parse_authority(header, check=False)
        port = header_port or url.default_port(request.scheme) or port
    elif ":" not in host:
        return request.url  # no IPv6 literal: mitmproxy's own URL is right (and cheaper)
    if ":" in host:
        host = f"[{host}]"
    if request.first_line_format == "authority":  # CONNECT host:port
        return f"{host}:{port}"
    path = request.path if request.path != "*" else ""
    return url.unparse(request.scheme, host, port, path)


def _names_another_host(request: http.Request) -> bool:
    """Whether the Host header names a host other than the URL's (transparent and reverse
    mode): only then can the URL by Host differ in what matching reads (ports do not count)."""
    # request.host_header, without its multidict lookup (a few us a request): the first
    # Host field, else the HTTP/2 and HTTP/3 authority.
    header = next(
        (
            value.decode("latin-1")
            for name, value in request.headers.fields
            if name.lower() == b"host"
        ),
        request.authority,
    )
    if not header:
        return False
    host = header.rpartition(":")[0] if header.rsplit(":", 1)[-1].isdigit() else header
    return host.removeprefix("[").removesuffix("]").lower() != request.host.lower()


def respond(flow: http.HTTPFlow, answer: splash.SplashResponse) -> None:
    """Answer ``flow`` with ``answer`` from the proxy itself; nothing goes upstream."""
    flow.request.stream = False  # a streamed upload and a response cannot both be set
    flow.response = http.Response.make(
        answer.status, answer.body, [(k.encode(), v.encode()) for k, v in answer.headers]
    )


def _is_reverse(spec: str) -> bool:
    try:
        return isinstance(mode_specs.ProxyMode.parse(spec), mode_specs.ReverseMode)
    except ValueError:  # mitmproxy itself reports a bad mode
        return False
