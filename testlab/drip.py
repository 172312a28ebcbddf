"""A feed server's body that never ends: a byte every 50 ms, each read succeeding, until the
test stops it (the slowloris a sync's total deadline, and its lock, must outlast)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from aiohttp import web

#: Seconds between two bytes: well under any read timeout a test sets.
PACE = 0.05


def drip(stop: asyncio.Event) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """An aiohttp handler that writes one byte every ``PACE`` seconds until ``stop`` is set."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        while not stop.is_set():
            await response.write(b"e")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), PACE)
        return response

    return handler
