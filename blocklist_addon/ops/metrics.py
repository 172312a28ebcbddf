"""Counters the addons bump, exposed for Prometheus on ``/metrics`` by prometheus-client.

A counter is declared by name in ``COUNTERS`` (add one there, then bump it with ``inc``);
its labels are whatever ``inc`` is given. Bumping stays a dictionary update under a lock
(the hot path costs what it did); prometheus-client renders at scrape time: the text format
or OpenMetrics as the scraper's Accept header asks, label escaping, and the process metrics
(CPU seconds, resident memory, open file descriptors, start time). Gauges are computed at
scrape time by whoever owns the value. Label values never carry list content: only list
names and fixed words.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

__all__ = ["COUNTERS", "Gauge", "Metrics"]

#: Every counter, with its help text. Bumping an unknown name is a programming error.
COUNTERS = {
    "blocklist_client_connections_total": (
        "Client connections accepted (behind a diverting gateway: only connections to "
        "diverted addresses, so this stays flat for everything else)."
    ),
    "blocklist_lookups_total": "Requests checked against the list.",
    "blocklist_blocks_total": (
        "Requests and connections blocked, by list and by where (request, connect, tls)."
    ),
    "blocklist_lookup_errors_total": (
        "Checks that failed with an error, by where (request, connect, tls, server, page, "
        "upload, image) and action (refuse, pass: blocklist_on_error)."
    ),
    "blocklist_too_long_total": (
        "Requests refused (414) for a URL longer than blocklist_max_url_length: never "
        "forwarded, never looked up."
    ),
    "blocklist_render_errors_total": (
        "451 answers that could not be rendered; the minimal 451 was sent instead."
    ),
    "blocklist_tls_total": "TLS client hellos by decision (intercept, pass).",
    "blocklist_client_tls_errors_total": (
        "TLS handshakes with a client on a decrypted host that failed, by reason (certificate: "
        "the client does not trust the proxy's CA; handshake: anything else)."
    ),
    "blocklist_upstream_tls_errors_total": (
        "TLS handshakes with an origin that failed, by reason (certificate: not trusted or "
        "not for the host; handshake: anything else). The client got a 502."
    ),
    "blocklist_links_total": (
        "Listed links found in pages, by list, kind (navigate, resource) and action "
        "(neutralize, report)."
    ),
    "blocklist_pages_scanned_total": "HTML and CSS responses scanned for listed links.",
    "blocklist_pages_unscanned_total": (
        "HTML and CSS responses passed without a scan, by reason (too-large, undecodable)."
    ),
    "blocklist_reloads_total": "List versions loaded from the store after start.",
    "blocklist_store_errors_total": "Failed store operations; the list in memory stays in force.",
    "blocklist_task_restarts_total": (
        "Background tasks (follow, freshness) restarted after failing with an error, by task."
    ),
    "blocklist_lastgood_errors_total": "Failed writes of the last-known-good copy.",
    "blocklist_uploads_checked_total": (
        "Uploaded files checked against the image hash list, by file (image, video, other)."
    ),
    "blocklist_image_matches_total": (
        "Uploads refused for matching the image hash list, by hash kind (md5, sha1, sha256, pdq)."
    ),
    "blocklist_images_unchecked_total": (
        "Uploaded images that could not be checked, by reason (too-large, truncated, "
        "undecodable, too-slow) and action (pass, refuse)."
    ),
    "blocklist_image_check_seconds_total": "Time spent hashing and decoding uploads.",
    "blocklist_image_webhook_total": (
        "Block events for the image webhook, by result (sent, failed, dropped)."
    ),
}

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Gauge:
    name: str
    help: str
    value: float
    labels: Labels = ()


class Metrics:
    """Monotonic counters, bumped from the event loop and from worker threads."""

    def __init__(self) -> None:
        self._counters: dict[str, dict[Labels, float]] = defaultdict(dict)
        self._lock = threading.Lock()
        self._process = ProcessCollector(registry=None)

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        if name not in COUNTERS:
            raise KeyError(f"unknown counter {name}")
        key = tuple(sorted(labels.items())) if labels else ()
        with self._lock:  # a read-modify-write: two threads must not lose a count
            series = self._counters[name]
            series[key] = series.get(key, 0) + amount

    def value(self, name: str, **labels: str) -> float:
        """One series' value (0 when never bumped); for tests and the health document."""
        with self._lock:
            return self._counters.get(name, {}).get(tuple(sorted(labels.items())), 0)

    def exposition(self, gauges: Iterable[Gauge] = (), accept: str = "") -> tuple[bytes, str]:
        """The body and content type of one scrape: OpenMetrics when ``accept`` asks for
        it, else Prometheus' text format."""
        encode, content_type = choose_encoder(accept)
        with self._lock:
            counters = {name: dict(series) for name, series in self._counters.items()}
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Scrape(list(gauges), counters))
        registry.register(self._process)
        return encode(registry), content_type

    def render(self, gauges: Iterable[Gauge] = ()) -> str:
        """Prometheus' text format (what a scraper gets without asking for OpenMetrics)."""
        return self.exposition(gauges)[0].decode()


@dataclass(eq=False, slots=True)
class _Scrape:
    """One scrape's values, as prometheus-client collects them."""

    gauges: list[Gauge]
    counters: dict[str, dict[Labels, float]]

    def collect(self) -> Iterator[Metric]:
        for gauge in self.gauges:
            family = GaugeMetricFamily(gauge.name, gauge.help, labels=[k for k, _ in gauge.labels])
            family.add_metric([v for _, v in gauge.labels], float(gauge.value))
            yield family
        for name, help_text in COUNTERS.items():
            family = CounterMetricFamily(name, help_text)
            for labels, value in sorted((self.counters.get(name) or {(): 0}).items()):
                family.add_sample(f"{family.name}_total", dict(labels), value)
            yield family
