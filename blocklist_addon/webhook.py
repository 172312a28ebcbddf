"""POSTing block events to the platform's own endpoint (its moderation queue), off the
request path: the 451 never waits for the webhook.

Events queue in memory (bounded: when the platform's endpoint is down for long, the oldest
events are kept and new ones dropped, counted) and go out one at a time with a few retries
and backoff. An event is the block log's JSON line: ids, kinds and distances, never an
image or a hash. The bearer token comes from a file, never from an option's value.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pathlib
from urllib.parse import urlsplit

import aiohttp

from blocklist_addon.metrics import Metrics

__all__ = ["Webhook"]

log = logging.getLogger(__name__)

#: Events waiting to be sent; beyond this, new ones are dropped (and counted).
QUEUE_SIZE = 1000
ATTEMPTS = 4
TIMEOUT = 5.0
FIRST_BACKOFF = 0.5


class Webhook:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.url = ""
        self._token: str | None = None
        self._queue: asyncio.Queue[bytes] | None = None
        self._task: asyncio.Task[None] | None = None

    def configure(self, url: str, token_file: str) -> None:
        """Raises ValueError with a one-line reason for a bad URL or unreadable token."""
        if url and urlsplit(url).scheme not in ("http", "https"):
            raise ValueError(f"the webhook must be an http(s) URL, not {_shown(url)}")
        token = None
        if token_file:
            try:
                token = pathlib.Path(token_file).read_text().strip() or None
            except OSError as exc:
                raise ValueError(f"cannot read {token_file}: {exc.strerror or exc}") from None
        self.url, self._token = url, token

    def send(self, event: bytes) -> None:
        """Queue one event (a JSON document); never blocks, never raises."""
        if not self.url:
            return
        if self._queue is None:
            self._queue = asyncio.Queue(QUEUE_SIZE)
            self._task = asyncio.create_task(self._run(), name="blocklist webhook")
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.metrics.inc("blocklist_image_webhook_total", result="dropped")

    async def done(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        assert self._queue is not None
        headers = {"Content-Type": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        timeout = aiohttp.ClientTimeout(total=TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
            while True:
                event = await self._queue.get()
                result = await self._post(session, event)
                self.metrics.inc("blocklist_image_webhook_total", result=result)

    async def _post(self, session: aiohttp.ClientSession, event: bytes) -> str:
        reason = ""
        for attempt in range(ATTEMPTS):
            if attempt:
                await asyncio.sleep(FIRST_BACKOFF * 2 ** (attempt - 1))
            try:
                async with session.post(self.url, data=event) as response:
                    if response.status < 300:
                        return "sent"
                    reason = f"HTTP {response.status}"
                    if 400 <= response.status < 500 and response.status not in (408, 429):
                        break  # the platform refuses it: retrying will not help
            except (aiohttp.ClientError, TimeoutError) as exc:
                reason = type(exc).__name__
        log.warning(
            f"blocklist: could not POST a block event to the webhook {_shown(self.url)} "
            f"({reason}); it is in the block log"
        )
        return "failed"


def _shown(url: str) -> str:
    """Scheme, host and port only: a webhook URL may carry a secret in its path or query."""
    try:
        parts = urlsplit(url)
        return (
            f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}/..."
        )
    except ValueError:
        return "(unparsable URL)"
