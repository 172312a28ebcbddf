"""Test videos drawn by the tests themselves (never real content), encoded with PyAV.

``draw(seed)`` paints a clip: a scene every 2 seconds (a gradient under a coarse mosaic of
random tiles, which gives PDQ quality 88-100), two to five shapes drifting at most 3
pixels a second and a line of text naming the scene. Slow drift keeps frames half a
second apart within ~20 bits of each other, so a clip cut at any time still matches;
different seeds give unrelated frames (PDQ distances of 100-150 of 256).
``encode(frames, ...)`` writes them in a container with one of the wheel's encoders.
"""

from __future__ import annotations

import io
import random
from collections.abc import Iterable, Mapping

import av
import numpy as np
from PIL import Image, ImageDraw

#: Container, encoder, pixel format and bit rate (None: the encoder's default) of each
#: variant the tests write (mpeg4's default, 1 Mbit/s at its default quantizers, smears
#: these small frames by up to 60 bits).
FORMATS: dict[str, tuple[str, str, str, int | None]] = {
    "mp4": ("mp4", "libx264", "yuv420p", None),
    "mov": ("mov", "libx264", "yuv420p", None),
    "webm": ("webm", "libvpx-vp9", "yuv420p", None),
    "mkv": ("matroska", "mpeg4", "yuv420p", 400_000),
    "avi": ("avi", "mjpeg", "yuvj420p", None),
}


def draw(
    seed: int, seconds: float = 8, fps: int = 10, size: tuple[int, int] = (320, 240)
) -> list[Image.Image]:
    rng = random.Random(seed)
    width, height = size
    end = tuple(rng.randrange(256) for _ in range(3))
    across = rng.random() < 0.5
    shapes = [
        (
            rng.choice("er"),
            rng.uniform(0, width),
            rng.uniform(0, height),
            rng.uniform(-3, 3),
            rng.uniform(-3, 3),
            rng.uniform(10, 40),
            tuple(rng.randrange(256) for _ in range(3)),
        )
        for _ in range(rng.randint(2, 5))
    ]
    label = "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789") for _ in range(6))
    tx, ty = rng.uniform(0, width - 40), rng.uniform(0, height - 12)
    ramp = np.linspace(0, 1, width if across else height)[:, None]
    backgrounds: dict[int, np.ndarray] = {}
    frames = []
    for number in range(round(seconds * fps)):
        at = number / fps
        scene = int(at // 2)
        if scene not in backgrounds:
            start = np.array([random.Random(seed * 1000 + scene).randrange(256) for _ in "rgb"])
            line = start * (1 - ramp) + np.array(end) * ramp
            grid = line[None, :, :] if across else line[:, None, :]
            tiles = np.random.default_rng(seed * 1000 + scene).integers(0, 256, (6, 8, 3))
            mosaic = np.kron(tiles, np.ones((height // 6 + 1, width // 8 + 1, 1)))
            backgrounds[scene] = (0.5 * grid + 0.5 * mosaic[:height, :width]).astype(np.uint8)
        image = Image.fromarray(backgrounds[scene])
        pen = ImageDraw.Draw(image)
        for kind, x, y, vx, vy, side, colour in shapes:
            cx, cy = (x + vx * at) % width, (y + vy * at) % height
            box = [cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]
            (pen.ellipse if kind == "e" else pen.rectangle)(box, fill=colour)
        pen.text((tx, ty), f"{label}{scene}", fill=tuple(255 - c for c in end))
        frames.append(image)
    return frames


def encode(
    frames: Iterable[Image.Image],
    kind: str = "mp4",
    *,
    fps: int = 10,
    size: tuple[int, int] | None = None,
    bit_rate: int | None = None,
    codec: str | None = None,
    options: Mapping[str, str] | None = None,
    muxer_options: Mapping[str, str] | None = None,
) -> bytes:
    """The frames as a video file of ``kind`` (a FORMATS key), resized to ``size``;
    ``options`` go to the encoder, ``muxer_options`` to the container."""
    container, default_codec, pixel_format, default_rate = FORMATS[kind]
    bit_rate = bit_rate or default_rate
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container, options=dict(muxer_options or {})) as out:
        stream = out.add_stream(codec or default_codec, rate=fps)
        started = False
        for image in frames:
            if size is not None:
                image = image.resize(size, Image.Resampling.BILINEAR)
            if not started:
                stream.width, stream.height = image.size
                stream.pix_fmt = pixel_format
                if bit_rate is not None:
                    stream.bit_rate = bit_rate
                if options:
                    stream.options = dict(options)
                started = True
            for packet in stream.encode(av.VideoFrame.from_image(image)):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buffer.getvalue()
