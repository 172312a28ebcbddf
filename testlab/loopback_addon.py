"""Test-only mitmproxy addon: route every upstream connection to a local test origin.

The proxy tests ask for reserved names (blocked.example.com, unlisted.example.org); this
addon, loaded after the blocklist addon, rewrites the server address just before mitmproxy
connects, so nothing ever leaves 127.0.0.1 and no name is ever resolved. The blocklist's own
``server_connect`` guard has already seen the original address by then.

A limit of this trick: mitmproxy reuses a server connection for a keep-alive client only
when its address is the one asked for, so after the rewrite it opens a new one per request
(and stalls after a few). Tests that send many requests give each its own connection.

``--set loopback_map='{"blocked.example.com:80": 40001, "*:443": 40002, "*": 40003}'``:
keys are ``host:port``, ``*:port`` or ``*``; values are ports on 127.0.0.1.
"""

from __future__ import annotations

import json

from mitmproxy import ctx
from mitmproxy.proxy import server_hooks


class Loopback:
    def __init__(self) -> None:
        self.routes: dict[str, int] = {}

    def load(self, loader) -> None:
        loader.add_option("loopback_map", str, "{}", "JSON map of host:port to a local port.")

    def configure(self, updated: set[str]) -> None:
        if "loopback_map" in updated:
            self.routes = {
                k.lower(): int(v) for k, v in json.loads(ctx.options.loopback_map).items()
            }

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        if data.server.error or data.server.address is None:
            return
        host, port = str(data.server.address[0]).lower(), data.server.address[1]
        for key in (f"{host}:{port}", f"*:{port}", "*"):
            if key in self.routes:
                data.server.address = ("127.0.0.1", self.routes[key])
                return
        data.server.error = f"loopback: no route for port {port}"


addons = [Loopback()]
