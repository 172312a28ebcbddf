"""Test images drawn by the tests themselves (never real content), and hostile files.

``draw(seed)`` paints random rectangles, ellipses and thick lines over a random background:
enough texture for PDQ quality 100, and different seeds give unrelated images (PDQ
distances of 110-146 of 256 between them). ``reference_pdq`` hashes a picture the way a
hotline does: the reference implementation on the full-resolution pixels.
"""

from __future__ import annotations

import hashlib
import io
import random
import struct
import zipfile
import zlib

import numpy as np
import pdqhash
import pillow_heif
from PIL import Image, ImageDraw, ImageEnhance

pillow_heif.register_heif_opener()  # HEIF (HEIC) encoding for the tests' own pictures


def draw(seed: int, size: tuple[int, int] = (640, 480)) -> Image.Image:
    rng = random.Random(seed)
    image = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    pen = ImageDraw.Draw(image)
    for _ in range(40):
        x0, y0 = rng.randrange(size[0]), rng.randrange(size[1])
        box = [x0, y0, x0 + rng.randrange(20, 300), y0 + rng.randrange(20, 300)]
        colour = tuple(rng.randrange(256) for _ in range(3))
        shape = rng.randrange(3)
        if shape == 0:
            pen.rectangle(box, fill=colour)
        elif shape == 1:
            pen.ellipse(box, fill=colour)
        else:
            pen.line(box, fill=colour, width=rng.randrange(2, 15))
    return image


def encode(image: Image.Image, fmt: str = "JPEG", **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def reference_pdq(image: Image.Image) -> str:
    """Hex PDQ of ``image`` at full resolution, as a hotline's list would hold it."""
    vector, quality = pdqhash.compute(np.asarray(image.convert("RGB")))
    assert quality >= 50
    return np.packbits(np.asarray(vector, dtype=np.uint8)).tobytes().hex()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


#: The edits a listed image survives (DESIGN: re-encoded, resized, brightened, greyscale,
#: cropped), each giving the bytes an uploader would send.
def variants(image: Image.Image) -> dict[str, bytes]:
    width, height = image.size
    dx, dy = width // 100, height // 100  # 1% off each side: 2% of each dimension
    return {
        "jpeg-q40": encode(image, quality=40),
        "half-size": encode(image.resize((width // 2, height // 2)), quality=90),
        "brighter-1.2": encode(ImageEnhance.Brightness(image).enhance(1.2), quality=90),
        "greyscale": encode(image.convert("L"), "PNG"),
        "cropped-2%": encode(image.crop((dx, dy, width - dx, height - dy)), quality=90),
        "webp": encode(image, "WEBP", quality=80),
        "heic": encode(image, "HEIF", quality=60),  # what a phone uploads
        "mirrored": encode(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), quality=90),
        "rotated-90": encode(image.transpose(Image.Transpose.ROTATE_90), "PNG"),
    }


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` with almost no pixel data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = _chunk(b"IDAT", zlib.compress(b"\0" * 1024))
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + idat + _chunk(b"IEND", b"")


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def bomb_png(side: int = 20000) -> bytes:
    """A real decompression bomb: a ``side`` x ``side`` black PNG, a few hundred KB packed."""
    rows = b"\0" * (side + 1) * 100  # 100 rows: a filter byte, then a grey byte a pixel
    packer = zlib.compressobj(1)
    data = b"".join(packer.compress(rows) for _ in range(side // 100)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side // 100 * 100, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", data)
        + _chunk(b"IEND", b"")
    )


def zip_file() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("readme.txt", "not an image\n" * 100)
    return out.getvalue()
