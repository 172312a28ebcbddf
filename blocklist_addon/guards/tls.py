"""Which HTTPS connections to decrypt, and which to refuse before any byte reaches the origin.

``blocklist_intercept``:

- ``listed`` (default): decrypt only connections whose SNI (or CONNECT host; or address,
  when there is no SNI) has a listed entry on it or on a parent domain; everything else
  passes through untouched, with the origin's own certificate. Clients must trust the
  proxy's CA for listed hosts.
- ``never``: decrypt nothing (ISPs: no CA on customer devices). Hosts listed as a whole are
  refused at the CONNECT (a 451 to the CONNECT request) or, in transparent mode, by closing
  the connection instead of opening one upstream; page entries cannot be seen and pass.
- ``all``: decrypt everything (the splash page for every listed HTTPS page).

Whatever the setting, a server connection to a host listed as a whole is never opened: the
``server_connect`` guard is the last line behind the URL check.

What a connection carries once it is not (or no longer) TLS is mitmproxy's guess, which
passes it as raw TCP, unseen by any check, unless its first read looks like HTTP;
``next_layer`` (run after that guess) makes every HTTP request one the checks see.

A check that raises follows ``blocklist_on_error`` (``Enforcer.check_failed``): closed
answers the CONNECT with 503, or closes the TLS connection without decrypting it and
without opening one upstream; open passes the connection untouched.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import secrets
import time
from dataclasses import dataclass, field

from mitmproxy import ctx, http, tls
from mitmproxy.addons.next_layer import NextLayer
from mitmproxy.connection import Address
from mitmproxy.exceptions import OptionsError
from mitmproxy.proxy import events, layer, layers, mode_specs, server_hooks
from mitmproxy.proxy.layers.http import HTTPMode

from blocklist_addon.guards.flow import UNCHECKED, respond, wire_host
from blocklist_addon.guards.urls import Enforcer
from blocklist_addon.lists.active import ActiveList
from blocklist_addon.ops import splash
from blocklist_addon.ops.blocklog import BlockEvent, BlockLog, client_address
from blocklist_addon.ops.metrics import Metrics
from blocklist_addon.urls.matcher import Blocklist, HostListing, Match

__all__ = ["InterceptPolicy"]

log = logging.getLogger(__name__)

INTERCEPT_CHOICES = ["listed", "never", "all"]
#: Hosts whose listing is remembered (then the cache starts afresh).
CACHE_HOSTS = 8192
#: Seconds between two log lines about devices that refused the proxy's certificate.
SAY_EVERY = 60.0
#: What a client's TLS alert says when it does not trust the certificate it was shown.
_DISTRUST = ("unknown ca", "bad certificate", "certificate unknown")
#: What mitmproxy's log says about a refused server connection (no host in it).
REFUSED = "refused by blocklist-proxy: the destination is listed as a whole"
#: ... and about one refused to a client outside blocklist_managed_clients.
REFUSED_UNMANAGED = "refused by blocklist-proxy: a listed host, and the client has not the CA"
#: The answer to such a client's CONNECT.
UNMANAGED = splash.SplashResponse(
    451,
    [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")],
    b"This site has pages on a blocklist; this device cannot be shown them safely.\n",
)
#: ... and about one whose check failed (blocklist_on_error=closed).
UNCHECKED_CONNECTION = "refused by blocklist-proxy: the destination could not be checked"


#: Empty lines before a request (RFC 9112 section 2.2: servers skip them) and a method without
#: what follows it, at most, in a connection's first bytes while waiting to tell whether
#: they are HTTP: past them they are told at once.
MAX_BLANK = 64
MAX_METHOD = 32
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]*")


def starts_http(data: bytes) -> bool | None:
    """Whether the cleartext a client opened a connection with is an HTTP request (True),
    is not (False), or cannot be told yet (None: wait for more bytes).

    mitmproxy's guess (``rawtcp``, on by default) relays a connection as raw TCP unless its
    first read holds a letter-only method, a space and the end of the request line, and no
    empty line before it: a request sent in small pieces, one whose request line is longer
    than a segment, or one after an empty line reached the origin unchecked. This reads as
    HTTP what a server reads as HTTP: a method token then a space or tab, after any empty
    lines; SSH's greeting is not (mitmproxy's own exception)."""
    start = data.lstrip(b"\r\n")
    if not start:
        return None if len(data) <= MAX_BLANK else True
    method = _TOKEN.match(start).end()  # type: ignore[union-attr]  # * always matches
    if method == len(start):
        return None if method <= MAX_METHOD else False
    if method == 0 or start.startswith(b"SSH-"):
        return False
    return start[method] in b" \t"


def _chosen_by_operator(context, data_client: bytes, data_server: bytes) -> bool:
    """Raw TCP is what the operator asked for: ``tcp_hosts``, or an ignored host that
    mitmproxy still shows (``show_ignored_hosts``); mitmproxy's own tests, reused."""
    options = ctx.options
    if options.tcp_hosts and NextLayer._is_destination_in_hosts(
        context, [re.compile(x, re.IGNORECASE) for x in options.tcp_hosts]
    ):
        return True
    return bool(options.ignore_hosts or options.allow_hosts) and bool(
        NextLayer()._ignore_connection(context, data_client, data_server)
    )


def _skip_blank_lines(nextlayer: layer.NextLayer) -> None:
    """Drop the empty lines a client sent before its request line, as servers do: mitmproxy's
    HTTP/1 parser takes one and then waits for bytes that never come (the rest of the request
    is already in), which would hold the request for good."""
    client = nextlayer.context.client
    kept: list[events.Event] = []
    blank = True
    for event in nextlayer.events:
        if blank and isinstance(event, events.DataReceived) and event.connection == client:
            data = event.data.lstrip(b"\r\n")
            if not data:
                continue
            blank = False
            event = events.DataReceived(client, data)
        kept.append(event)
    nextlayer.events = kept


def _hosts(*snis: str | None, address: Address | None) -> list[str]:
    """The hosts a TLS connection is for: its SNI, and where it goes unless that is an IP
    address and there is an SNI. Many virtual hosts share one address (always the case in
    transparent mode); an IP-literal entry covers requests to the address itself, which
    carry no SNI. A CONNECT host name is always checked: it is where the proxy connects."""
    hosts = list(dict.fromkeys(sni for sni in snis if sni))
    where = str(address[0]) if address and address[0] else None
    if where and where not in hosts and not (hosts and _is_ip(where)):
        hosts.append(where)
    return hosts


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


@dataclass(eq=False)
class InterceptPolicy:
    lists: ActiveList
    metrics: Metrics
    blocklog: BlockLog
    enforcer: Enforcer
    _cache: dict[str, HostListing] = field(default_factory=dict, init=False)
    _cached_for: Blocklist | None = field(default=None, init=False)
    # Options, read in configure (these defaults are the options' own).
    _said_at: float = field(default=-SAY_EVERY, init=False)
    mode: str = field(default="listed", init=False)
    managed: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(
        default_factory=list, init=False
    )

    def load(self, loader) -> None:
        loader.add_option(
            "blocklist_intercept",
            str,
            "listed",
            "Which HTTPS connections to decrypt: listed (only hosts with a listed entry; the "
            "rest pass untouched), never (decrypt nothing; hosts listed whole are refused at "
            "CONNECT or TLS) or all.",
            choices=INTERCEPT_CHOICES,
        )
        loader.add_option(
            "blocklist_managed_clients",
            str,
            "",
            "With blocklist_intercept=listed: the client networks whose devices trust the "
            "proxy's CA (comma-separated, e.g. 10.20.0.0/16,2001:db8:20::/48). Others (a "
            "pupil's own phone) would get a certificate error on a decrypted host, so a host "
            "with any listed entry is refused to them at the CONNECT or TLS hello, never "
            "decrypted. Empty: every client is managed.",
        )

    def configure(self, updated: set[str]) -> None:
        self.mode = ctx.options.blocklist_intercept
        try:
            self.managed = [
                ipaddress.ip_network(n.strip(), strict=False)
                for n in ctx.options.blocklist_managed_clients.split(",")
                if n.strip()
            ]
        except ValueError as exc:
            raise OptionsError(f"blocklist_managed_clients: {exc}") from None

    def _unmanaged(self, client: Address | None) -> bool:
        """A client outside the managed networks: it has not the proxy's CA."""
        if not self.managed or self.mode != "listed" or not client:
            return False
        try:
            address = ipaddress.ip_address(str(client[0]).split("%", 1)[0])
        except ValueError:
            return True  # not an address we know: not one of ours
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return not any(address in network for network in self.managed)

    def http_connect(self, flow: http.HTTPFlow) -> None:
        """Regular mode: refuse a CONNECT to a host listed whole when nothing is decrypted."""
        blocklist = self.lists.blocklist
        if not self.lists.started:  # blocklist_start_wait ran out: nothing to check against
            respond(flow, UNCHECKED)
            return
        unmanaged = self._unmanaged(flow.client_conn.peername)
        if (self.mode != "never" and not unmanaged) or blocklist is None or flow.response:
            return
        try:
            listing = self._listing(blocklist, flow.request.host)
        except Exception as exc:
            if self.enforcer.check_failed("connect", exc):
                respond(flow, UNCHECKED)
            return
        if listing.whole is not None:
            self.enforcer.block(flow, listing.whole, where="connect")
        elif unmanaged and listing.listed:
            self._refuse_unmanaged()
            respond(flow, UNMANAGED)

    def next_layer(self, nextlayer: layer.NextLayer) -> None:
        """After mitmproxy's guess (the addon places this after its own): a connection it
        would relay as raw TCP is HTTP when its first bytes start a request, and waits
        for more when they cannot tell yet (see ``starts_http``). Raw TCP the operator
        asked for stays; so does a connection that is no HTTP (SSH, a binary protocol)."""
        chosen = nextlayer.layer
        if not isinstance(chosen, layers.TCPLayer) or chosen.flow is None:
            return  # not raw TCP, or an ignored host's (flow None): mitmproxy's choice
        context = nextlayer.context
        if context.client.transport_protocol != "tcp":
            return
        data_client, data_server = nextlayer.data_client(), nextlayer.data_server()
        if data_server or _chosen_by_operator(context, data_client, data_server):
            return
        verdict = starts_http(data_client)
        if verdict is None:
            nextlayer.layer = None  # asked again with the next bytes
        elif verdict:
            _skip_blank_lines(nextlayer)
            nextlayer.layer = layers.HttpLayer(context, HTTPMode.transparent)

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        mode = self.mode
        if mode == "all" or data.ignore_connection:
            return
        if isinstance(data.context.client.proxy_mode, mode_specs.ReverseMode):
            return  # we are the site's TLS endpoint: always decrypt
        blocklist = self.lists.blocklist
        if blocklist is None:
            # Running with no list (allowed explicitly): nothing can be listed, pass. Still
            # not loaded after blocklist_start_wait: refuse, without decrypting.
            data.ignore_connection = True
            if not self.lists.started:
                data.context.server.error = UNCHECKED_CONNECTION
        elif mode == "never":
            data.ignore_connection = True  # whole hosts are refused at server_connect
        else:
            hosts = _hosts(data.client_hello.sni, address=data.context.server.address)
            try:
                listed = any(self._listing(blocklist, h).listed for h in hosts)
                data.ignore_connection = not listed
                if listed and self._unmanaged(data.context.client.peername):
                    # Without the CA it would see a certificate error: refuse, undecrypted.
                    data.ignore_connection = True
                    data.context.server.error = REFUSED_UNMANAGED
                    self._refuse_unmanaged()
                    return
            except Exception as exc:
                # Never decrypt what could not be checked (a certificate error for clients
                # without the CA); closed: and never connect it upstream either.
                data.ignore_connection = True
                if self.enforcer.check_failed("tls", exc):
                    data.context.server.error = UNCHECKED_CONNECTION
        decision = "pass" if data.ignore_connection else "intercept"
        self.metrics.inc("blocklist_tls_total", decision=decision)

    def _refuse_unmanaged(self) -> None:
        self.metrics.inc("blocklist_tls_total", decision="refuse-unmanaged")

    def tls_failed_server(self, data: tls.TlsData) -> None:
        """The handshake with an origin failed (on a decrypted host the proxy fetches the
        page itself): mitmproxy answers 502; say so in the log, without the host, and count
        it, so that an operator sees what users see."""
        error = str(data.conn.error or "").lower()
        reason = "certificate" if "certificate" in error or "hostname" in error else "handshake"
        self.metrics.inc("blocklist_upstream_tls_errors_total", reason=reason)
        log.warning(
            f"blocklist: TLS with an upstream server failed ({reason}); the client got a 502 "
            "(set ssl_verify_upstream_trusted_ca if the origin uses a private CA)"
        )

    def tls_failed_client(self, data: tls.TlsData) -> None:
        """A client's handshake on a decrypted host failed: mostly a device without the CA
        (a decrypted host is a listed one under ``listed``). mitmproxy's own line names the
        host and stays out of the log (``ConnectionLog``); count it and say so without the
        host, at most once a minute, so that an operator sees the devices that lack it."""
        error = str(data.conn.error or "").lower()
        reason = "certificate" if any(s in error for s in _DISTRUST) else "handshake"
        self.metrics.inc("blocklist_client_tls_errors_total", reason=reason)
        now = time.monotonic()
        if reason == "certificate" and now - self._said_at >= SAY_EVERY:
            self._said_at = now
            log.warning(
                "blocklist: a client refused the proxy's certificate on a decrypted host (it "
                "does not trust the proxy's CA; counted in blocklist_client_tls_errors_total): "
                "install the CA on managed devices, and name their networks in "
                "blocklist_managed_clients so that the others are refused, never decrypted"
            )

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        blocklist = self.lists.blocklist
        if data.server.error:
            return
        if blocklist is None:
            if not self.lists.started:  # blocklist_start_wait ran out
                data.server.error = UNCHECKED_CONNECTION
            return
        # A passed-through TLS connection (transparent mode, or a CONNECT to an address)
        # names its host only in the client's SNI: the server connection has none.
        hosts = _hosts(data.server.sni, data.client.sni, address=data.server.address)
        try:
            whole = next(
                (m for m in (self._listing(blocklist, h).whole for h in hosts) if m is not None),
                None,
            )
        except Exception as exc:
            if self.enforcer.check_failed("server", exc):
                data.server.error = UNCHECKED_CONNECTION
            return
        if whole is not None:
            data.server.error = REFUSED
            self._log_refusal(whole, client_address(data.client))

    def _listing(self, blocklist: Blocklist, host: str) -> HostListing:
        """``blocklist.host_listing(host)``, remembered for the list in force: a connection
        asks about its host at the hello and again at the server connection, and popular
        hosts come back all the time (each lookup canonicalizes and hashes the host's
        suffixes, 6 to 9 us). Every host is remembered alike, listed or not, so the cache
        tells nothing about the list; it starts afresh with each new list and when full."""
        if blocklist is not self._cached_for or len(self._cache) >= CACHE_HOSTS:
            self._cache, self._cached_for = {}, blocklist
        found = self._cache.get(host)
        if found is None:
            found = self._cache[host] = blocklist.host_listing(wire_host(host))
        return found

    def _log_refusal(self, match: Match, client: str | None) -> None:
        self.metrics.inc("blocklist_blocks_total", list=match.list_name, where="tls")
        self.blocklog.write(
            BlockEvent(
                match=match,
                where="tls",
                action="refuse",
                client=client,
                reference=secrets.token_hex(6),
            )
        )
