"""The proxy's health as ``blocklist-divert run`` sees it: one probe of /healthz, and the gate
that turns a run of probes into the phase (divert, or withdraw after ``withdraw_after``
seconds of ill health). The gate is pure, so it is tested with a table."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass

import aiohttp

__all__ = ["SERVING", "HealthGate", "Phase", "poll_interval", "probe_health"]

#: /healthz states of a proxy that serves traffic (DESIGN "Failure behaviour").
SERVING = {"ok", "degraded", "stale"}


class Phase(enum.StrEnum):
    STARTING = "starting"  # no health answer yet: the sets are left as they are
    DIVERTING = "diverting"  # the proxy is healthy: the sets hold the active set
    WITHDRAWN = "withdrawn"  # the proxy failed for withdraw_after seconds: the sets are empty


@dataclass
class HealthGate:
    """Turns health observations into the phase; pure, so it is tested with a table."""

    withdraw_after: float
    phase: Phase = Phase.STARTING
    failing_since: float | None = None

    def observe(self, healthy: bool, now: float) -> Phase | None:
        """Record one health check made at ``now``; the new phase when it changes."""
        if healthy:
            self.failing_since = None
            if self.phase is Phase.DIVERTING:
                return None
            self.phase = Phase.DIVERTING
            return self.phase
        if self.failing_since is None:
            self.failing_since = now
        if self.phase is not Phase.WITHDRAWN and now - self.failing_since >= self.withdraw_after:
            self.phase = Phase.WITHDRAWN
            return self.phase
        return None


async def probe_health(
    session: aiohttp.ClientSession, url: str, timeout: float
) -> tuple[bool, str]:
    """(healthy, why) for one GET of the proxy's health endpoint."""
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            body = await response.read()
    except TimeoutError:
        return False, f"no answer within {timeout:g} s"
    except aiohttp.ClientConnectorError as exc:
        return False, f"no answer ({exc.os_error.strerror or exc.os_error})"
    except (aiohttp.ClientError, OSError) as exc:
        return False, f"no answer ({type(exc).__name__}: {exc})"[:200]
    try:
        status = str(json.loads(body).get("status", "?"))
    except (ValueError, AttributeError):
        status = "?"
    if response.status == 200 or (response.status == 503 and status in SERVING):
        return True, status
    return False, f"HTTP {response.status} ({status})"


def poll_interval(withdraw_after: float) -> float:
    """How often health is checked: ten times per withdraw_after, between 0.2 and 5 s."""
    return min(max(withdraw_after / 10, 0.2), 5.0)
