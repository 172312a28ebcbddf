"""Downloading one feed: conditional, authenticated, bounded, retried, verified.

The sync worker runs from cron every few minutes, so the common case is "nothing changed"
and costs one conditional request. Everything that can go wrong (the feed down, slow,
unauthenticated, truncated, too big, corrupted) ends in one FetchError whose text is fit
for cron mail: what failed and where, never a credential, the URL without its userinfo
and query string (where signed URLs keep their secrets).

The parts live beside this entry point: ``fetch_types`` (source, state, result),
``fetch_errors`` (FetchError and the wording of its messages), ``fetch_file`` (file://),
``fetch_http`` (http(s)://: conditional requests, retries, bounded bodies), ``fetch_auth``
(credentials and TLS) and ``fetch_checksum`` (the body against its SHA-256).

Parsing and validating the bytes is ``sync.feeds``' job, not this module's.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import aiohttp

from blocklist_addon.ops.progress import NO_PROGRESS, Progress
from sync.fetch.errors import FetchError
from sync.fetch.file import fetch_file
from sync.fetch.http import fetch_http
from sync.fetch.types import FeedSource, FetchResult, FetchState

__all__ = ["FeedSource", "FetchError", "FetchResult", "FetchState", "fetch_feed"]


async def fetch_feed(
    source: FeedSource,
    state: FetchState,
    *,
    session: aiohttp.ClientSession | None = None,
    progress: Progress = NO_PROGRESS,
) -> FetchResult:
    """Download ``source`` unless it is unchanged since ``state``.

    Raises FetchError for every failure, after the configured retries for transient ones.
    ``progress`` gets a "downloading" (file://: "reading") phase counting bytes.
    """
    try:
        scheme = urlsplit(source.url).scheme.lower()
    except ValueError:  # "http://[bad": a ValueError out of every later step too
        raise FetchError(f"feed {source.name}: invalid feed URL") from None
    if scheme == "file":
        if source.checksum_header:
            raise FetchError(f"feed {source.name}: checksum_header needs an http(s) feed URL")
        return await asyncio.to_thread(fetch_file, source, state, progress)
    if scheme not in ("http", "https"):
        raise FetchError(
            f"feed {source.name}: unsupported URL scheme {scheme or '(none)'!r} "
            "(https://, http:// or file:///)"
        )
    if session is not None:
        return await fetch_http(source, state, session, progress)
    async with aiohttp.ClientSession() as own:
        return await fetch_http(source, state, own, progress)
