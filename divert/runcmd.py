"""``blocklist-divert run``'s command line and process: the data plane, the lock that keeps
one ``run`` per plane (``divert.runlock``), ExaBGP's pipe, signals; the loop itself is
``divert.run.Runner``."""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from blocklist_addon.lists.store import Store, open_store
from divert import lastgood, runlock
from divert.config import DATA_PLANES, DivertConfig
from divert.health import poll_interval, probe_health
from divert.planes import DataPlane, make_plane
from divert.planes.exabgp import ExaBgpPlane, read_api
from divert.run import Runner

__all__ = ["add_parser", "cmd_run", "run_command"]

log = logging.getLogger("blocklist-divert")


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
        async with (
            open_store(config.store, keep=config.keep_versions, namespace="divert") as store,
            open_store(config.store, keep=config.keep_versions) as lists,
        ):
            return await run_command(
                config,
                store,
                resolve,
                lists=lists if resolve is not None else None,
                status_file=getattr(args, "status_file", None),
                metrics_file=getattr(args, "metrics_file", None),
                plane=plane,
                api_in=sys.stdin if kind == "exabgp" else None,
                store_label=getattr(args, "store_label", None),
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
    store_label: str | None = None,
    lists: Store | None = None,
) -> int:
    """``blocklist-divert run`` until SIGTERM or SIGINT (exit 0), or, under ExaBGP, until
    ExaBGP shuts down (``api_in``: ExaBGP's pipe to this process)."""
    plane = plane or make_plane(config, nft=nft)
    if plane.lock is None:
        return await _run(
            config, store, resolve, plane, status_file, metrics_file, api_in, store_label, lists
        )
    with runlock.hold(runlock.lock_path(config, plane.lock), plane.what):
        return await _run(
            config, store, resolve, plane, status_file, metrics_file, api_in, store_label, lists
        )


async def _run(
    config: DivertConfig,
    store: Store,
    resolve: Callable[[], Awaitable[str]] | None,
    plane: DataPlane,
    status_file: Path | None,
    metrics_file: Path | None,
    api_in: Any,
    store_label: str | None = None,
    lists: Store | None = None,
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
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
            plane.read,
            what=plane.what,
            data_plane=plane.name,
            status_file=status_file,
            metrics_file=metrics_file,
            lastgood=lastgood.path(config, plane.name),
            lists=lists,
        )
        log.info(
            "running: %s from store %s; resolve every %.0f s, health %s every %.1f s, "
            "withdraw after %.0f s",
            plane.what,
            store_label or store.url,
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
