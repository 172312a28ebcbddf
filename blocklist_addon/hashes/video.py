"""Videos: recognized by their bytes, decoded under limits, and hashed as vPDQ does
(``hashes.vpdq`` matches the frames).

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
import time
from dataclasses import dataclass
from fractions import Fraction

__all__ = [
    "CODECS",
    "VideoHashes",
    "VideoLimits",
    "hash_video",
    "sniff_video",
    "truncated",
]


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
