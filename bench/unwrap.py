"""What finding the files in an upload costs (blocklist_addon.hashes.unwrap), against reading
the same bytes once with SHA-256 (the least any check does), measured in the same run.

    .venv/bin/python bench/unwrap.py

Bodies: a form with five 2-megapixel JPEGs (what a photo upload looks like), a 32 MiB body of
random bytes (the worst case for the signature search: nothing to skip), a form of 3,000 tiny
parts, and a JSON post carrying a picture as a base64 data URL. Each is timed best of 5.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import random
import time
from collections.abc import Callable

from PIL import Image, ImageDraw

from blocklist_addon.content.multipart import parts
from blocklist_addon.hashes.unwrap import unwrap

LIMIT = 32 << 20


def photo(seed: int, size: tuple[int, int]) -> bytes:
    rng = random.Random(seed)
    image = Image.new("RGB", size, (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    draw = ImageDraw.Draw(image)
    for _ in range(60):
        x, y = rng.randrange(size[0]), rng.randrange(size[1])
        box = (x, y, x + rng.randrange(20, 400), y + rng.randrange(20, 400))
        draw.ellipse(box, fill=(rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=88)
    return out.getvalue()


def form(files: list[bytes]) -> tuple[bytes, str]:
    boundary = b"----benchBoundary"
    body = b"".join(
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="f"; filename="a.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n" + data + b"\r\n"
        for data in files
    )
    return body + b"--" + boundary + b"--\r\n", "multipart/form-data; boundary=" + boundary.decode()


def best(run: Callable[[], object], rounds: int = 5) -> float:
    times = []
    for _ in range(rounds):
        began = time.perf_counter()
        run()
        times.append(time.perf_counter() - began)
    return min(times)


def main() -> None:
    picture = photo(1, (640, 480))
    data_url = "data:image/jpeg;base64," + base64.b64encode(picture).decode()
    bodies = {
        "5 photos, 2 MP each": form([photo(i, (1600, 1200)) for i in range(5)]),
        "32 MiB random bytes": (os.urandom(32 << 20), "application/octet-stream"),
        "3,000 tiny parts": form([photo(7, (8, 8)) + bytes([i % 251]) for i in range(3000)]),
        "JSON with a data URL": (
            json.dumps({"post": {"image": data_url}}).encode(),
            "application/json",
        ),
    }
    print(
        f"{'body':<24} {'MiB':>7} {'unwrap ms':>10} {'MB/s':>8} {'sha256 ms':>10} {'ratio':>7}"
        " pieces"
    )
    for name, (body, content_type) in bodies.items():
        found = unwrap(body, content_type, max_bytes=LIMIT)
        took = best(lambda: unwrap(body, content_type, max_bytes=LIMIT))  # noqa: B023
        reference = best(lambda: hashlib.sha256(body).digest())  # noqa: B023
        print(
            f"{name:<24} {len(body) / 2**20:7.2f} {took * 1000:10.2f} "
            f"{len(body) / took / 1e6:8.0f} {reference * 1000:10.2f} {took / reference:7.1f} "
            f"{len(found.files)}"
        )
    body, content_type = bodies["5 photos, 2 MP each"]
    strict = best(lambda: parts(body, content_type))
    print(f"\nmultipart.parts alone (strict + lenient) on the 5 photos: {strict * 1000:.2f} ms")


if __name__ == "__main__":
    main()
