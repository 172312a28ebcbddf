"""``/metrics`` (Prometheus), ``/healthz`` and the status page ``/`` on their own port,
beside the proxy.

Health is what a load balancer or a monitoring check acts on: 200 while a list is enforced
and fresh (``degraded`` in the body when the store is unreachable or a task that follows it
keeps failing: the list in memory is still enforced, but new versions and suppressions may
not arrive), 503 with no list or a list older than ``blocklist_max_age``.

The status page is for an operator without Prometheus: the list in force (version, age,
entries, the feeds it was built from), the image hash list, the store's state, and blocks and
checks over the last hour (a chart drawn on the server as SVG: no script, nothing fetched from
elsewhere), and, when the store holds a diversion set (``blocklist-divert resolve`` publishes it
in the namespace "divert"), that set's version, age and address counts. It shows no list
content, no URL, no address or hostname and no client address; every value it reflects is
escaped (a version's source is free text from whoever published it).

A diverting gateway's health state (withdrawn or not, the kernel's sets in sync) is known to
``blocklist-divert run`` on the gateway alone, which has no listener: it writes a status file
and a metrics file there, and the page says so rather than guess.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import html
import itertools
import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from mitmproxy import ctx
from mitmproxy.exceptions import OptionsError

from blocklist_addon.lists.active import ActiveList
from blocklist_addon.lists.store import Store, StoreError, VersionInfo, open_store
from blocklist_addon.ops.metrics import Metrics

__all__ = ["History", "StatusServer", "health", "page", "parse_listen"]

log = logging.getLogger(__name__)

#: Seconds between samples of the counters the page charts, and how many it keeps (an hour).
SAMPLE_EVERY = 60.0
SAMPLES = 60
#: The counters the page charts: what was blocked, and what was checked.
BLOCKS, CHECKS = "blocklist_blocks_total", "blocklist_lookups_total"
UNCHECKED = "blocklist_images_unchecked_total"
#: The store namespace of the diversion set (divert.dataset), and how long the page waits for it.
DIVERT_NAMESPACE = "divert"
DIVERT_WAIT = 2.0
#: What the last resolution may have done (divert.resolve.ResolveResult.status), as shown.
RESOLVE_OUTCOMES = ("published", "unchanged", "refused", "skipped")
#: Where a gateway's own state is: ``blocklist-divert run`` serves nothing, it writes files.
GATEWAY_STATE = (
    "not known to the proxy: blocklist-divert run on the gateway writes it to its status file "
    "and metrics file (blocklist_divert_withdrawn, blocklist_divert_in_sync)"
)


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


class History:
    """Totals of the blocks and checks counters, sampled once a minute for the last hour."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.samples: collections.deque[tuple[float, float, float]] = collections.deque(
            maxlen=SAMPLES
        )

    def sample(self, blocks: float, checks: float) -> None:
        self.samples.append((self.clock(), blocks, checks))

    def minutes(self, blocks: float, checks: float) -> list[tuple[float, float]]:
        """(blocks, checks) in each interval between samples, oldest first, the last one
        up to now (``blocks`` and ``checks``: the totals now)."""
        points = [*self.samples, (self.clock(), blocks, checks)]
        return [
            (max(0.0, b1 - b0), max(0.0, c1 - c0))
            for (_, b0, c0), (_, b1, c1) in itertools.pairwise(points)
        ]


def _totals(metrics: Metrics) -> tuple[float, float]:
    """The blocks and checks counters summed over their labels."""
    totals = {BLOCKS: 0.0, CHECKS: 0.0}
    for name, _, value in _series(metrics):
        if name in totals:
            totals[name] += value
    return totals[BLOCKS], totals[CHECKS]


def _series(metrics: Metrics) -> list[tuple[str, str, float]]:
    """(name, labels as rendered, value) of every counter sample."""
    found = []
    for line in metrics.render().splitlines():
        if line.startswith("blocklist_"):
            series, _, value = line.rpartition(" ")
            name, _, labels = series.partition("{")
            found.append((name, labels.rstrip("}"), float(value)))
    return found


def _unchecked(metrics: Metrics) -> list[tuple[str, str]]:
    """Uploads that could not be checked since the proxy started, by reason and action."""
    counts: dict[str, float] = {}
    for name, labels, value in _series(metrics):
        if name == UNCHECKED and value:
            fields = dict(re.findall(r'(\w+)="([^"]*)"', labels))
            key = f"{fields.get('reason', '?')} ({fields.get('action', '?')})"
            counts[key] = counts.get(key, 0) + value
    return [(k, f"{v:,.0f}") for k, v in sorted(counts.items())] or [("none", "")]


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _store_kind(url: str) -> str:
    """What kind of store, never its URL (hosts, paths and users stay off the page)."""
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    kinds = {
        "": "embedded (file)",
        "file": "file",
        "redis": "Redis",
        "rediss": "Redis (TLS)",
        "unix": "Redis (unix socket)",
        "redis+sentinel": "Redis Sentinel",
        "rediss+sentinel": "Redis Sentinel (TLS)",
    }
    return kinds.get(scheme, "unknown")


def _list_rows(kind: ActiveList) -> list[tuple[str, str]]:
    info = kind.info
    if info is None:
        return [("in force", "none")]
    return [
        ("version", str(info.version)),
        ("entries", f"{info.entries:,}"),
        ("age", _age(kind.age()) + (" (stale)" if kind.stale() else "")),
        ("built from", info.source),
        ("loaded from", "the store" if kind.origin == "store" else "the last-known-good copy"),
        ("store", "up" if kind.store_up else "down"),
    ]


def _diversion_rows(
    info: VersionInfo, counts: dict[str, int] | None, last_run: dict[str, Any], now: float
) -> list[tuple[str, str]]:
    """The diversion set in the store: its version, age and sizes, and the last resolution's
    time and outcome (a word), never an address or a host."""
    rows = [("version", str(info.version)), ("published", _age(now - info.created_at) + " ago")]
    at, outcome = last_run.get("at"), last_run.get("status")
    if isinstance(at, (int, float)):
        word = outcome if outcome in RESOLVE_OUTCOMES else "unknown outcome"
        rows.append(("last resolution", f"{_age(max(0.0, now - at))} ago: {word}"))
    if counts is None:
        rows.append(("addresses", f"{info.entries:,} (the set could not be read)"))
    else:
        rows += [
            ("IPv4 addresses", f"{counts['ipv4']:,}"),
            ("IPv6 addresses", f"{counts['ipv6']:,}"),
            ("listed hosts resolved", f"{counts['hosts']:,}"),
        ]
    return [*rows, ("built by", info.source), ("gateway state", GATEWAY_STATE)]


def _set_counts(data: bytes) -> dict[str, int] | None:
    """Address counts by family and the hosts' count of a stored diversion set (its JSON),
    None when it is not one."""
    try:
        doc = json.loads(data)
        return {k: len(doc[k]) for k in ("ipv4", "ipv6", "hosts")}
    except (ValueError, KeyError, TypeError):
        return None


def _table(rows: list[tuple[str, str]]) -> str:
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


def _chart(minutes: list[tuple[float, float]]) -> str:
    """Checks (grey) and blocks (red) per minute as bars, newest on the right."""
    width, height, bar = 600, 80, 10
    top = max([c for _, c in minutes] + [1.0])
    rects = []
    for i, (blocks, checks) in enumerate(minutes[-SAMPLES:]):
        x = width - (len(minutes[-SAMPLES:]) - i) * bar
        for value, colour in ((checks, "#999"), (blocks, "#c00")):
            h = round(height * value / top, 1)
            rects.append(
                f'<rect x="{x}" y="{height - h}" width="{bar - 2}" height="{h}" fill="{colour}">'
                f"<title>{blocks:.0f} blocked of {checks:.0f} checked</title></rect>"
            )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="checks and blocks per minute, last hour">'
        f'<rect width="{width}" height="{height}" fill="#f6f6f6"/>{"".join(rects)}</svg>'
    )


def page(
    lists: ActiveList,
    hashes: ActiveList | None,
    store_url: str,
    minutes: list[tuple[float, float]],
    unchecked: list[tuple[str, str]],
    diversion: list[tuple[str, str]] | None = None,
) -> str:
    """The status page's HTML. Every value from elsewhere goes through html.escape.
    ``diversion``: the rows of the store's diversion set, None when there is none."""
    status, doc = health(lists, hashes)
    blocks = sum(b for b, _ in minutes)
    checks = sum(c for _, c in minutes)
    failing = ", ".join(doc.get("failing", [])) or "none"
    hash_rows = _list_rows(hashes) if hashes is not None else [("in force", "none")]
    divert = "" if diversion is None else f"<h2>Diversion set</h2>\n{_table(diversion)}\n"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>blocklist-proxy status</title>
<style>
body {{ font: 15px/1.4 system-ui, sans-serif; margin: 2em; max-width: 46em; color: #222 }}
table {{ border-collapse: collapse; margin-bottom: 1.5em }}
th, td {{ text-align: left; padding: .2em 1em .2em 0 }}
th {{ font-weight: normal; color: #555; white-space: nowrap }}
.ok {{ color: #070 }} .bad {{ color: #b00 }}
</style></head><body>
<h1>blocklist-proxy</h1>
<p>Health: <strong class="{"ok" if status == 200 else "bad"}">{html.escape(doc["status"])}</strong>
(<a href="/healthz">/healthz</a>, <a href="/metrics">/metrics</a>)</p>
<h2>URL list</h2>
{_table(_list_rows(lists))}
<h2>Image hash list</h2>
{_table(hash_rows)}
<h3>Uploads not checked since start, by reason</h3>
{_table(unchecked)}
<h2>Store</h2>
{_table([("kind", _store_kind(store_url)), ("state", doc["store"]), ("failing tasks", failing)])}
{divert}<h2>Last hour</h2>
{_table([("blocked", f"{blocks:,.0f}"), ("checked", f"{checks:,.0f}")])}
{_chart(minutes)}
<p>Checks (grey) and blocks (red) per minute, newest on the right.</p>
</body></html>
"""


class StatusServer:
    def __init__(
        self, lists: ActiveList, metrics: Metrics, hashes: ActiveList | None = None
    ) -> None:
        self.lists = lists
        self.metrics = metrics
        self.hashes = hashes
        self.history = History()
        self._sampler: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None
        self._divert: Store | None = None
        self._counts: tuple[str, dict[str, int] | None] | None = None  # by set checksum

    def load(self, loader) -> None:
        loader.add_option(
            "blocklist_status_listen",
            str,
            "127.0.0.1:9451",
            "Where to serve /metrics (Prometheus), /healthz and the status page (/), as "
            "HOST:PORT. Empty: off. Give each proxy process on one box its own port.",
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
        app.router.add_get("/", self._page)
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
        with contextlib.suppress(StoreError):  # the lists report a store they cannot use
            self._divert = open_store(
                ctx.options.blocklist_store or None, namespace=DIVERT_NAMESPACE
            )
        self._sampler = asyncio.create_task(self._sample(), name="blocklist status history")
        log.info(f"blocklist: status page, /metrics and /healthz on http://{spec}/")

    async def _sample(self) -> None:
        while True:
            self.history.sample(*_totals(self.metrics))
            await asyncio.sleep(SAMPLE_EVERY)

    async def done(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
            self._sampler = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._divert is not None:
            await self._divert.close()
            self._divert = None

    async def _diversion(self) -> list[tuple[str, str]] | None:
        """The store's diversion set as rows, None when it holds none (not a diversion
        deployment); the set is read once per version, for its counts."""
        if self._divert is None:
            return None
        try:
            async with asyncio.timeout(DIVERT_WAIT):
                info = await self._divert.active()
                if info is None:
                    return None
                last_run = await self._divert.get_state("last-run") or {}
                if self._counts is None or self._counts[0] != info.checksum:
                    loaded = await self._divert.load_active()
                    counts = None if loaded is None else _set_counts(loaded[1])
                    self._counts = (info.checksum, counts)
        except (StoreError, OSError, TimeoutError):
            # Said only where a set was seen: a proxy not behind a gateway shows no section.
            return None if self._counts is None else [("state", "the store did not answer")]
        return _diversion_rows(info, self._counts[1], last_run, time.time())

    async def _metrics(self, request: web.Request) -> web.Response:
        gauges = self.lists.gauges()
        if self.hashes is not None:
            gauges += self.hashes.gauges()
        body, content_type = self.metrics.exposition(gauges, request.headers.get("Accept", ""))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _page(self, request: web.Request) -> web.Response:
        minutes = self.history.minutes(*_totals(self.metrics))
        unchecked = _unchecked(self.metrics)
        diversion = await self._diversion()
        body = page(
            self.lists, self.hashes, ctx.options.blocklist_store, minutes, unchecked, diversion
        )
        return web.Response(
            text=body,
            content_type="text/html",
            headers={
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
                "Referrer-Policy": "no-referrer",
            },
        )

    async def _health(self, request: web.Request) -> web.Response:
        status, doc = health(self.lists, self.hashes)
        return web.json_response(doc, status=status, headers={"Cache-Control": "no-store"})
