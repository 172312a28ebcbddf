"""Uploads checked against the image hash list: a known abuse image never reaches the site.

Whenever the store holds an active hash list (``ActiveList`` following its "hashes"
namespace, with its own last-known-good copy), every POST, PUT and PATCH the proxy sees
(reverse mode in front of a platform; forward mode for what leaves a school, where the
traffic is decrypted) is held until checked: each part of a multipart form, or the whole
body, by exact hashes (any file) and, when its bytes are an image, by PDQ of its first
frames. A match is refused with 451 before a byte goes upstream, written to the block log
(entry id, hash kind, distance: never the image or a hash) and POSTed to the optional
webhook. When the list holds videos, each piece whose bytes are a video (MP4, MOV,
WebM, Matroska, AVI) is decoded too (``hashes.video``) and matched by vPDQ
(``hashes.vpdq``). Images and videos too large, broken or slow to decode are passed and
logged, or refused with 413/422, as ``blocklist_image_uncheckable`` says. Nothing is
written to disk.

Decoding and hashing (about 15 ms for a 1-megapixel JPEG, 12 ms a second of 320x240
video) run in worker processes (``DecoderPool``: one pool for images, one for videos),
driven from a pool of one thread per core, so the event loop keeps serving other
connections and at most that many uploads are in memory at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mitmproxy import ctx, http
from mitmproxy.exceptions import OptionsError

from blocklist_addon.guards.flow import (
    UNCHECKED,
    UPLOAD_METHODS,
    carries_body,
    header,
    respond,
)
from blocklist_addon.guards.uploadcheck import REQUEST_BUDGET, Outcome, UploadCheck
from blocklist_addon.guards.urls import Enforcer
from blocklist_addon.hashes.kinds import NAMESPACE
from blocklist_addon.hashes.snapshot import HashSnapshot
from blocklist_addon.hashes.video import VideoLimits
from blocklist_addon.hashes.vpdq import COMPARED_MATCH_PERCENT, QUERY_MATCH_PERCENT
from blocklist_addon.lists.active import ActiveList, ListKind
from blocklist_addon.ops.blocklog import record
from blocklist_addon.ops.metrics import Metrics
from blocklist_addon.ops.options import float_option, int_option
from blocklist_addon.ops.webhook import Webhook

if TYPE_CHECKING:
    from blocklist_addon.hashes import HashList, HashMatch

__all__ = ["ImageGuard"]

log = logging.getLogger(__name__)

#: Bodies smaller than this, without an image signature or a content coding, are checked on
#: the event loop (microseconds).
INLINE_BYTES = 64 * 1024
#: Statuses for an upload refused because it could not be checked, by reason.
_UNCHECKED_STATUS = {"too-large": 413}
#: Seconds an upload may wait for a free worker before it counts as unchecked (too-busy).
QUEUE_WAIT = 60.0
#: Defaults of blocklist_video_max_frames and _max_seconds (a video's bytes and pixels
#: follow the image options, its decoding time the request's budget).
_VIDEO = VideoLimits()


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
    max_frames: int = field(default=1000, init=False)
    max_seconds: float = field(default=2.0, init=False)
    uncheckable: str = field(default="pass", init=False)
    video_max_frames: int = field(default=_VIDEO.max_frames, init=False)
    video_max_seconds: int = field(default=int(_VIDEO.max_seconds), init=False)
    video_query_percent: float = field(default=QUERY_MATCH_PERCENT, init=False)
    video_compared_percent: float = field(default=COMPARED_MATCH_PERCENT, init=False)

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
        self.check = UploadCheck(self.metrics, lambda exc: self.enforcer.check_failed("image", exc))
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
            "Largest upload body checked whole against the image hash list. Of a larger one "
            "the exact hashes and the first max_bytes are checked (an image starts there), and "
            "it counts as unchecked, too-large (see blocklist_image_uncheckable). Set it to the "
            "site's own upload limit where memory allows.",
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
            1000,
            "Frames of an animated image (GIF, WebP, APNG, TIFF pages, HEIF sequences) checked,"
            " from the first; an image with more is reported unchecked (frames-skipped).",
        )
        loader.add_option(
            "blocklist_image_max_ms",
            int,
            2000,
            "Decoding time in milliseconds after which no further frame of an image is "
            "decoded, and beyond which the proxy stops waiting for a check.",
        )
        loader.add_option(
            "blocklist_video_max_frames",
            int,
            _VIDEO.max_frames,
            "Frames of an uploaded video decoded at most (every frame is decoded, about one a "
            "second hashed); a longer video is matched on those and reported unchecked "
            "(frames-skipped). Checked only when the hash list holds videos; its bytes are "
            "bounded by blocklist_image_max_bytes, its time by the request's budget (4 x "
            "blocklist_image_max_ms).",
        )
        loader.add_option(
            "blocklist_video_max_seconds",
            int,
            int(_VIDEO.max_seconds),
            "Seconds of an uploaded video decoded at most, from its first frame; a longer "
            "video is matched on those and reported unchecked (frames-skipped).",
        )
        loader.add_option(
            "blocklist_video_query_match_percent",
            str,
            str(QUERY_MATCH_PERCENT),
            "Share (0-100) of an uploaded video's frames (of PDQ quality 50 or more, each "
            "distinct hash once) that must be within blocklist_image_threshold of a listed "
            "video's frames for it to match (HMA's default, 80). Read when a list version "
            "is loaded.",
        )
        loader.add_option(
            "blocklist_video_compared_match_percent",
            str,
            str(COMPARED_MATCH_PERCENT),
            "Share (0-100) of a listed video's frames that must be near the upload's too "
            "(HMA's default, 0: a clip cut from a listed video matches however short; raise "
            "it to refuse only near-whole copies). Read when a list version is loaded.",
        )
        loader.add_option(
            "blocklist_image_uncheckable",
            str,
            "pass",
            "An upload the proxy cannot fully check (too large, truncated, undecodable, too "
            "slow, frames skipped, a malformed multipart body, too many parts): pass (and "
            "log and count it) or refuse (413 when too large, 422 otherwise). Exact hashes "
            "are checked either way. An upload declared larger than "
            "blocklist_image_max_bytes is refused by closing the connection, unread; one of "
            "unknown length (chunked, or HTTP/2 without a length) is refused so whatever "
            "this says: it cannot be held in bounded memory.",
            choices=["pass", "refuse"],
        )
        loader.add_option(
            "blocklist_image_webhook",
            str,
            "",
            "URL to POST each refused image's block event to (JSON: list, entry, kind, "
            "distance, category, reference, time; never the image or a hash), e.g. the platform's "
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
        self.hashes.configure(updated)
        self.threshold = int_option("blocklist_image_threshold", 0, 128)
        self.min_quality = int_option("blocklist_image_min_quality", 0, 100)
        self.dihedral = o.blocklist_image_dihedral
        self.max_bytes = int_option("blocklist_image_max_bytes", 1)
        self.max_pixels = int_option("blocklist_image_max_pixels", 1)
        self.max_frames = int_option("blocklist_image_max_frames", 1)
        self.max_seconds = int_option("blocklist_image_max_ms", 1) / 1000
        self.uncheckable = o.blocklist_image_uncheckable
        self.video_max_frames = int_option("blocklist_video_max_frames", 1)
        self.video_max_seconds = int_option("blocklist_video_max_seconds", 1)
        self.video_query_percent = float_option("blocklist_video_query_match_percent", 0, 100)
        self.video_compared_percent = float_option("blocklist_video_compared_match_percent", 0, 100)
        try:
            self.webhook.configure(o.blocklist_image_webhook, o.blocklist_image_webhook_token_file)
        except ValueError as exc:
            raise OptionsError(f"blocklist_image_webhook: {exc}") from None
        if self.hashes.blocklist is not None:
            self._apply(self.hashes.blocklist)  # type: ignore[arg-type]

    async def running(self) -> None:
        await self.hashes.running()
        hashlist = self.hashes.blocklist
        if hashlist is not None:
            pools = [self.check.decoders]
            if "vpdq" in hashlist.kinds:  # type: ignore[attr-defined]
                pools.append(self.check.video_decoders)
            try:
                for pool in pools:
                    await asyncio.to_thread(pool.warm)
            except Exception as exc:  # the first upload tries again, and says if it fails
                log.warning(f"blocklist: image decoder workers did not start: {exc}")

    async def done(self) -> None:
        await self.webhook.done()
        await self.hashes.done()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.check.close()

    # -- the list --------------------------------------------------------------------------

    def _wrap(self, snapshot: HashSnapshot) -> HashList:
        """The list with its index mapped from a file every proxy process on the machine
        shares (beside the last-known-good copy: one copy of the index a machine)."""
        from blocklist_addon.hashes import HashList

        directory = self.hashes._lastgood_path().parent / "hashindex"
        # The listed videos' index is built with its rule (frames within the threshold, the
        # two shares): a change of these options takes effect with the next version loaded.
        hashlist, note = HashList.mapped(
            snapshot,
            directory,
            threshold=self.threshold,
            video_query_percent=self.video_query_percent,
            video_compared_percent=self.video_compared_percent,
        )
        if note:
            log.warning(f"blocklist: hash list index: {note}")
        return self._apply(hashlist)

    def _apply(self, hashlist: HashList) -> HashList:
        from blocklist_addon.hashes import Limits

        hashlist.threshold = self.threshold
        hashlist.min_quality = self.min_quality
        hashlist.dihedral = self.dihedral
        hashlist.limits = Limits(self.max_pixels, self.max_frames, self.max_seconds)
        hashlist.video_limits = VideoLimits(
            max_bytes=self.max_bytes,
            max_pixels=self.max_pixels,
            max_frames=self.video_max_frames,
            max_seconds=self.video_max_seconds,
            max_ms=round(self.max_seconds * REQUEST_BUDGET * 1000),  # each run gets what is left
        )
        return hashlist

    def loaded(self) -> bool:
        return self.hashes.info is not None

    # -- traffic ---------------------------------------------------------------------------

    # An exception escaping these hooks goes through blocklist_on_error in the addon's
    # dispatch (BlocklistAddon._each), as for every concern.

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or not self._guarded(flow):
            return
        request = flow.request
        length = header(request.headers, b"content-length")
        if length is None and (
            header(request.headers, b"transfer-encoding") is not None
            or request.is_http2
            or request.is_http3
        ):
            # Chunked, or HTTP/2 and 3 without a length (where an empty body is sent with
            # "content-length: 0" by browsers, as the Fetch standard says for POST and PUT).
            # Checking it means buffering it without a bound, and streaming it sends it
            # upstream unchecked: it is refused whatever the policy. mitmproxy reads a whole
            # body before it sends an answer, so the connection is closed instead.
            self._unchecked(flow, ["unknown-length"], refuse=True)
            flow.kill()
        elif (
            self.uncheckable == "refuse"
            and length is not None
            and length.strip().isdigit()
            and int(length) > self.max_bytes
        ):
            self._unchecked(flow, ["too-large"])
            flow.kill()  # refused: closed rather than read whole for a 413
        else:
            # Under "pass" an upload declared larger than max_bytes is held too, and its
            # head checked (request): a listed picture followed by padding must not pass
            # for its size alone. mitmproxy's body_size_limit bounds what is held.
            # Held until checked, even when the URL upload check (a lower limit) would
            # have let it stream past.
            flow.request.stream = False

    def request(self, flow: http.HTTPFlow) -> Coroutine[None, None, None] | None:
        """Check a buffered upload; one holding an image, encoded or large is checked off
        the event loop: the hook then returns a coroutine, which mitmproxy awaits before
        anything is sent upstream."""
        request = flow.request
        if request.stream or flow.response is not None or not self._guarded(flow):
            return None
        hashlist = self.hashes.blocklist
        raw = request.raw_content
        if hashlist is None or not raw:
            return None
        coding = header(request.headers, b"content-encoding")
        content_type = header(request.headers, b"content-type") or ""
        if len(raw) > self.max_bytes:
            # Too large to check whole: its first max_bytes are checked as any body (an
            # image starts there; carving finds one further in), and its exact hashes.
            return self._check_off_loop(flow, hashlist, raw, coding, content_type)
        if len(raw) <= INLINE_BYTES and not coding:
            outcome = self._run(hashlist, raw, coding, content_type, pixels=False)
            if outcome.match is not None or not outcome.pending:
                self._decide(flow, outcome)
                return None
        return self._check_off_loop(flow, hashlist, raw, coding, content_type)

    async def _check_off_loop(
        self,
        flow: http.HTTPFlow,
        hashlist: HashList,
        raw: bytes,
        coding: str | None,
        content_type: str,
    ) -> None:
        loop = asyncio.get_running_loop()
        started = asyncio.Event()

        def work() -> Outcome:
            loop.call_soon_threadsafe(started.set)
            return self._run(hashlist, raw, coding, content_type)

        future = loop.run_in_executor(self._pool, work)
        try:
            # Queueing behind other uploads does not eat into this upload's own budget.
            async with asyncio.timeout(QUEUE_WAIT):
                await started.wait()
        except TimeoutError:
            future.cancel()
            outcome = await self._exact_only(hashlist, raw, coding, content_type)
        else:
            # The check stops starting work at its budget; this bounds the wait for a
            # decoder that never returns (the thread finishes on its own).
            try:
                outcome = await asyncio.wait_for(
                    future, self.max_seconds * (REQUEST_BUDGET + 1) + 5.0
                )
            except TimeoutError:
                outcome = Outcome(unchecked=["too-slow"])
        self._decide(flow, outcome)

    async def _exact_only(
        self, hashlist: HashList, raw: bytes, coding: str | None, content_type: str
    ) -> Outcome:
        """An upload that waited QUEUE_WAIT for the pool: its exact hashes are checked all
        the same (what blocklist_image_uncheckable=pass promises), in the loop's default
        executor (the pool is what is busy), and its pixels count as too-busy."""
        try:
            async with asyncio.timeout(self.max_seconds * (REQUEST_BUDGET + 1) + 5.0):
                outcome = await asyncio.to_thread(
                    self._run, hashlist, raw, coding, content_type, pixels=False
                )
        except TimeoutError:
            return Outcome(unchecked=["too-busy"])
        if outcome.match is None and outcome.pending:
            outcome.unchecked.append("too-busy")
        return outcome

    def _run(
        self,
        hashlist: HashList,
        raw: bytes,
        coding: str | None,
        content_type: str,
        *,
        pixels: bool = True,
    ) -> Outcome:
        """The check under the options as configured now."""
        return self.check.run(
            hashlist,
            raw,
            coding,
            content_type,
            max_bytes=self.max_bytes,
            max_seconds=self.max_seconds,
            pixels=pixels,
        )

    def _decide(self, flow: http.HTTPFlow, outcome: Outcome) -> None:
        if flow.response is not None:
            return  # the client went away, or another concern answered meanwhile
        self.metrics.inc("blocklist_uploads_checked_total", outcome.images, file="image")
        self.metrics.inc("blocklist_uploads_checked_total", outcome.videos, file="video")
        self.metrics.inc(
            "blocklist_uploads_checked_total",
            outcome.files - outcome.images - outcome.videos,
            file="other",
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

    def _unchecked(self, flow: http.HTTPFlow, reasons: list[str], *, refuse: bool = False) -> None:
        refuse = refuse or self.uncheckable == "refuse"
        action = "refuse" if refuse else "pass"
        reasons = list(dict.fromkeys(reasons))
        for reason in reasons:
            self.metrics.inc("blocklist_images_unchecked_total", reason=reason, action=action)
        reason = reasons[0]
        log.warning(  # no host: in forward mode it is where a user uploads to
            f"blocklist: an upload could not be fully checked against the image hash list "
            f"({', '.join(reasons)}); {'refused' if refuse else 'passed'}"
        )
        if refuse:
            status = _UNCHECKED_STATUS.get(reason, 422)
            doc = {
                "error": "upload_not_checked",
                "message": "The upload could not be checked and was not accepted "
                f"({reason}). Try a smaller or more common image format.",
            }
            flow.request.stream = False
            flow.response = http.Response.make(
                status,
                json.dumps(doc).encode() + b"\n",
                {"Content-Type": "application/json", "Cache-Control": "no-store"},
            )

    def _guarded(self, flow: http.HTTPFlow) -> bool:
        """Whenever a hash list is in force: a POST, PUT or PATCH, or any other request that
        carries a body (a handler reading php://input, or taking every method, stores it)."""
        if self.hashes.blocklist is None:
            return False
        request = flow.request
        return request.method.upper() in UPLOAD_METHODS or carries_body(request)
