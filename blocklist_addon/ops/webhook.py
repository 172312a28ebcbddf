"""POSTing block events to the platform's own endpoint (its moderation queue), off the
request path: the 451 never waits for the webhook.

Events queue in memory (bounded: when the platform's endpoint is down for long, the oldest
events are kept and new ones dropped, counted) and go out one at a time with a few retries
and backoff. An event is the block log's JSON line: ids, kinds, distances and the hotline's
category of the entry (and the uploader, when blocklist_uploader_header names one), never
an image or a hash. The bearer token comes from a file, never from an option's value, and only
from a private one (blocklist_addon.ops.credentials: not a symbolic link, the proxy user's, mode
0600 or stricter); it is never sent over plain http:// except to loopback.

The sender is one task, supervised: if it dies (a bug, an exception nobody expected, a
cancel from outside) it is logged, counted in ``blocklist_task_restarts_total{task=
"webhook"}`` and started again (with backoff when it keeps dying), and the queued events go
out; the event it was sending is counted as failed (it is in the block log).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from urllib.parse import urlsplit

import aiohttp

from blocklist_addon.ops.credentials import is_loopback, read_token
from blocklist_addon.ops.errors import describe_error
from blocklist_addon.ops.metrics import Metrics

__all__ = ["Webhook"]

log = logging.getLogger(__name__)

#: Events waiting to be sent; beyond this, new ones are dropped (and counted).
QUEUE_SIZE = 1000
ATTEMPTS = 4
TIMEOUT = 5.0
FIRST_BACKOFF = 0.5
#: Longest wait before starting a sender that keeps dying.
MAX_RESTART_BACKOFF = 30.0


class Webhook:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.url = ""
        self._token: str | None = None
        self._queue: asyncio.Queue[bytes] | None = None
        self._task: asyncio.Task[None] | None = None
        self._deaths = 0  # the sender's deaths since it last sent an event
        self._stopping = False

    def configure(self, url: str, token_file: str) -> None:
        """Raises ValueError with a one-line reason for a bad URL, a token file that is not
        private (the message names the file and the fix), or a token bound for plain http://
        beyond loopback."""
        parts = urlsplit(url)
        if url and parts.scheme not in ("http", "https"):
            raise ValueError(f"the webhook must be an http(s) URL, not {_shown(url)}")
        token = read_token(token_file, "webhook token file") if token_file else None
        if token and parts.scheme == "http" and not is_loopback(parts.hostname):
            raise ValueError(
                f"refusing to send the bearer token over plain http:// to {_shown(url)}: "
                "use https:// (plain http:// only to loopback)"
            )
        self.url, self._token = url, token

    def send(self, event: bytes) -> None:
        """Queue one event (a JSON document); never blocks, never raises."""
        if not self.url:
            return
        if self._queue is None:
            self._queue = asyncio.Queue(QUEUE_SIZE)
            self._start()
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.metrics.inc("blocklist_image_webhook_total", result="dropped")

    async def done(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _start(self, delay: float = 0.0) -> None:
        self._task = asyncio.create_task(self._run(delay), name="blocklist webhook")
        self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        """The sender never ends by itself: unless done() stopped it, it died, and a dead
        sender would leave every later event queued and never sent, silently."""
        if self._stopping:
            return
        self._deaths += 1
        delay = min(FIRST_BACKOFF * 2 ** (self._deaths - 1), MAX_RESTART_BACKOFF)
        why = "cancelled" if task.cancelled() else _failure(task.exception())
        self.metrics.inc("blocklist_task_restarts_total", task="webhook")
        log.error(
            f"blocklist: the webhook sender failed ({why}); restarting it in {delay:.1f} s, "
            f"{self._queue.qsize() if self._queue else 0} events waiting"
        )
        self._start(delay)

    async def _run(self, delay: float) -> None:
        assert self._queue is not None
        if delay:
            await asyncio.sleep(delay)
        headers = {"Content-Type": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        timeout = aiohttp.ClientTimeout(total=TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
            while True:
                event = await self._queue.get()
                result = "failed"  # unless _post returns: the sender died sending it
                try:
                    result = await self._post(session, event)
                finally:
                    self.metrics.inc("blocklist_image_webhook_total", result=result)
                if result == "sent":
                    self._deaths = 0

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


def _failure(exc: BaseException | None) -> str:
    """Where the sender died; never the message (it may quote the webhook's URL)."""
    return describe_error(exc) if exc is not None else "returned"


def _shown(url: str) -> str:
    """Scheme, host and port only: a webhook URL may carry a secret in its path or query."""
    try:
        parts = urlsplit(url)
        return (
            f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}/..."
        )
    except ValueError:
        return "(unparsable URL)"
