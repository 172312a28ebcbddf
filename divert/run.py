"""``blocklist-divert run``: keep the data plane's diversion current, and withdraw it while
the proxy is ill (DESIGN "Two-stage diversion": proxy health).

The data plane (``divert.planes``, ``data_plane`` in the config or ``--data-plane``) is the
gateway's nft sets, BIRD's static routes (``birdc configure``) or ExaBGP's announcements
(``run`` is then ExaBGP's API process); the health and withdraw logic below is the same for
all three. Where this docstring says "the sets", read "the routes" for BGP.

One long-running process on the gateway (``deploy/systemd/blocklist-divert.service``), or
under ExaBGP (``deploy/exabgp.conf``):

- resolves every ``interval`` seconds (the same resolution as ``blocklist-divert resolve``,
  in this process), which publishes a new set to the store when the gates let it;
- follows the store's active set and applies it to nftables (one transaction) when it
  changes, and again after every resolution (which also repairs sets emptied by hand or a
  table reloaded without its addresses);
- polls the proxy's ``health_url``. When it has failed for ``withdraw_after`` seconds the
  sets are emptied: diverted traffic then flows to the origins directly, unfiltered. A dead
  proxy must not black-hole the third-party sites that share an address with a listed
  host; the price is that listed content is reachable until the proxy is back, so this is
  said loudly (an ERROR log line, the status file, the metrics file);
- refills the sets as soon as the proxy answers healthy again.

The proxy counts as healthy when /healthz answers 200, or 503 with status "stale" (an old
list is still enforced: withdrawing would enforce nothing at all). "starting", "no-list"
(the proxy answers every request with an error) and no answer within the timeout are ill
health. Until the first health answer the sets are left as they are.

Stopping ``run`` leaves the sets (and BIRD's routes) as they are, so a restart opens no gap;
to stop diverting, empty them (``nft flush set inet blocklist divert4``, and ``divert6``) or
delete the table. Under ExaBGP, ``run`` stops with ExaBGP, whose session then closes and
withdraws every route.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import functools
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from blocklist_addon.store import Store, StoreError, open_store
from divert import DivertError
from divert.config import DATA_PLANES, DivertConfig
from divert.dataset import DiversionSet
from divert.exabgp import ExaBgpPlane, read_api
from divert.planes import DataPlane, make_plane

__all__ = ["HealthGate", "Phase", "Runner", "probe_health"]

log = logging.getLogger("blocklist-divert")

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


@dataclass
class Runner:
    """The loop of ``run``; its collaborators are passed in so tests can run it in a network
    namespace (``apply`` with an nft command inside it) or with a test DNS server."""

    config: DivertConfig
    store: Store
    resolve: Callable[[], Awaitable[str]] | None  # one resolution: its outcome, or DivertError
    apply: Callable[[DiversionSet], None]  # the data plane's apply (divert.planes)
    health: Callable[[], Awaitable[tuple[bool, str]]]
    what: str = "the diversion sets"  # what apply fills, for log lines
    data_plane: str = "nft"
    status_file: Path | None = None
    metrics_file: Path | None = None
    clock: Callable[[], float] = time.time
    gate: HealthGate = field(init=False)
    active: DiversionSet | None = None  # the store's active set, when there is one
    version: int | None = None
    applied: DiversionSet | None = None  # what this process last put into the sets
    applied_at: float | None = None
    withdrawals: int = 0
    resolutions: dict[str, int] = field(default_factory=lambda: {"ok": 0, "failed": 0})
    last_resolve: dict[str, Any] | None = None
    healthy: bool | None = None  # the last health check's verdict
    phase_since: float | None = None  # when the phase last changed
    health_reason: str = ""
    _refresh: bool = False
    _said: str = ""  # the last error line said, so a failing store or nft is not repeated

    def __post_init__(self) -> None:
        self.gate = HealthGate(self.config.withdraw_after)

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop`` is set: health and the store every poll, resolve every interval."""
        resolver = asyncio.create_task(self._resolve_loop(stop)) if self.resolve else None
        try:
            while not stop.is_set():
                await self.tick()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), poll_interval(self.config.withdraw_after))
        finally:
            if resolver:
                resolver.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await resolver

    async def tick(self) -> None:
        now = self.clock()
        self.healthy, self.health_reason = await self.health()
        self._health_changed(self.healthy, self.gate.observe(self.healthy, now), now)
        await self._follow_store()
        await self._converge()
        self._write_status()

    # -- health ------------------------------------------------------------------------------

    def _health_changed(self, healthy: bool, change: Phase | None, now: float) -> None:
        url, after = self.config.health_url, self.config.withdraw_after
        if change is not None:
            self.phase_since = now
        if change is Phase.WITHDRAWN:
            self.withdrawals += 1
            log.error(
                "WITHDRAWN: the proxy at %s has failed its health check for %.0f s (%s): %s "
                "are withdrawn and diverted traffic now goes to the origins directly, "
                "UNFILTERED, until the proxy is healthy again",
                url,
                after,
                self.health_reason,
                self.what,
            )
        elif change is Phase.DIVERTING and self.withdrawals:
            log.warning("the proxy at %s is healthy again (%s): diverting", url, self.health_reason)
        elif change is Phase.DIVERTING:
            log.info("the proxy at %s is healthy (%s): diverting", url, self.health_reason)
        elif (
            not healthy
            and self.gate.failing_since == now
            and self.gate.phase is not (Phase.WITHDRAWN)
        ):
            log.warning(
                "the proxy at %s failed its health check (%s); diversion stops if it still "
                "fails in %.0f s",
                url,
                self.health_reason,
                after,
            )

    # -- the set -------------------------------------------------------------------------

    async def _follow_store(self) -> None:
        try:
            info = await self.store.active()
            if info is None or info.version == self.version:
                return
            loaded = await self.store.load_active()
            if loaded is None:
                return
            info, data = loaded
            self.active, self.version = DiversionSet.from_bytes(data), info.version
        except (StoreError, DivertError) as exc:
            self._say(f"cannot read the active diversion set: {exc}; keeping the sets as they are")
            return
        log.info(
            "active diversion set: version %d, %d IPv4 and %d IPv6 addresses",
            self.version,
            len(self.active.ipv4),
            len(self.active.ipv6),
        )

    def target(self) -> DiversionSet | None:
        """What the sets should hold now; None: leave them as they are."""
        if self.gate.phase is Phase.WITHDRAWN:
            return DiversionSet.EMPTY
        if self.gate.phase is Phase.DIVERTING:
            return self.active or DiversionSet.EMPTY
        return None

    async def _converge(self) -> None:
        target = self.target()
        if target is None:
            return
        if not self._refresh and self.applied and self.applied.checksum == target.checksum:
            return
        try:
            await asyncio.to_thread(self.apply, target)
        except DivertError as exc:
            self._say(f"cannot apply the diversion set: {exc}")
            return
        changed = self.applied is None or self.applied.checksum != target.checksum
        self.applied, self.applied_at, self._refresh, self._said = target, self.clock(), False, ""
        if changed:
            log.info(
                "applied %d IPv4 and %d IPv6 addresses to %s (%s)",
                len(target.ipv4),
                len(target.ipv6),
                self.what,
                self.gate.phase,
            )

    # -- resolution --------------------------------------------------------------------------

    async def _resolve_loop(self, stop: asyncio.Event) -> None:
        assert self.resolve is not None
        while not stop.is_set():
            started = self.clock()
            try:
                outcome, ok = await self.resolve(), True
            except (DivertError, StoreError) as exc:
                outcome, ok = str(exc), False
            except Exception as exc:  # a bug must not stop the health watch
                log.exception("resolve failed unexpectedly")
                outcome, ok = f"unexpected error: {type(exc).__name__}", False
            self.resolutions["ok" if ok else "failed"] += 1
            self.last_resolve = {"at": started, "ok": ok, "outcome": outcome}
            if ok:
                log.info("resolve: %s", outcome)
            else:
                log.error("resolve failed: %s; the active set stays", outcome)
            self._refresh = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.config.interval)

    # -- reporting -------------------------------------------------------------------------

    def _say(self, line: str) -> None:
        if line != self._said:
            log.error("%s", line)
            self._said = line

    def status(self) -> dict[str, Any]:
        applied = self.applied
        return {
            "phase": str(self.gate.phase),
            "since": self.phase_since,
            "proxy": {
                "health_url": self.config.health_url,
                "healthy": self.healthy,
                "reason": self.health_reason,
                "failing_since": self.gate.failing_since,
            },
            "withdraw_after": self.config.withdraw_after,
            "data_plane": self.data_plane,
            "withdrawals": self.withdrawals,
            "active_version": self.version,
            "applied": None
            if applied is None
            else {
                "ipv4": len(applied.ipv4),
                "ipv6": len(applied.ipv6),
                "checksum": applied.checksum,
                "at": self.applied_at,
            },
            "last_resolve": self.last_resolve,
            "updated_at": self.clock(),
        }

    def metrics(self) -> str:
        applied = self.applied or DiversionSet.EMPTY
        withdrawn = int(self.gate.phase is Phase.WITHDRAWN)
        lines = [
            "# HELP blocklist_divert_withdrawn 1 while the sets are emptied because the proxy "
            "is ill (diverted traffic flows unfiltered).",
            "# TYPE blocklist_divert_withdrawn gauge",
            f"blocklist_divert_withdrawn {withdrawn}",
            "# HELP blocklist_divert_withdrawals_total Times the sets were emptied for ill health.",
            "# TYPE blocklist_divert_withdrawals_total counter",
            f"blocklist_divert_withdrawals_total {self.withdrawals}",
            "# HELP blocklist_divert_addresses Addresses in the sets, by family.",
            "# TYPE blocklist_divert_addresses gauge",
            f'blocklist_divert_addresses{{family="ipv4"}} {len(applied.ipv4)}',
            f'blocklist_divert_addresses{{family="ipv6"}} {len(applied.ipv6)}',
            "# HELP blocklist_divert_resolutions_total Resolutions run, by outcome.",
            "# TYPE blocklist_divert_resolutions_total counter",
            *(
                f'blocklist_divert_resolutions_total{{outcome="{k}"}} {v}'
                for k, v in self.resolutions.items()
            ),
            "# HELP blocklist_divert_active_version The store's active diversion set version.",
            "# TYPE blocklist_divert_active_version gauge",
            f"blocklist_divert_active_version {self.version or 0}",
        ]
        return "\n".join(lines) + "\n"

    def _write_status(self) -> None:
        for path, text in (
            (self.status_file, lambda: json.dumps(self.status(), indent=2) + "\n"),
            (self.metrics_file, self.metrics),
        ):
            if path is None:
                continue
            try:
                _write_atomic(path, text())
            except OSError as exc:
                self._say(f"cannot write {path}: {exc.strerror or exc}")


def _write_atomic(path: Path, text: str) -> None:
    """Readers see the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """``blocklist-divert run``'s command line."""
    parser = sub.add_parser(
        "run",
        parents=[common],
        help="keep the nft sets or BGP routes current; withdraw them while the proxy is ill",
        description="Long-running: keep the data plane (nft sets on this gateway, BIRD's "
        "static routes, or ExaBGP's announcements) holding the store's active diversion set, "
        "and withdraw it when the proxy's health_url has failed for withdraw_after seconds "
        "(diverted traffic then flows directly, unfiltered); restore it when the proxy is "
        "healthy again. With --data-plane exabgp, ExaBGP starts this command (its process "
        "stanza, deploy/exabgp.conf): commands go to stdout, logs to stderr. Settings: "
        "interval, health_url, withdraw_after, data_plane, nft_table, next_hop, community, "
        "bird_dir, bird_socket in the config.",
    )
    parser.add_argument(
        "--data-plane",
        choices=DATA_PLANES,
        help="what to keep current (default: data_plane in the config, else nft)",
    )
    parser.add_argument(
        "--status-file",
        type=Path,
        metavar="FILE",
        help="JSON state, rewritten every check (phase, proxy health, applied set)",
    )
    parser.add_argument(
        "--metrics-file",
        type=Path,
        metavar="FILE",
        help="Prometheus text (blocklist_divert_withdrawn, ...) for node_exporter's "
        "textfile collector",
    )


async def cmd_run(
    config: DivertConfig,
    args: argparse.Namespace,
    resolve: Callable[[], Awaitable[str]] | None = None,
) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    kind = getattr(args, "data_plane", None) or config.data_plane
    stdout = sys.stdout
    if kind == "exabgp":
        # stdout is ExaBGP's command pipe: nothing else may ever be written to it.
        sys.stdout = sys.stderr
    try:
        plane = make_plane(config, kind=kind, out=stdout if kind == "exabgp" else None)
        async with open_store(config.store, keep=config.keep_versions, namespace="divert") as store:
            return await run_command(
                config,
                store,
                resolve,
                status_file=getattr(args, "status_file", None),
                metrics_file=getattr(args, "metrics_file", None),
                plane=plane,
                api_in=sys.stdin if kind == "exabgp" else None,
            )
    finally:
        sys.stdout = stdout


async def run_command(
    config: DivertConfig,
    store: Store,
    resolve: Callable[[], Awaitable[str]] | None = None,
    *,
    status_file: Path | None = None,
    metrics_file: Path | None = None,
    nft: str | list[str] = "nft",
    plane: DataPlane | None = None,
    api_in: Any = None,
) -> int:
    """``blocklist-divert run`` until SIGTERM or SIGINT (exit 0), or, under ExaBGP, until
    ExaBGP shuts down (``api_in``: ExaBGP's pipe to this process)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    plane = plane or make_plane(config, nft=nft)
    if api_in is not None and isinstance(plane, ExaBgpPlane):

        def stopped(why: str) -> None:
            log.info("%s: stopping", why)
            loop.call_soon_threadsafe(stop.set)

        threading.Thread(
            target=read_api, args=(api_in, plane, stopped), name="exabgp-api", daemon=True
        ).start()
    timeout = min(max(config.withdraw_after / 3, 0.5), 5.0)
    async with aiohttp.ClientSession() as session:
        runner = Runner(
            config,
            store,
            resolve,
            plane.apply,
            functools.partial(probe_health, session, config.health_url, timeout),
            what=plane.what,
            data_plane=plane.name,
            status_file=status_file,
            metrics_file=metrics_file,
        )
        log.info(
            "running: %s; resolve every %.0f s, health %s every %.1f s, withdraw after %.0f s",
            plane.what,
            config.interval,
            config.health_url,
            poll_interval(config.withdraw_after),
            config.withdraw_after,
        )
        await runner.run(stop)
    if plane.name == "exabgp":
        log.info("stopped")
    else:
        log.info("stopped; %s are left as they are", plane.what)
    return 0
