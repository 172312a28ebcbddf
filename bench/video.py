"""Video benchmark: what checking an uploaded video costs, per second of video and per MB,
against plain decoding measured in the same run, and what matching its hashes costs.

Clips are drawn here (``testlab.videos.draw``: scenes of a mosaic and moving shapes, never
real content) with grain added to every frame (so the encoders spend what real footage
costs), and encoded with H.264 (libx264) and VP9 at a few frame sizes, at bit rates usual
for them (0.5, 1 and 2.5 Mbit/s).
For each clip, in this process, one thread (the decoder workers run one per core):

- ``decode``: the reference, PyAV demuxing and decoding every frame, nothing else;
- ``hash_video``: what a worker does (decode, convert the sampled frame a second to RGB
  at most 512 a side, PDQ), under the default limits.

CPU time (user + system of this process) is the figure, best of ``--rounds``: a loaded
machine inflates wall time, and the workers are bounded by CPU time. Then matching: a
query's frames (60, a minute of video) against ``--listed`` random listed videos of 60
frames each (``VideoIndex``), one listed video planted near the query.

    .venv/bin/python bench/video.py [--seconds 10] [--rounds 3] [--listed 10000]
"""

from __future__ import annotations

import argparse
import io
import random
import time

import av
import numpy as np
from PIL import Image

from blocklist_addon.hashes.video import VideoLimits, hash_video
from blocklist_addon.hashes.vpdq import VideoIndex
from testlab.videos import draw, encode

#: Frame size and bit rate of each clip.
SIZES = [((320, 240), 500_000), ((640, 360), 1_000_000), ((1280, 720), 2_500_000)]


def grainy(frames: list[Image.Image], seed: int) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(
            np.clip(
                np.asarray(f, dtype=np.int16) + rng.integers(-12, 13, (f.height, f.width, 1)),
                0,
                255,
            ).astype(np.uint8)
        )
        for f in frames
    ]


def cpu() -> float:
    return time.process_time()


def decode_only(data: bytes) -> int:
    """Every frame decoded, one thread, nothing done with it: the reference."""
    frames = 0
    with av.open(io.BytesIO(data), format="mov" if data[4:8] == b"ftyp" else "matroska") as media:
        stream = media.streams.video[0]
        stream.codec_context.thread_type = "SLICE"
        stream.codec_context.thread_count = 1
        for packet in media.demux(stream):
            frames += len(packet.decode())
    return frames


def best(rounds: int, work, *args) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(rounds):
        started = cpu()
        work(*args)
        times.append(cpu() - started)
    return min(times)


def flip(value: bytes, bits: int, rng: random.Random) -> bytes:
    number = int.from_bytes(value, "big")
    for bit in rng.sample(range(256), bits):
        number ^= 1 << bit
    return number.to_bytes(32, "big")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--listed", type=int, default=10_000)
    args = parser.parse_args()

    print(f"clips of {args.seconds} s at {args.fps} fps; CPU ms, best of {args.rounds}")
    header = f"{'clip':<22}{'MB':>7}{'decode':>9}{'hash':>9}{'x':>6}"
    print(header + f"{'hash/s video':>14}{'hash/MB':>10}{'decode/MB':>11}")
    for (width, height), bit_rate in SIZES:
        frames = grainy(draw(7, seconds=args.seconds, fps=args.fps, size=(width, height)), 7)
        for kind in ("mp4", "webm"):
            if kind == "webm" and width > 640:
                continue  # libvpx-vp9 encodes 720p too slowly for a bench run
            data = encode(frames, kind, fps=args.fps, bit_rate=bit_rate)
            hashed = hash_video(data, VideoLimits())
            assert hashed.unchecked is None and len(hashed.frames) == args.seconds
            decode = best(args.rounds, decode_only, data)
            hashing = best(args.rounds, hash_video, data, VideoLimits())
            mb = len(data) / 1e6
            name = f"{width}x{height} {'H.264' if kind == 'mp4' else 'VP9'}"
            print(
                f"{name:<22}{mb:>7.2f}{decode * 1e3:>9.0f}{hashing * 1e3:>9.0f}"
                f"{hashing / decode:>6.2f}{hashing * 1e3 / args.seconds:>14.1f}"
                f"{hashing * 1e3 / mb:>10.0f}{decode * 1e3 / mb:>11.0f}"
            )

    rng = random.Random(5)
    query = [(rng.randbytes(32), 100) for _ in range(60)]
    listed = [[(rng.randbytes(32), 100) for _ in range(60)] for _ in range(args.listed - 1)]
    listed.append([(flip(value, 20, rng), 100) for value, _ in query])
    started = time.perf_counter()
    index = VideoIndex(listed)
    built = time.perf_counter() - started
    frames = sum(len(v) for v in listed)
    probes = index.index.probes(31)
    rounds = []
    for _ in range(args.rounds):
        started = cpu()
        found = index.matches(query)
        rounds.append(cpu() - started)
    assert [m.video for m in found] == [args.listed - 1], found
    print(
        f"\nmatch: {args.listed:,} listed videos ({frames:,} frames), index built in "
        f"{built:.1f} s ({'scan' if probes is None else f'{probes} probes a frame'}); "
        f"a 60-frame query {min(rounds) * 1e3:.1f} ms of CPU ({min(rounds) * 1e3 / 60:.2f} ms "
        f"a frame, best of {args.rounds})"
    )


if __name__ == "__main__":
    main()
