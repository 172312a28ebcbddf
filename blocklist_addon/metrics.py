"""Counters the addons bump, rendered in Prometheus' text format for ``/metrics``.

Kept deliberately tiny (no client library): a dictionary of labelled counters, and gauges
computed at scrape time by whoever owns the value. Label values never carry list content:
only list names and fixed words.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

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
        "upload) and action (refuse, pass: blocklist_on_error)."
    ),
    "blocklist_render_errors_total": (
        "451 answers that could not be rendered; the minimal 451 was sent instead."
    ),
    "blocklist_tls_total": "TLS client hellos by decision (intercept, pass).",
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
        "Uploaded files checked against the image hash list, by file (image, other)."
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
    """Monotonic counters, bumped from the event loop and from the page-scan thread."""

    def __init__(self) -> None:
        self._counters: dict[str, dict[Labels, float]] = defaultdict(dict)
        self._lock = threading.Lock()

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        if name not in COUNTERS:
            raise KeyError(f"unknown counter {name}")
        key = tuple(sorted(labels.items()))
        with self._lock:  # a read-modify-write: two threads must not lose a count
            series = self._counters[name]
            series[key] = series.get(key, 0) + amount

    def value(self, name: str, **labels: str) -> float:
        """One series' value (0 when never bumped); for tests and the health document."""
        with self._lock:
            return self._counters.get(name, {}).get(tuple(sorted(labels.items())), 0)

    def render(self, gauges: Iterable[Gauge] = ()) -> str:
        lines: list[str] = []
        for gauge in gauges:
            lines += [f"# HELP {gauge.name} {gauge.help}", f"# TYPE {gauge.name} gauge"]
            lines.append(f"{gauge.name}{_labels(gauge.labels)} {_number(gauge.value)}")
        for name, help_text in COUNTERS.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
            with self._lock:
                series = dict(self._counters.get(name) or {(): 0})
            lines += [f"{name}{_labels(k)} {_number(v)}" for k, v in sorted(series.items())]
        return "\n".join(lines) + "\n"


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
