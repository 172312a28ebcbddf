"""Videos: recognized by their bytes, decoded under limits, hashed and matched as vPDQ does.

vPDQ is Meta's open video hash (github.com/facebook/ThreatExchange, ``vpdq/``): the PDQ
hash and quality of sampled frames. What this module follows, and where:

- Sampling (``vpdq/cpp/hashing/filehasher.cpp``, ``hashVideoFile``): one frame every
  ``seconds_per_hash`` (1 s by default in the ``vpdq`` binding and in HMA's
  ``hash_file_compact``), PDQ-hashed from RGB24 pixels with its quality. vPDQ picks every
  ``int(seconds_per_hash * frame_rate)``-th decoded frame, the rate from the stream's
  ``avg_frame_rate`` (else ``r_frame_rate``). Here a frame is hashed when its presentation
  time reaches the next whole step from the first frame's: for a constant frame rate that
  is the same frames (frame n at n / rate), and a rate header that lies (a listed clip
  remuxed to claim 1,000 fps: vPDQ would hash its first frame alone) cannot thin the
  sampling out, nor a variable rate skew it.
  A timestamp that goes back starts a new step count (a concatenation, or a forged jump).
  Frames are scaled to at most ``side`` pixels a side (swscale, area averaging) before
  PDQ, as images are (``images.Limits.side``); vPDQ hashes them at full size unless asked
  to downsample. PDQ itself reduces a frame to 64 x 64 first, so this changes a hash by a
  few bits at most, and it bounds the hashing cost of a 4K stream.
- The match (python-threatexchange ``extensions/vpdq``: ``vpdq_util.py``,
  ``vpdq_brute_matcher.match_VPDQ_hash_brute``, ``vpdq_index.VPDQIndex.query``; HMA
  matches videos with that index): both the query's frames and each listed video's are
  filtered by quality (a frame of quality under ``VPDQ_QUALITY_THRESHOLD`` = 50 is left
  out on both sides) and deduplicated (a hash equal to an earlier frame's is dropped:
  ``dedupe`` keeps the first of each distinct hash, consecutive or not). Two frames match
  within ``VPDQ_DISTANCE_THRESHOLD`` = 31 bits, inclusive (the brute matcher's ``<=``; the
  faiss index searches radius threshold + 1, which is the same; the C++ ``matchTwoHash``
  uses ``<`` and is the odd one out). ``query_match_percent`` is the share of the query's
  frames within the threshold of any frame of the listed video, ``compared_match_percent``
  the share of the listed video's frames within it of any query frame; a listed video
  matches when the first is at least ``VPDQ_QUERY_MATCH_THRESHOLD_PERCENT`` (80.0) and the
  second at least ``VPDQ_INDEX_MATCH_THRESHOLD_PERCENT`` (0.0: a clip cut out of a listed
  video matches however short; raise it to refuse only near-whole copies). Both are
  options here with those defaults.

The matcher is exact: every listed frame within the threshold of a query frame is found
through the PDQ index's tables (``pdqindex``: multi-index hashing, then each candidate
verified by its full distance; a scan when probing would not pay), and the two
percentages are counted from those pairs, so the answer is the brute-force rule's
(``tests/test_video.py`` checks it against a transcription of it).

Decoding is FFmpeg's, through PyAV, from memory: the demuxer is named by the sniffed
container (FFmpeg never guesses a format, so no playlist or concat demuxer that opens
other files or URLs is ever reached; the MOV demuxer's external references stay off),
decoders are limited to ``CODECS``, one thread each (a worker per core already), and the
work is bounded (``VideoLimits``): bytes before anything is read, pixels a frame from the
header before a frame is decoded, decoded frames, seconds of video and wall time. A body
that cannot be fully checked gets one ``images.Uncheckable``-style reason word: ``too-large``,
``truncated`` (the container's own framing says bytes are missing), ``undecodable``, or
``frames-skipped`` (stopped at a limit, or a decode error after some frames); the frames
hashed until then are still matched. FFmpeg is native code: ``hash_video`` is meant to run
in the decoder workers (``decoder.DecoderPool(work=hash_video)``: address-space and CPU
rlimits, restarted when one dies), never in the proxy's own process: the upload guard runs
it in a pool of its own, ``blocklist-scan`` through ``HashList.check_video`` in its own
worker processes.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from blocklist_addon.hashes.pdqindex import PdqIndex, layout, radii

__all__ = [
    "CODECS",
    "COMPARED_MATCH_PERCENT",
    "DISTANCE_THRESHOLD",
    "QUALITY_THRESHOLD",
    "QUERY_MATCH_PERCENT",
    "VideoHashes",
    "VideoIndex",
    "VideoLimits",
    "VideoMatch",
    "hash_video",
    "parse_vpdq",
    "prepare",
    "sniff_video",
    "truncated",
]

#: python-threatexchange's vpdq_util defaults (see the module docstring).
DISTANCE_THRESHOLD = 31
QUALITY_THRESHOLD = 50
QUERY_MATCH_PERCENT = 80.0
COMPARED_MATCH_PERCENT = 0.0
SIZE = 32

#: Most frames one listed video may carry (a day of video at vPDQ's one a second).
MAX_FEED_FRAMES = 86_400
_HEX64 = re.compile(r"[0-9A-Fa-f]{64}")

#: FFmpeg demuxer for each container family sniff_video names.
DEMUXERS = {"mp4": "mov", "matroska": "matroska", "avi": "avi"}
#: Decoders allowed to run on an upload: what phones, cameras, browsers and editors write.
#: Anything else (FFmpeg has hundreds, many rarely fuzzed) is ``undecodable``.
CODECS = frozenset(
    {
        "h264",
        "hevc",
        "vp8",
        "vp9",
        "av1",
        "libdav1d",
        "mpeg4",
        "msmpeg4v3",
        "h263",
        "mpeg1video",
        "mpeg2video",
        "mjpeg",
        "theora",
        "prores",
    }
)
#: ISO media brands that are still images (images.sniff reads those): HEIF, AVIF.
_IMAGE_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"}
_IMAGE_BRANDS |= {b"mif1", b"msf1", b"mif2", b"avif", b"avis"}
#: Top-level boxes a QuickTime file without ``ftyp`` (before 2001) starts with.
_QT_BOXES = {b"moov", b"mdat", b"wide", b"pnot"}
_EBML = b"\x1a\x45\xdf\xa3"
_SEGMENT = b"\x18\x53\x80\x67"


@dataclass(frozen=True, slots=True)
class VideoLimits:
    """How much work one video may cost."""

    max_bytes: int = 256 * 1024 * 1024  # the file, before anything is read
    max_pixels: int = 16 * 1024 * 1024  # a frame, from the header before decoding
    max_frames: int = 100_000  # decoded frames (every frame is decoded, one in ~30 hashed)
    max_seconds: float = 3600.0  # of video, from the first frame's time
    max_ms: int = 60_000  # wall time of one video's decoding and hashing
    seconds_per_hash: float = 1.0  # vPDQ's default sampling
    side: int = 512  # frames scaled to at most this many pixels a side before PDQ


@dataclass(frozen=True, slots=True)
class VideoHashes:
    """What a worker returns: the sampled frames' PDQ hashes and qualities, in order, the
    container, why not every frame could be checked (None when all were), and how much
    was decoded."""

    frames: tuple[tuple[bytes, int], ...]
    container: str | None
    unchecked: str | None = None
    decoded: int = 0  # frames decoded
    seconds: float = 0.0  # of video covered, first frame to last


@dataclass(frozen=True, slots=True)
class VideoMatch:
    """A listed video the query matches: its number in the listing and the two shares."""

    video: int
    query_percent: float  # of the query's frames, within the threshold of the video's
    compared_percent: float  # of the listed video's frames, within it of the query's
    distance: int  # the smallest distance between a matched pair


# -- recognizing ---------------------------------------------------------------------------


def sniff_video(data: bytes | memoryview) -> str | None:
    """The container family of ``data`` by its first bytes (``mp4``: MP4, MOV, 3GP, M4V;
    ``matroska``: Matroska and WebM; ``avi``), or None. HEIF and AVIF images (ISO media
    too) are left to ``images.sniff``."""
    head = bytes(data[:16])
    if len(head) < 12:
        return None
    if head[4:8] == b"ftyp":
        return None if head[8:12] in _IMAGE_BRANDS else "mp4"
    if head[4:8] in _QT_BOXES and not 2 <= int.from_bytes(head[:4], "big") < 8:
        return "mp4"
    if head.startswith(_EBML):
        return "matroska"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "avi"
    return None


def truncated(data: bytes | memoryview, container: str) -> bool:
    """Whether the container's own framing says bytes are missing at the end: a top-level
    MP4 box, the Matroska segment or the AVI RIFF chunk declared longer than the file."""
    size = len(data)
    if container == "mp4":
        pos = 0
        while pos < size:
            if size - pos < 8:
                return True
            length = int.from_bytes(data[pos : pos + 4], "big")
            if length == 1:
                if size - pos < 16:
                    return True
                length = int.from_bytes(data[pos + 8 : pos + 16], "big")
            elif length == 0:
                return False  # the last box runs to the end of the file
            if length < 8:
                return False  # malformed: the demuxer's call
            pos += length
        return pos > size
    if container == "matroska":
        pos = 4
        header = _vint(data, pos)
        if header is None:
            return True
        length, width = header
        pos += width + length
        if bytes(data[pos : pos + 4]) != _SEGMENT:
            return pos >= size
        segment = _vint(data, pos + 4)
        if segment is None:
            return True
        length, width = segment
        if length == (1 << (7 * width)) - 1:
            return False  # unknown size (a live recording): nothing declared
        return pos + 4 + width + length > size
    if container == "avi":
        return 8 + int.from_bytes(data[4:8], "little") > size
    return False


def _vint(data: bytes | memoryview, pos: int) -> tuple[int, int] | None:
    """An EBML variable-size integer at ``pos``: (value, bytes), None past the end."""
    if pos >= len(data):
        return None
    first = data[pos]
    width = 8 - first.bit_length() + 1 if first else 9
    if width > 8 or pos + width > len(data):
        return None
    value = first & ((1 << (8 - width)) - 1)
    for byte in data[pos + 1 : pos + width]:
        value = value << 8 | byte
    return value, width


def parse_vpdq(value: object) -> tuple[tuple[bytes, int], ...] | None:
    """A feed's ``vpdq`` field as (PDQ hash, quality) frames in order, or None when it is
    malformed or empty (the record is then invalid; errors never quote it: hashes are
    confidential). Accepted, as HMA and the vpdq tools write it:

    - a list of HMA's compact features, ``"<64 hex>,<quality>,<timestamp>"`` each
      (``VpdqCompactFeature.__str__``), or of the vpdq CLI's lines
      ``"<frame>,<64 hex>,<quality>,<timestamp>"``;
    - that list as a JSON string (HMA's ``VideoVPDQSignal`` signal string: what a CSV
      column holds), or the older signal string, a JSON object of frame number to
      ``{"hash", "quality", "timestamp"}`` (``OLD_json_to_vpdq``);
    - a list of ``{"hash": hex, "quality": n}`` objects.

    Quality is an integer 0-100; timestamps, when given, are numbers >= 0 that never go
    back (vPDQ's frame order); at most MAX_FEED_FRAMES frames.
    """
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            return None
    if isinstance(value, dict):
        try:
            ordered = sorted(value.items(), key=lambda item: int(item[0]))
        except (TypeError, ValueError):
            return None
        value = [item for _, item in ordered]
    if not isinstance(value, list) or not 0 < len(value) <= MAX_FEED_FRAMES:
        return None
    frames = []
    last = 0.0
    for item in value:
        stamp: object = None
        if isinstance(item, str):
            parts = item.split(",")
            if len(parts) == 4:
                parts = parts[1:]
            if len(parts) != 3:
                return None
            text, quality_text, stamp = parts
            try:
                quality: object = int(quality_text)
                stamp = float(stamp)
            except ValueError:
                return None
        elif isinstance(item, dict):
            text, quality, stamp = item.get("hash"), item.get("quality"), item.get("timestamp")
        else:
            return None
        if not isinstance(text, str) or not _HEX64.fullmatch(text.strip()):
            return None
        if isinstance(quality, bool) or not isinstance(quality, int) or not 0 <= quality <= 100:
            return None
        if stamp is not None:
            if isinstance(stamp, bool) or not isinstance(stamp, int | float):
                return None
            if not (math.isfinite(stamp) and stamp >= last):
                return None
            last = float(stamp)
        frames.append((bytes.fromhex(text.strip()), quality))
    return tuple(frames)


# -- decoding and hashing ------------------------------------------------------------------


def hash_video(data: bytes, limits: VideoLimits | None = None) -> VideoHashes:
    """The vPDQ frame hashes of the video in ``data`` (see the module docstring). Never
    raises on what the bytes hold: what could not be checked is ``unchecked``. Runs in a
    decoder worker."""
    import av  # FFmpeg's libraries: loaded only where videos are decoded

    from blocklist_addon.hashes.pdq import pdq_hashes

    limits = limits or VideoLimits()
    container = sniff_video(data)
    if container is None:
        return VideoHashes((), None, "undecodable")
    if len(data) > limits.max_bytes:
        return VideoHashes((), container, "too-large")
    cut = truncated(data, container)
    started = time.monotonic()
    hashed: list[tuple[bytes, int]] = []
    decoded = 0
    first: Fraction | None = None
    last = Fraction(0)
    due = Fraction(0)
    step = Fraction(limits.seconds_per_hash).limit_denominator(1_000_000)
    reason: str | None = None
    try:
        media = av.open(
            io.BytesIO(data),
            mode="r",
            format=DEMUXERS[container],
            options={"enable_drefs": "0"},
        )
    except MemoryError:
        return VideoHashes((), container, "too-large")
    except Exception:  # FFmpeg raises many types on hostile headers
        return VideoHashes((), container, "truncated" if cut else "undecodable")
    try:
        if not media.streams.video:
            return VideoHashes((), container, "undecodable")
        stream = media.streams.video[0]
        context = stream.codec_context
        if context is None:  # a codec FFmpeg does not know (PyAV gives no context)
            return VideoHashes((), container, "undecodable")
        width, height = context.width, context.height
        if context.name not in CODECS or width < 1 or height < 1:
            return VideoHashes((), container, "undecodable")
        if width * height > limits.max_pixels:
            return VideoHashes((), container, "too-large")
        context.thread_type = "SLICE"
        context.thread_count = 1
        rate = stream.average_rate or stream.base_rate or stream.guessed_rate
        try:
            for packet in media.demux(stream):
                for frame in packet.decode():
                    decoded += 1
                    if decoded > limits.max_frames or (
                        time.monotonic() - started >= limits.max_ms / 1000
                    ):
                        raise _Stop("frames-skipped")
                    if frame.width * frame.height > limits.max_pixels:
                        raise _Stop("frames-skipped")
                    if frame.pts is not None and frame.time_base is not None:
                        at = frame.pts * frame.time_base
                    elif rate:
                        at = (decoded - 1) / Fraction(rate)
                    else:
                        raise _Stop("undecodable")
                    if first is None:
                        first = at
                    offset = at - first
                    if offset > limits.max_seconds:
                        raise _Stop("frames-skipped")
                    if offset < last:  # time went back: a new timeline
                        due = offset
                    last = offset
                    if offset < due:
                        continue
                    due = (offset // step + 1) * step
                    scale = min(1.0, limits.side / max(frame.width, frame.height))
                    pixels = frame.to_ndarray(
                        format="rgb24",
                        width=max(1, round(frame.width * scale)),
                        height=max(1, round(frame.height * scale)),
                        interpolation="AREA",
                    )
                    hashes, quality = pdq_hashes(pixels, dihedral=False)  # type: ignore[arg-type]
                    hashed.append((hashes[0], quality))
        except _Stop as stop:
            reason = stop.reason
        except MemoryError:
            reason = "too-large" if not hashed else "frames-skipped"
        except Exception:  # a decode error part way
            reason = "truncated" if cut else ("frames-skipped" if hashed else "undecodable")
    finally:
        media.close()
    if reason is None and cut:
        reason = "truncated"
    if reason is None and not hashed:
        reason = "undecodable"
    return VideoHashes(tuple(hashed), container, reason, decoded, float(last))


class _Stop(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# -- matching ------------------------------------------------------------------------------


def prepare(
    frames: Iterable[tuple[bytes, int]], quality_threshold: int = QUALITY_THRESHOLD
) -> list[bytes]:
    """HMA's ``prepare_vpdq_feature``: the hashes of frames of at least that quality, each
    distinct hash once, in order of first appearance."""
    seen: set[bytes] = set()
    kept = []
    for value, quality in frames:
        if len(value) != SIZE:
            raise ValueError("PDQ hashes must be 32 bytes each")
        if quality >= quality_threshold and value not in seen:
            seen.add(value)
            kept.append(value)
    return kept


class VideoIndex:
    """Listed videos (each a sequence of (PDQ hash, quality) frames, as vPDQ gives them),
    matched by HMA's rule. Immutable once built."""

    def __init__(
        self,
        videos: Iterable[Iterable[tuple[bytes, int]]],
        *,
        distance_threshold: int = DISTANCE_THRESHOLD,
        quality_threshold: int = QUALITY_THRESHOLD,
        query_match_percent: float = QUERY_MATCH_PERCENT,
        compared_match_percent: float = COMPARED_MATCH_PERCENT,
        bits: int | None = None,
    ) -> None:
        """``bits``: the index's chunk size, chosen from the number of frames unless given
        (tests, to reach both the probing and the scanning path)."""
        if not 0 <= distance_threshold <= 128:
            raise ValueError("distance_threshold must be between 0 and 128 bits (31 default)")
        if not (0 <= query_match_percent <= 100 and 0 <= compared_match_percent <= 100):
            raise ValueError("match percentages must be between 0 and 100")
        self.distance_threshold = distance_threshold
        self.quality_threshold = quality_threshold
        self.query_match_percent = query_match_percent
        self.compared_match_percent = compared_match_percent
        owners: list[int] = []
        chunks: list[bytes] = []
        counts: list[int] = []
        for number, frames in enumerate(videos):
            kept = prepare(frames, quality_threshold)
            counts.append(len(kept))
            chunks += kept
            owners += [number] * len(kept)
        self.counts = np.array(counts, dtype=np.int64)  # frames of each video, prepared
        self._owners = np.array(owners, dtype=np.int64)
        self._hashes = b"".join(chunks)
        self._rows = np.frombuffer(self._hashes, dtype=np.uint8).reshape(-1, SIZE)
        self.index = PdqIndex(self._hashes, bits=bits)
        arrays = self.index.arrays()
        self._bits = int(arrays["bits"][0])
        self._dirs = arrays["dirs"]
        self._ids = arrays["ids"]
        self._hot = arrays["hot"].astype(np.int64)
        self._layout = np.array(layout(self._bits), dtype=np.int64)
        self._plan = self._probe_plan()

    def __len__(self) -> int:
        return len(self.counts)

    def _probe_plan(self) -> np.ndarray | None:
        """(table, xor mask) pairs to probe at the distance threshold, as the index does
        (pigeonhole over its chunks); None when a scan is cheaper."""
        threshold, bits = self.distance_threshold, self._bits
        chosen = radii(len(self._layout), threshold)
        probes = sum(sum(math.comb(bits, k) for k in range(r + 1)) for r in chosen)
        expected = probes * (1 + self._ids.shape[1] / (1 << bits)) + len(self._hot)
        if expected >= 0.25 * len(self._rows):
            return None
        pairs = []
        for table, radius in enumerate(chosen):
            for k in range(radius + 1):
                for flips in itertools.combinations(range(bits), k):
                    pairs.append((table, sum(1 << i for i in flips)))
        return np.array(pairs, dtype=np.int64).reshape(-1, 2)

    def within(self, query: bytes) -> tuple[np.ndarray, np.ndarray]:
        """Positions of every listed frame within the threshold of ``query`` (sorted) and
        their distances."""
        _, positions, distances = self.pairs([query])
        return positions, distances

    def pairs(self, queries: list[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every (query number, listed position, distance) within the threshold, sorted by
        query then position: the index's candidates of a batch of queries at once, each
        verified by its full distance."""
        joined = np.frombuffer(b"".join(queries), dtype=np.uint8)
        if len(joined) != SIZE * len(queries):
            raise ValueError("PDQ hashes must be 32 bytes each")
        empty = np.zeros(0, dtype=np.int64)
        if not len(self._rows) or not queries:
            return empty, empty, empty
        query_rows = joined.reshape(-1, SIZE)
        # batches bound the candidate pairs held at once (~1M: 32 MB of xor)
        per = len(self._rows) if self._plan is None else len(self._plan) * 4 + len(self._hot)
        batch = max(1, (1 << 20) // max(1, per))
        found = [self._batch(query_rows, start, batch) for start in range(0, len(queries), batch)]
        return tuple(np.concatenate(part) for part in zip(*found, strict=True))  # type: ignore[return-value]

    def _batch(
        self, query_rows: np.ndarray, start: int, batch: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows_q = query_rows[start : start + batch]
        count = len(rows_q)
        if self._plan is None:
            listed = np.tile(np.arange(len(self._rows), dtype=np.int64), count)
            asked = np.repeat(np.arange(count, dtype=np.int64), len(self._rows))
        else:
            words = rows_q.view(">u8").reshape(count, 4)
            tables = self._plan[:, 0]
            word = self._layout[tables, 0]
            shift = self._layout[tables, 1].astype(np.uint64)
            mask = np.uint64((1 << self._bits) - 1)
            values = ((words[:, word] >> shift) & mask).astype(np.int64) ^ self._plan[:, 1]
            all_tables = np.broadcast_to(tables, values.shape).reshape(-1)
            values = values.reshape(-1)
            lo = self._dirs[all_tables, values].astype(np.int64)
            sizes = self._dirs[all_tables, values + 1].astype(np.int64) - lo
            total = int(sizes.sum())
            starts = np.repeat(lo - (np.cumsum(sizes) - sizes), sizes)
            columns = starts + np.arange(total, dtype=np.int64)
            # a frame found in several tables is verified each time: cheaper than making
            # the candidates unique first (few are near)
            probed = self._ids[np.repeat(all_tables, sizes), columns].astype(np.int64)
            owner = np.repeat(np.arange(count, dtype=np.int64), len(tables))
            listed = np.concatenate([probed, np.tile(self._hot, count)])
            asked = np.concatenate(
                [np.repeat(owner, sizes), np.repeat(np.arange(count), len(self._hot))]
            )
        distances = np.bitwise_count(self._rows[listed] ^ rows_q[asked]).sum(axis=1)
        near = distances <= self.distance_threshold
        keys, first = np.unique(asked[near] * len(self._rows) + listed[near], return_index=True)
        return (
            keys // len(self._rows) + start,
            keys % len(self._rows),
            distances[near][first].astype(np.int64),
        )

    def matches(self, frames: Iterable[tuple[bytes, int]]) -> list[VideoMatch]:
        """Every listed video the query's frames match, best first (the higher query share,
        then the higher compared share, then the lower number)."""
        query = prepare(frames, self.quality_threshold)
        if not query or not len(self._rows):
            return []
        asked, positions, distances = self.pairs(query)
        videos = self._owners[positions]
        found = []
        for video in np.unique(videos).tolist():
            mine = videos == video
            query_percent = len(np.unique(asked[mine])) * 100 / len(query)
            compared_percent = len(np.unique(positions[mine])) * 100 / int(self.counts[video])
            if (
                query_percent >= self.query_match_percent
                and compared_percent >= self.compared_match_percent
            ):
                distance = int(distances[mine].min())
                found.append(VideoMatch(video, query_percent, compared_percent, distance))
        found.sort(key=lambda m: (-m.query_percent, -m.compared_percent, m.video))
        return found

    def match(self, frames: Iterable[tuple[bytes, int]]) -> VideoMatch | None:
        """The best listed video the query's frames match, or None."""
        found = self.matches(frames)
        return found[0] if found else None
