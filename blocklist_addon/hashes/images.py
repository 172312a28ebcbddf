"""Recognizing images by their bytes and decoding them under strict limits.

An upload's declared type says nothing (a client names it), so the format comes from the
first bytes. Decoding is where hostile input bites: a decompression bomb declares a huge
canvas, an animation has thousands of frames, a truncated file stops half way. Every such
case ends in :class:`Uncheckable` with a fixed reason word, never a crash, and memory
stays bounded by ``Limits.max_pixels``: the size is read from the header before a pixel
is decoded, and JPEGs are decoded already scaled down (libjpeg's DCT scaling), which is
also what makes a 12-megapixel photo cost about as much as a small one.

Nothing here writes to disk: Pillow reads from memory.
"""

from __future__ import annotations

import io
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import pillow_heif
from PIL import Image, ImageFile

__all__ = ["FORMATS", "Limits", "Uncheckable", "frames", "sniff"]

#: Formats recognized by their first bytes, as Pillow names them. HEIF (HEIC) is what phones
#: save photos as; pillow-heif (libheif) decodes it.
FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "HEIF", "AVIF", "ICO", "JPEG2000")
#: Major brands of an ISO media file (``ftyp`` box) that hold HEIF images (ISO/IEC 23008-12).
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"}
_HEIF_BRANDS |= {b"mif1", b"msf1", b"mif2"}
#: AV1 images and sequences in the same container (Pillow decodes them with libavif).
_AVIF_BRANDS = {b"avif", b"avis"}
#: Sizes of the BMP info headers Pillow reads: "BM" alone is too common a start.
_BMP_HEADERS = {12, 16, 40, 52, 56, 64, 108, 124}

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated image is uncheckable, never half-read
# Our own limit is far below Pillow's bomb warning; the warning would only repeat it.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
pillow_heif.register_heif_opener()


class Uncheckable(Exception):
    """An image whose pixels cannot be checked; ``reason`` is one fixed word for logs and
    metrics: undecodable, truncated, too-large, too-slow, frames-skipped."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Limits:
    """How much work one image may cost."""

    max_pixels: int = 16 * 1024 * 1024  # decoded pixels of one frame (JPEGs: after scaling)
    max_frames: int = 1000  # frames of an animation checked, from the first
    max_seconds: float = 2.0  # decoding time after which no further frame is started
    side: int = 512  # frames are scaled to at most this many pixels a side before hashing


def sniff(data: bytes) -> str | None:
    """The image format of ``data`` by its magic bytes, or None when it is no image we read."""
    head = data[:32]
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WEBP"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "TIFF"
    if head.startswith(b"BM") and int.from_bytes(head[14:18], "little") in _BMP_HEADERS:
        return "BMP"
    if head[4:8] == b"ftyp" and head[8:12] in _AVIF_BRANDS:
        return "AVIF"
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return "HEIF"
    if head.startswith((b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51")):
        return "JPEG2000"
    if _ico(head):
        return "ICO"
    return None


def _ico(head: bytes) -> bool:
    """An icon directory: reserved 0, type 1, 1-256 images, the first entry's reserved byte
    0 and its colour planes 0 or 1 (four bytes alone are too common a start)."""
    count = int.from_bytes(head[4:6], "little")
    return (
        head.startswith(b"\x00\x00\x01\x00")
        and 0 < count <= 256
        and len(head) >= 12
        and head[9] == 0
        and head[10:12] in (b"\x00\x00", b"\x01\x00")
    )


def frames(data: bytes, limits: Limits | None = None) -> Iterator[Image.Image]:
    """RGB frames of the image in ``data``, each at most ``limits.side`` a side: the first
    ``limits.max_frames`` of an animation, fewer when decoding runs past ``max_seconds``.

    Raises Uncheckable (before yielding anything) when the first frame cannot be decoded
    within the limits, and ``frames-skipped`` after the last frame yielded when frames were
    left: past ``max_frames`` or ``max_seconds``, too large, or failing to decode.
    """
    limits = limits or Limits()
    fmt = sniff(data)
    if fmt is None:
        raise Uncheckable("undecodable")
    started = time.monotonic()
    try:
        image = Image.open(io.BytesIO(data), formats=[fmt])
        if fmt == "JPEG":
            image.draft("RGB", (limits.side, limits.side))
        width, height = image.size
    except Image.DecompressionBombError:
        raise Uncheckable("too-large") from None
    except Exception:  # Pillow raises many types on hostile headers
        raise Uncheckable("undecodable") from None
    if width < 1 or height < 1 or width * height > limits.max_pixels:
        raise Uncheckable("too-large")
    total = getattr(image, "n_frames", 1)
    for number in range(total):
        try:
            if number:
                if number >= limits.max_frames or time.monotonic() - started > limits.max_seconds:
                    raise Uncheckable("frames-skipped")
                image.seek(number)
                if image.size[0] * image.size[1] > limits.max_pixels:
                    raise Uncheckable("frames-skipped")
            frame = image.convert("RGB")
        except Uncheckable:
            raise
        except Exception as exc:  # any decoder failure leaves the image uncheckable
            # A later frame that fails leaves the frames after it unchecked.
            raise Uncheckable("frames-skipped" if number else _reason(exc)) from None
        if max(frame.size) > limits.side:
            frame.thumbnail((limits.side, limits.side), Image.Resampling.BOX)
        yield frame


def _reason(exc: Exception) -> str:
    if isinstance(exc, MemoryError | Image.DecompressionBombError):
        return "too-large"
    if isinstance(exc, OSError) and "truncated" in str(exc):
        return "truncated"
    if isinstance(exc, ValueError) and "end of file" in str(exc).lower():  # libheif's words
        return "truncated"
    return "undecodable"
