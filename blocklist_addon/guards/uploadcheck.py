"""What an upload holds and whether the hash list has it: the image guard's check, apart
from its hooks and options so that it reads (and runs, in a worker thread) without a flow.

Every piece's exact hashes first (cheap, and a match ends the check); then the pixels of the
images and, when the list holds videos, of the videos, each decoded in a worker process
(``DecoderPool``: untrusted bytes never reach Pillow or FFmpeg in the proxy's own process),
until the request's budget is spent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from blocklist_addon.content.inflate import TooLarge, decoded_head, inflate
from blocklist_addon.hashes.decoder import DecoderPool
from blocklist_addon.hashes.images import Uncheckable, sniff
from blocklist_addon.hashes.unwrap import MAX_FILES, unwrap
from blocklist_addon.hashes.video import hash_video, sniff_video
from blocklist_addon.ops.metrics import Metrics

if TYPE_CHECKING:
    from blocklist_addon.hashes import HashList, HashMatch

__all__ = ["MAX_IMAGES", "REQUEST_BUDGET", "Outcome", "UploadCheck"]

#: A request's check may take this many times blocklist_image_max_ms in all (each image is
#: bounded by max_ms on its own); the wait for a free worker does not count.
REQUEST_BUDGET = 4
#: Images decoded per request at most: a post of 200,000 tiny images must not hold a worker
#: for minutes (the rest are reported as too-many-parts; their exact hashes are checked).
#: Videos are capped the same way, apart.
MAX_IMAGES = 256


@dataclass
class Outcome:
    """What one upload's check found; the guard decides from it."""

    match: HashMatch | None = None
    unchecked: list[str] = field(default_factory=list)
    images: int = 0
    videos: int = 0  # decoded (or sent to a worker to be)
    files: int = 0
    pending: int = 0  # images and videos whose pixels are still to be checked
    failed: bool = False  # the check raised, and blocklist_on_error says refuse


@dataclass(eq=False)
class UploadCheck:
    metrics: Metrics
    #: Called with an internal error; says whether the upload is refused (blocklist_on_error).
    on_error: Callable[[Exception], bool]

    def __post_init__(self) -> None:
        self.decoders = DecoderPool()
        self.video_decoders = DecoderPool(work=hash_video)  # FFmpeg: as untrusted as Pillow

    def close(self) -> None:
        self.decoders.close()
        self.video_decoders.close()

    def run(
        self,
        hashlist: HashList,
        raw: bytes,
        coding: str | None,
        content_type: str,
        *,
        max_bytes: int,
        max_seconds: float,
        pixels: bool = True,
    ) -> Outcome:
        """Runs in a worker thread for images; touches no flow. Every piece's exact
        hashes first (cheap, and a match ends the check), then the pixels of the images,
        then of the videos when the list has some (unless not ``pixels``: they are then
        counted as ``pending``), until the request's budget is spent."""
        started = time.monotonic()
        clock = time.perf_counter()
        outcome = Outcome()
        try:
            if len(raw) > max_bytes:
                outcome.unchecked.append("too-large")
                outcome.files += 1
                if (match := hashlist.match_exact_bytes(raw)) is not None:
                    outcome.match = match
                    return outcome
                raw = raw[:max_bytes]  # the head, checked below as any body
            try:
                body = inflate(raw, coding, max_bytes)
            except TooLarge:
                outcome.unchecked.append("too-large")
                body = decoded_head(raw, coding, max_bytes) or raw
            except ValueError:  # a coding unknown or broken: what was sent, and what a
                # lenient decoder makes of it (a gzip member cut short or followed by junk)
                outcome.unchecked.append("undecodable-encoding")
                body = decoded_head(raw, coding, max_bytes) or raw
            pieces = unwrap(body, content_type, max_files=MAX_FILES, max_bytes=max_bytes)
            outcome.unchecked += pieces.unchecked
            if body is not raw:
                pieces.files.append(raw)
            for piece in pieces.files:
                outcome.files += 1
                if (match := hashlist.match_exact_bytes(piece)) is not None:
                    outcome.match = match
                    return outcome
            budget = max_seconds * REQUEST_BUDGET
            images = [piece for piece in pieces.files if sniff(piece) is not None]
            videos = []
            if "vpdq" in hashlist.kinds:
                videos = [piece for piece in pieces.files if sniff_video(piece) is not None]
            if not pixels:
                outcome.pending = len(images) + len(videos)
                return outcome
            if len(images) > MAX_IMAGES:
                outcome.unchecked.append("too-many-parts")
                del images[MAX_IMAGES:]
            for piece in images:
                if time.monotonic() - started > budget:
                    outcome.unchecked.append("too-slow")
                    break
                outcome.images += 1
                try:
                    hashed, reason = self.decoders.run(
                        piece,
                        hashlist.limits,
                        hashlist.dihedral,
                        cpu_seconds=2 * max_seconds + 1,
                        timeout=2 * max_seconds + 10,  # a first worker starts in ~1 s
                    )
                except Uncheckable as exc:  # the worker died, or never answered
                    hashed, reason = [], exc.reason
                if reason:
                    outcome.unchecked.append(reason)
                if (match := hashlist.match_frames(hashed)) is not None:
                    outcome.match = match
                    return outcome
            self._videos(hashlist, videos, outcome, started + budget)
        except Exception as exc:  # an internal error: blocklist_on_error decides
            outcome.failed = self.on_error(exc)
        finally:
            self.metrics.inc("blocklist_image_check_seconds_total", time.perf_counter() - clock)
        return outcome

    def _videos(
        self, hashlist: HashList, videos: list[bytes], outcome: Outcome, deadline: float
    ) -> None:
        """Each video decoded and hashed in a video worker (``hash_video``) within what is
        left of the request's budget, and matched here by vPDQ; the frames hashed before a
        limit are still matched."""
        if len(videos) > MAX_IMAGES:
            outcome.unchecked.append("too-many-parts")
            del videos[MAX_IMAGES:]
        for piece in videos:
            left = deadline - time.monotonic()
            if left <= 0:
                outcome.unchecked.append("too-slow")
                return
            outcome.videos += 1
            limits = replace(hashlist.video_limits, max_ms=max(1, round(left * 1000)))
            try:
                hashed = self.video_decoders.run(
                    piece,
                    limits,
                    cpu_seconds=left + 1,
                    timeout=left + 10,  # a first worker starts in ~1 s
                )
            except Uncheckable as exc:  # the worker died, or never answered
                outcome.unchecked.append(exc.reason)
                continue
            if hashed.unchecked:
                outcome.unchecked.append(hashed.unchecked)
            if (match := hashlist.match_video(hashed.frames)) is not None:
                outcome.match = match
                return
