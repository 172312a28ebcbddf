"""Uploads checked against the image hash list: a known abuse image never reaches the site.

Whenever the store holds an active hash list (``ActiveList`` following its "hashes"
namespace, with its own last-known-good copy), every POST, PUT and PATCH the proxy sees
(reverse mode in front of a platform; forward mode for what leaves a school, where the
traffic is decrypted) is held until checked: each part of a multipart form, or the whole
body, by exact hashes (any file) and, when its bytes are an image, by PDQ of its first
frames. A match is refused with 451 before a byte goes upstream, written to the block log
(entry id, hash kind, distance: never the image or a hash) and POSTed to the optional
webhook. Images too large, broken or slow to decode are passed and logged, or refused with
413/422, as ``blocklist_image_uncheckable`` says. Nothing is written to disk.

Decoding and hashing (about 15 ms for a 1-megapixel JPEG) run in a pool of one thread per
core, so the event loop keeps serving other connections and at most that many images are
in memory at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mitmproxy import ctx, http
from mitmproxy.exceptions import OptionsError

from blocklist_addon import uploads
from blocklist_addon.active import ActiveList, ListKind
from blocklist_addon.blocklog import record
from blocklist_addon.enforce import UNCHECKED, Enforcer, respond
from blocklist_addon.hashes.kinds import NAMESPACE
from blocklist_addon.hashes.snapshot import HashSnapshot
from blocklist_addon.metrics import Metrics
from blocklist_addon.webhook import Webhook

if TYPE_CHECKING:
    from blocklist_addon.hashes import HashList, HashMatch

__all__ = ["ImageGuard"]

log = logging.getLogger(__name__)

_UPLOAD_METHODS = frozenset({"POST", "PUT", "PATCH"})
#: Bodies without an image and smaller than this are hashed on the event loop (microseconds).
INLINE_BYTES = 64 * 1024
#: Statuses for an upload refused because it could not be checked, by reason.
_UNCHECKED_STATUS = {"too-large": 413}


@dataclass
class _Outcome:
    match: HashMatch | None = None
    unchecked: list[str] = field(default_factory=list)
    images: int = 0
    files: int = 0
    failed: bool = False  # the check raised, and blocklist_on_error says refuse


@dataclass(eq=False)
class ImageGuard:
    metrics: Metrics
    enforcer: Enforcer
    # Options, read in configure (these defaults are the options' own).
    threshold: int = field(default=31, init=False)
    min_quality: int = field(default=50, init=False)
    dihedral: bool = field(default=True, init=False)
    max_bytes: int = field(default=32 * 1024 * 1024, init=False)
    max_pixels: int = field(default=16 * 1024 * 1024, init=False)
    max_frames: int = field(default=4, init=False)
    max_seconds: float = field(default=2.0, init=False)
    uncheckable: str = field(default="pass", init=False)

    def __post_init__(self) -> None:
        self.hashes = ActiveList(
            self.metrics,
            kind=ListKind(
                what="hash list ",
                namespace=NAMESPACE,
                parse=HashSnapshot.from_bytes,
                wrap=self._wrap,
                gauge="blocklist_hashes",
                required=False,
                labels={"kind": "hashes"},
            ),
        )
        self.webhook = Webhook(self.metrics)
        self._pool = ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="blocklist-image")

    def load(self, loader) -> None:
        loader.add_option(
            "blocklist_image_threshold",
            int,
            31,
            "PDQ Hamming distance (of 256 bits) within which an uploaded image matches a "
            "listed hash. 31 is the published recommendation; lower is stricter.",
        )
        loader.add_option(
            "blocklist_image_min_quality",
            int,
            50,
            "PDQ quality (0-100) below which an image is matched exactly only (plain images "
            "have unreliable hashes).",
        )
        loader.add_option(
            "blocklist_image_dihedral",
            bool,
            True,
            "Also match the 8 rotations and mirror images of an uploaded image (same cost).",
        )
        loader.add_option(
            "blocklist_image_max_bytes",
            int,
            32 * 1024 * 1024,
            "Largest upload body checked against the image hash list; a larger one cannot "
            "be checked (see blocklist_image_uncheckable).",
        )
        loader.add_option(
            "blocklist_image_max_pixels",
            int,
            16 * 1024 * 1024,
            "Most pixels of one decoded frame (JPEGs are decoded scaled down first, so "
            "large photos pass); a larger image cannot be checked by PDQ.",
        )
        loader.add_option(
            "blocklist_image_max_frames",
            int,
            4,
            "Frames of an animated image (GIF, WebP, APNG, TIFF pages, HEIF sequences) checked,"
            " from the first.",
        )
        loader.add_option(
            "blocklist_image_max_ms",
            int,
            2000,
            "Decoding time in milliseconds after which no further frame of an image is "
            "decoded, and beyond which the proxy stops waiting for a check.",
        )
        loader.add_option(
            "blocklist_image_uncheckable",
            str,
            "pass",
            "An uploaded image the proxy cannot check (too large, truncated, undecodable, "
            "too slow): pass (and log and count it) or refuse (413 when too large, 422 "
            "otherwise). Exact hashes are checked either way.",
            choices=["pass", "refuse"],
        )
        loader.add_option(
            "blocklist_image_webhook",
            str,
            "",
            "URL to POST each refused image's block event to (JSON: list, entry, kind, "
            "distance, reference, time; never the image or a hash), e.g. the platform's "
            "moderation queue. Sent in the background with retries. Empty: off.",
        )
        loader.add_option(
            "blocklist_image_webhook_token_file",
            str,
            "",
            "File holding a bearer token for the webhook (sent as Authorization: Bearer).",
        )

    def configure(self, updated: set[str]) -> None:
        o = ctx.options
        self.threshold = o.blocklist_image_threshold
        self.min_quality = o.blocklist_image_min_quality
        self.dihedral = o.blocklist_image_dihedral
        self.max_bytes = o.blocklist_image_max_bytes
        self.max_pixels = o.blocklist_image_max_pixels
        self.max_frames = o.blocklist_image_max_frames
        self.max_seconds = o.blocklist_image_max_ms / 1000
        self.uncheckable = o.blocklist_image_uncheckable
        if not 0 <= self.threshold <= 128:
            raise OptionsError("blocklist_image_threshold must be between 0 and 128")
        try:
            self.webhook.configure(o.blocklist_image_webhook, o.blocklist_image_webhook_token_file)
        except ValueError as exc:
            raise OptionsError(f"blocklist_image_webhook: {exc}") from None
        if self.hashes.blocklist is not None:
            self._apply(self.hashes.blocklist)  # type: ignore[arg-type]

    async def running(self) -> None:
        await self.hashes.running()

    async def done(self) -> None:
        await self.webhook.done()
        await self.hashes.done()
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- the list --------------------------------------------------------------------------

    def _wrap(self, snapshot: HashSnapshot) -> HashList:
        from blocklist_addon.hashes import HashList

        return self._apply(HashList(snapshot))

    def _apply(self, hashlist: HashList) -> HashList:
        from blocklist_addon.hashes import Limits

        hashlist.threshold = self.threshold
        hashlist.min_quality = self.min_quality
        hashlist.dihedral = self.dihedral
        hashlist.limits = Limits(self.max_pixels, self.max_frames, self.max_seconds)
        return hashlist

    def loaded(self) -> bool:
        return self.hashes.info is not None

    # -- traffic ---------------------------------------------------------------------------

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or not self._guarded(flow):
            return
        length = flow.request.headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_bytes:
            self._unchecked(flow, ["too-large"])
            if flow.response is None:
                flow.request.stream = True  # passes, without sitting in memory
        else:
            # Held until checked, even when the URL upload check (a lower limit) would
            # have let it stream past.
            flow.request.stream = False

    def request(self, flow: http.HTTPFlow) -> Coroutine[None, None, None] | None:
        """Check a buffered upload; one holding an image (or a large one) is checked off
        the event loop: the hook then returns a coroutine, which mitmproxy awaits before
        anything is sent upstream."""
        request = flow.request
        if request.stream or flow.response is not None or not self._guarded(flow):
            return None
        hashlist = self.hashes.blocklist
        if hashlist is None or not request.raw_content:
            return None
        try:
            body = request.get_content() or b""
        except ValueError:  # a broken Content-Encoding: hash what was sent
            body = request.raw_content
        if len(body) > self.max_bytes:
            self._unchecked(flow, ["too-large"])
            return None
        parts = list(uploads.files(body, request.headers.get("content-type", "")))
        from blocklist_addon.hashes import sniff

        if sum(map(len, parts)) <= INLINE_BYTES and not any(map(sniff, parts)):
            self._decide(flow, self._check(hashlist, parts))  # type: ignore[arg-type]
            return None
        return self._check_off_loop(flow, hashlist, parts)  # type: ignore[arg-type]

    async def _check_off_loop(
        self, flow: http.HTTPFlow, hashlist: HashList, parts: list[bytes]
    ) -> None:
        loop = asyncio.get_running_loop()
        # The decoder stops starting frames after max_seconds; this bounds the wait for
        # one that never returns (the thread finishes on its own; the pool bounds them).
        deadline = self.max_seconds * max(1, len(parts)) + 5.0
        try:
            outcome = await asyncio.wait_for(
                loop.run_in_executor(self._pool, self._check, hashlist, parts), deadline
            )
        except TimeoutError:
            outcome = _Outcome(unchecked=["too-slow"])
        self._decide(flow, outcome)

    def _check(self, hashlist: HashList, parts: list[bytes]) -> _Outcome:
        """Runs in a worker thread for images: pure, touches no flow."""
        started = time.perf_counter()
        outcome = _Outcome()
        try:
            for part in parts:
                if not part:
                    continue
                checked = hashlist.check(part)
                outcome.files += 1
                outcome.images += checked.image is not None
                if checked.unchecked:
                    outcome.unchecked.append(checked.unchecked)
                if checked.match is not None:
                    outcome.match = checked.match
                    break
        except Exception as exc:  # an internal error: blocklist_on_error decides
            outcome.failed = self.enforcer.check_failed("image", exc)
        self.metrics.inc("blocklist_image_check_seconds_total", time.perf_counter() - started)
        return outcome

    def _decide(self, flow: http.HTTPFlow, outcome: _Outcome) -> None:
        if flow.response is not None:
            return  # the client went away, or another concern answered meanwhile
        self.metrics.inc("blocklist_uploads_checked_total", outcome.images, file="image")
        self.metrics.inc(
            "blocklist_uploads_checked_total", outcome.files - outcome.images, file="other"
        )
        if outcome.match is not None:
            self._refuse(flow, outcome.match)
        elif outcome.failed:
            respond(flow, UNCHECKED)
        elif outcome.unchecked:
            self._unchecked(flow, outcome.unchecked)

    def _refuse(self, flow: http.HTTPFlow, match: HashMatch) -> None:
        event = self.enforcer.refuse_upload(flow, match, where="image")
        self.metrics.inc("blocklist_image_matches_total", kind=match.kind)
        if self.webhook.url:
            line = record(
                event,
                client_mode=ctx.options.blocklist_log_client,  # type: ignore[arg-type]
                with_url=ctx.options.blocklist_log_url,
            )
            self.webhook.send(line.encode())

    def _unchecked(self, flow: http.HTTPFlow, reasons: list[str]) -> None:
        refuse = self.uncheckable == "refuse"
        action = "refuse" if refuse else "pass"
        for reason in reasons:
            self.metrics.inc("blocklist_images_unchecked_total", reason=reason, action=action)
        reason = reasons[0]
        log.warning(  # no host: in forward mode it is where a user uploads to
            f"blocklist: an upload could not be checked against the image hash list "
            f"({reason}); {'refused' if refuse else 'passed'}"
        )
        if refuse:
            status = _UNCHECKED_STATUS.get(reason, 422)
            doc = {
                "error": "upload_not_checked",
                "message": "The upload could not be checked and was not accepted "
                f"({reason}). Try a smaller or more common image format.",
            }
            flow.response = http.Response.make(
                status,
                json.dumps(doc).encode() + b"\n",
                {"Content-Type": "application/json", "Cache-Control": "no-store"},
            )

    def _guarded(self, flow: http.HTTPFlow) -> bool:
        return self.hashes.blocklist is not None and flow.request.method.upper() in _UPLOAD_METHODS
