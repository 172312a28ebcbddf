"""``/metrics`` (Prometheus) and ``/healthz`` on their own port, beside the proxy.

Health is what a load balancer or a monitoring check acts on: 200 while a list is enforced
and fresh (``degraded`` in the body when the store is unreachable or a task that follows it
keeps failing: the list in memory is still enforced, but new versions and suppressions may
not arrive), 503 with no list or a list older than ``blocklist_max_age``.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from mitmproxy import ctx
from mitmproxy.exceptions import OptionsError

from blocklist_addon.lists.active import ActiveList
from blocklist_addon.ops.metrics import Metrics

__all__ = ["StatusServer", "health", "parse_listen"]

log = logging.getLogger(__name__)


def parse_listen(spec: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` into its parts; OptionsError when malformed."""
    host, sep, port = spec.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise OptionsError(
            f"blocklist_status_listen must be HOST:PORT (e.g. 127.0.0.1:9451), not {spec!r}"
        )
    return host, int(port)


def health(lists: ActiveList, hashes: ActiveList | None = None) -> tuple[int, dict[str, Any]]:
    """The health status code and document. With an image hash list, its state is under
    "hashes", and a proxy enforcing only a hash list is healthy on it alone."""
    info = lists.info
    enforced = [kind for kind in (lists, hashes) if kind is not None and kind.info is not None]
    if not enforced:
        status = "starting" if not lists.started else "no-list"
    elif any(kind.stale() for kind in enforced):
        status = "stale"
    elif not all(kind.store_up and not kind.failing for kind in enforced):
        status = "degraded"
    else:
        status = "ok"
    doc: dict[str, Any] = {"status": status, "store": "up" if lists.store_up else "down"}
    failing = sorted(lists.failing)  # background tasks restarting after errors
    if hashes is not None:
        failing += [f"hashes {name}" for name in sorted(hashes.failing)]
    if failing:
        doc["failing"] = failing
    if info is not None:
        age = lists.age()
        doc.update(
            version=info.version,
            entries=info.entries,
            age_seconds=None if age is None else round(age),
            max_age_seconds=lists.max_age or None,
            source=lists.origin,
        )
    if hashes is not None and hashes.info is not None:
        age = hashes.age()
        doc["hashes"] = {
            "version": hashes.info.version,
            "entries": hashes.info.entries,
            "age_seconds": None if age is None else round(age),
            "source": hashes.origin,
            "store": "up" if hashes.store_up else "down",
        }
    return (200 if status in ("ok", "degraded") else 503), doc


class StatusServer:
    def __init__(
        self, lists: ActiveList, metrics: Metrics, hashes: ActiveList | None = None
    ) -> None:
        self.lists = lists
        self.metrics = metrics
        self.hashes = hashes
        self._runner: web.AppRunner | None = None

    def load(self, loader) -> None:
        loader.add_option(
            "blocklist_status_listen",
            str,
            "127.0.0.1:9451",
            "Where to serve /metrics (Prometheus) and /healthz, as HOST:PORT. Empty: off. "
            "Give each proxy process on one box its own port.",
        )

    def configure(self, updated: set[str]) -> None:
        if "blocklist_status_listen" in updated and ctx.options.blocklist_status_listen:
            parse_listen(ctx.options.blocklist_status_listen)

    async def running(self) -> None:
        spec = ctx.options.blocklist_status_listen
        if not spec:
            return
        host, port = parse_listen(spec)
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._health)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            await runner.cleanup()
            log.error(
                f"blocklist: cannot serve /metrics and /healthz on {spec}: "
                f"{exc.strerror or exc}; set blocklist_status_listen to a free HOST:PORT"
            )
            return
        self._runner = runner
        log.info(f"blocklist: /metrics and /healthz on http://{spec}/")

    async def done(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, request: web.Request) -> web.Response:
        gauges = self.lists.gauges()
        if self.hashes is not None:
            gauges += self.hashes.gauges()
        body, content_type = self.metrics.exposition(gauges, request.headers.get("Accept", ""))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _health(self, request: web.Request) -> web.Response:
        status, doc = health(self.lists, self.hashes)
        return web.json_response(doc, status=status, headers={"Cache-Control": "no-store"})
