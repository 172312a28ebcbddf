"""The blocklist addon for mitmproxy: ``mitmdump -s blocklist_addon/addon.py --set blocklist_...``.

``blocklist-proxy`` loads this same module. One small class per concern:

- ``lists.active.ActiveList``: the list in force (store, reloads, last-known-good copy);
- ``ops.blocklog.BlockLog``: one JSON line per block; ``ConnectionLog``: no browsing log;
- ``guards.urls.Enforcer``: the URL check at request headers and the 451 splash page;
- ``guards.tls.InterceptPolicy``: which TLS connections to decrypt, which to refuse;
- ``guards.pages.PageScanner``: listed links in HTML and CSS responses, neutralized;
- ``guards.uploads.UploadGuard``: posts carrying listed URLs, refused (reverse mode);
- ``guards.images.ImageGuard``: uploads matching the image hash list, refused;
- ``ops.status.StatusServer``: /metrics, /healthz and the status page.

mitmproxy sees them as one addon, ``BlocklistAddon``, which hands each event to the
concerns that handle it. mitmproxy dispatches every event to every addon, twice per flow
event (the event, then "update"), at about 3.5 us an addon each time: five addons cost a
request more than the URL check itself does (``bench/proxy.py``), one costs a fifth of it.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import TypeVar

from mitmproxy import connection, http, tls
from mitmproxy.exceptions import OptionsError
from mitmproxy.proxy import layer, layers, server_hooks
from mitmproxy.proxy.layers.http import HTTPMode

from blocklist_addon.guards.flow import UNCHECKED, Check, respond
from blocklist_addon.guards.images import ImageGuard
from blocklist_addon.guards.pages import UNCHECKED_PAGE, PageScanner
from blocklist_addon.guards.tls import UNCHECKED_CONNECTION, InterceptPolicy
from blocklist_addon.guards.uploads import UploadGuard
from blocklist_addon.guards.urls import Enforcer
from blocklist_addon.lists.active import ActiveList
from blocklist_addon.ops.blocklog import BlockLog, ConnectionLog
from blocklist_addon.ops.metrics import Metrics
from blocklist_addon.ops.options import refuse_unsafe
from blocklist_addon.ops.status import StatusServer

__all__ = ["BlocklistAddon"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class BlocklistAddon:
    def __init__(self) -> None:
        self._starter: _Last | None = None
        self._configured = False  # the first configure (at start) has passed
        self.metrics = Metrics()
        self.lists = ActiveList(self.metrics)
        self.blocklog = BlockLog()
        self.connlog = ConnectionLog()
        self.enforcer = Enforcer(self.lists, self.metrics, self.blocklog)
        self.policy = InterceptPolicy(self.lists, self.metrics, self.blocklog, self.enforcer)
        self.pages = PageScanner(self.lists, self.metrics, self.blocklog, self.enforcer)
        self.uploads = UploadGuard(self.lists, self.enforcer)
        self.images = ImageGuard(self.metrics, self.enforcer)
        self.lists.enough = self.images.loaded  # a hash list alone is enough to start
        self.status = StatusServer(self.lists, self.metrics, self.images.hashes)

    # -- lifecycle: every concern, in this order ---------------------------------------------

    def _concerns(self) -> tuple:
        """Every concern, in the order they load and configure."""
        return (
            self.lists,
            self.blocklog,
            self.connlog,
            self.enforcer,
            self.policy,
            self.pages,
            self.uploads,
            self.images,
            self.status,
        )

    def load(self, loader) -> None:
        self._starter = _Last.place(loader.master, self._start, self._next_layer)
        for part in self._concerns():
            part.load(loader)

    def configure(self, updated: set[str]) -> None:
        try:
            refuse_unsafe(updated)  # validate_inbound_headers=false
            for part in self._concerns():
                part.configure(updated)
        except OptionsError as exc:
            if self._configured:
                raise  # a change while running: mitmproxy refuses it and keeps the old value
            # At start, one line naming the option: an error logged now makes mitmproxy exit
            # before it listens (raised, it printed a traceback and listened first).
            log.error(f"blocklist: {exc}")
            return
        self._configured = True
        self.enforcer.insist(updated)  # last: it updates options, which configures again

    async def running(self) -> None:
        if self._starter is None:  # not under a master that runs _Last: load now
            await self._start()

    async def _start(self) -> None:
        # The lists first (the hash list before the URL list, which may start on it alone):
        # no status is served before they load.
        await self.images.running()
        await self.lists.running()
        await self.status.running()

    async def done(self) -> None:
        await self.status.done()
        await self.lists.done()
        await self.images.done()
        self.blocklog.done()
        self.connlog.done()

    # -- traffic: the concerns that handle each event, in this order ------------------------
    #
    # Until the start-up load has finished, a connection's first hooks wait for it (bounded
    # by blocklist_start_wait), so that nothing is decrypted or forwarded unchecked; after a
    # timeout the concerns refuse (they see no list while not started).
    #
    # An exception that escapes a concern's hook would reach mitmproxy, which logs it and
    # goes on with the flow: the request forwarded, the page delivered unscanned. Each
    # concern runs on its own, and what escapes it goes through blocklist_on_error like a
    # failed lookup (_failed).

    def client_connected(self, client: connection.Client) -> None:
        self.metrics.inc("blocklist_client_connections_total")

    def requestheaders(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        return self._each(
            flow,
            ("request", self.enforcer.requestheaders),  # the URL itself first
            ("page", self.pages.requestheaders),
            ("upload", self.uploads.requestheaders),
            ("image", self.images.requestheaders),
            wait=True,
        )

    def request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        # uploads.request and images.request return a coroutine when a large post or an
        # image is checked off the event loop.
        return self._each(flow, ("upload", self.uploads.request), ("image", self.images.request))

    def responseheaders(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        return self._each(flow, ("page", self.pages.responseheaders))

    def response(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        # A coroutine when a big page is scanned off the event loop.
        return self._each(flow, ("page", self.pages.response))

    def websocket_message(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        # A post over a WebSocket (reverse mode). Its flow has its 101 already, so a check
        # that raises drops the message itself under blocklist_on_error=closed. A coroutine
        # when a large message is read off the event loop (it drops the message itself).
        try:
            return self.uploads.websocket_message(flow)
        except Exception as exc:
            if self.enforcer.check_failed("upload", exc) and flow.websocket is not None:
                flow.websocket.messages[-1].drop()
        return None

    def http_connect(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        return self._each(flow, ("connect", self.policy.http_connect), wait=True)

    def tls_clienthello(self, data: tls.ClientHelloData) -> Awaitable[None] | None:
        return self._each(data, ("tls", self.policy.tls_clienthello), wait=True)

    def tls_failed_client(self, data: tls.TlsData) -> Awaitable[None] | None:
        return self._each(data, ("tls", self.policy.tls_failed_client))

    def tls_failed_server(self, data: tls.TlsData) -> Awaitable[None] | None:
        return self._each(data, ("server", self.policy.tls_failed_server))

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> Awaitable[None] | None:
        return self._each(data, ("server", self.policy.server_connect), wait=True)

    def _next_layer(self, nextlayer: layer.NextLayer) -> None:
        """After mitmproxy's own next_layer (``_Last``): what it would relay as raw
        TCP is HTTP when it is. An error there fails closed as HTTP (every request checked)."""
        try:
            self.policy.next_layer(nextlayer)
        except Exception as exc:
            if self.enforcer.check_failed("connect", exc):
                nextlayer.layer = layers.HttpLayer(nextlayer.context, HTTPMode.transparent)

    def _each(
        self, data: T, *hooks: tuple[Check, Callable[[T], object]], wait: bool = False
    ) -> Awaitable[None] | None:
        """Run each hook on ``data`` in turn, after the start-up load when ``wait``; a
        coroutine (to await) when one of them returned one or the load is still running."""
        if wait and not self.lists.started:
            return self._after_start(data, hooks)
        for number, (where, hook) in enumerate(hooks):
            try:
                result = hook(data)
            except Exception as exc:
                self._failed(where, data, exc)
                continue
            # Most hooks return None: that test first, inspect.isawaitable's ABC check on
            # None costs about 1 us, several times a request.
            if result is not None and inspect.isawaitable(result):
                return self._rest(data, where, result, hooks[number + 1 :])
        return None

    async def _rest(
        self,
        data: T,
        where: Check,
        pending: Awaitable[object],
        hooks: tuple[tuple[Check, Callable[[T], object]], ...],
    ) -> None:
        try:
            await pending
        except Exception as exc:
            self._failed(where, data, exc)
        if (more := self._each(data, *hooks)) is not None:
            await more

    async def _after_start(
        self, data: T, hooks: tuple[tuple[Check, Callable[[T], object]], ...]
    ) -> None:
        await self.lists.wait_started()
        if (more := self._each(data, *hooks)) is not None:
            await more

    def _failed(self, where: Check, data: object, exc: Exception) -> None:
        """A hook raised: logged and counted; refused (closed) or passed as
        blocklist_on_error says."""
        if not self.enforcer.check_failed(where, exc):
            return
        if isinstance(data, http.HTTPFlow):
            if data.response is None:
                respond(data, UNCHECKED)
            elif where == "page" and not data.response.stream:
                respond(data, UNCHECKED_PAGE)  # the origin's page, unscanned: withheld
            elif where == "page":
                data.kill()  # streaming already: cut it off
        elif isinstance(data, tls.ClientHelloData):
            data.ignore_connection = True  # never decrypt what could not be checked
            data.context.server.error = UNCHECKED_CONNECTION
        elif isinstance(data, server_hooks.ServerConnectionHookData):
            data.server.error = UNCHECKED_CONNECTION


class _Last:
    """The addon's two hooks that must run at the very end of mitmproxy's chain, in one
    object (mitmproxy offers every event to every addon in its chain: about 3 us a request
    each).

    ``running``: the start-up load. mitmproxy opens its listeners first, then awaits the
    addons' ``running`` hooks one at a time in chain order, and scripts come before its own
    addons (its TLS addon readies its certificate store in ``running``). Loading in our own
    ``running`` held those addons back, and the connections our hooks had held were released
    into them unready: mitmproxy exited on traffic at start-up (issue 20). From here every
    other addon has started, and an error logged by the load still makes mitmproxy exit, as
    a refusal to start must.

    ``next_layer``: after mitmproxy's own NextLayer addon has guessed the connection's
    protocol (a script's hooks run before it, and it keeps whatever an earlier addon chose):
    the guess is then corrected, never pre-empted.
    """

    name = "blocklist-last"

    def __init__(
        self,
        start: Callable[[], Coroutine[None, None, None]],
        next_layer: Callable[[layer.NextLayer], None],
    ) -> None:
        self.start, self.after_next_layer = start, next_layer

    @classmethod
    def place(
        cls,
        master,
        start: Callable[[], Coroutine[None, None, None]],
        next_layer: Callable[[layer.NextLayer], None],
    ) -> _Last | None:
        """Append one to ``master``'s chain (None when there is no master to run it)."""
        addons = getattr(master, "addons", None)
        if addons is None:
            return None
        placed = addons.get(cls.name)
        if placed is None:
            placed = cls(start, next_layer)
            addons.add(placed)
        # A reloaded script's addon replaces the one loaded before.
        placed.start, placed.after_next_layer = start, next_layer
        return placed

    async def running(self) -> None:
        await self.start()

    def next_layer(self, nextlayer: layer.NextLayer) -> None:
        self.after_next_layer(nextlayer)


addons = [BlocklistAddon()]
