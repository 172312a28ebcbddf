"""Benchmark-only mitmproxy addon: send every request to the local upstream.

``--set bench_upstream=PORT``. It rewrites the request's destination in the ``request``
hook, after the blocklist has checked the URL as the client asked for it (at
``requestheaders``), so no name is ever resolved and nothing leaves 127.0.0.1. Rewriting
the request, not the server address, lets mitmproxy keep one upstream connection per
client, the cheapest path through the proxy: the addon's share of the cost is then at its
largest, so the figure errs against the addon.
"""

from __future__ import annotations

from mitmproxy import ctx, http


class Upstream:
    def load(self, loader) -> None:
        loader.add_option("bench_upstream", int, 0, "Port of the local upstream on 127.0.0.1.")

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is None:
            flow.request.host, flow.request.port = "127.0.0.1", ctx.options.bench_upstream

    def http_connect(self, flow: http.HTTPFlow) -> None:
        """A CONNECT tunnel (bench/proxy.py's tls scenario) goes to the upstream too, after
        the blocklist has seen the host asked for; the TLS inside keeps its SNI."""
        if flow.response is None:
            flow.request.host, flow.request.port = "127.0.0.1", ctx.options.bench_upstream


addons = [Upstream()]
