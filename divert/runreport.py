"""What ``blocklist-divert run`` reports: the status file (JSON) and the metrics file
(Prometheus text for node_exporter's textfile collector), rewritten every tick.

The address counts are what the data plane was last read holding (the kernel's sets, BIRD's
routes, ExaBGP's adj-rib-out), not what ``run`` last applied: a table
reloaded empty behind its back shows as 0 until it is repaired. ``in_sync`` is 0 while the
plane differs from what ``run`` wants it to hold, and also while ``run`` cannot know what
that is (the store not read yet); ``apply_errors_total`` counts failed applies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from divert.dataset import DiversionSet

if TYPE_CHECKING:
    from divert.run import Runner

__all__ = ["METRICS", "metrics", "status"]

#: Every metric ``run`` exports, with its type and help (a dashboard or alert names these).
METRICS = {
    "blocklist_divert_withdrawn": (
        "gauge",
        "1 while the sets are emptied because the proxy is ill (diverted traffic flows "
        "unfiltered).",
    ),
    "blocklist_divert_withdrawals_total": (
        "counter",
        "Times the sets were emptied for ill health.",
    ),
    "blocklist_divert_addresses": (
        "gauge",
        "Addresses the data plane holds (read back from it), by family.",
    ),
    "blocklist_divert_in_sync": (
        "gauge",
        "1 when the data plane was last read holding what run wants it to hold.",
    ),
    "blocklist_divert_apply_errors_total": (
        "counter",
        "Applies to the data plane that failed (nft, birdc or ExaBGP refused).",
    ),
    "blocklist_divert_repairs_total": (
        "counter",
        "Times the data plane was found changed behind run's back and repaired.",
    ),
    "blocklist_divert_store_read": (
        "gauge",
        "1 once run has read a diversion set from the store (0: the data plane is left as found).",
    ),
    "blocklist_divert_from_lastgood": (
        "gauge",
        "1 while the data plane holds run's local copy of the last set (the store was "
        "unreachable and the plane empty at start).",
    ),
    "blocklist_divert_resolutions_total": ("counter", "Resolutions run, by outcome."),
    "blocklist_divert_active_version": (
        "gauge",
        "The store's active diversion set version.",
    ),
}


def status(runner: Runner) -> dict[str, Any]:
    """The status file's document."""
    applied, held = runner.applied, runner.held
    return {
        "phase": str(runner.gate.phase),
        "since": runner.phase_since,
        "proxy": {
            "health_url": runner.config.health_url,
            "healthy": runner.healthy,
            "reason": runner.health_reason,
            "failing_since": runner.gate.failing_since,
        },
        "withdraw_after": runner.config.withdraw_after,
        "data_plane": runner.data_plane,
        "withdrawals": runner.withdrawals,
        # The last read of the store: "down" while it fails (the sets stay as they are).
        "store": "down" if runner.store_down else "up",
        "store_error": runner.store_error or None,
        "active_version": runner.version,
        # What identifies the set: a store that lost its data numbers a new set like the last.
        "active_checksum": runner.checksum,
        "applied": None
        if applied is None
        else {
            "ipv4": len(applied.ipv4),
            "ipv6": len(applied.ipv6),
            "checksum": applied.checksum,
            "at": runner.applied_at,
        },
        "held": None
        if held is None
        else {"ipv4": len(held.ipv4), "ipv6": len(held.ipv6), "at": runner.verified_at},
        "in_sync": runner.in_sync,
        "apply_errors": runner.apply_errors,
        "repairs": runner.repairs,
        "from_lastgood": runner.from_lastgood,
        "last_resolve": runner.last_resolve,
        "updated_at": runner.clock(),
    }


def metrics(runner: Runner) -> str:
    """The metrics file's text."""
    held = runner.held or DiversionSet.EMPTY
    values: dict[str, list[tuple[str, float]]] = {
        "blocklist_divert_withdrawn": [("", int(str(runner.gate.phase) == "withdrawn"))],
        "blocklist_divert_withdrawals_total": [("", runner.withdrawals)],
        "blocklist_divert_addresses": [
            ('{family="ipv4"}', len(held.ipv4)),
            ('{family="ipv6"}', len(held.ipv6)),
        ],
        "blocklist_divert_in_sync": [("", int(runner.in_sync))],
        "blocklist_divert_apply_errors_total": [("", runner.apply_errors)],
        "blocklist_divert_repairs_total": [("", runner.repairs)],
        "blocklist_divert_store_read": [("", int(runner.active is not None))],
        "blocklist_divert_from_lastgood": [("", int(runner.from_lastgood))],
        "blocklist_divert_resolutions_total": [
            (f'{{outcome="{k}"}}', v) for k, v in runner.resolutions.items()
        ],
        "blocklist_divert_active_version": [("", runner.version or 0)],
    }
    lines = []
    for name, (kind, text) in METRICS.items():
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        lines += [f"{name}{labels} {value}" for labels, value in values[name]]
    return "\n".join(lines) + "\n"
