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
frames each (``VideoIndex``), one listed video planted near the query. Last, memory:
``--processes`` processes each holding a hash list of ``--listed`` such videos, as a
proxy process holds it (the shared index file mapped, ``HashList.mapped``; and built in
each process, ``HashList(snapshot)``, what a process does when the directory cannot be
used): what each process adds, counted by PSS (a page shared by N processes counts 1/N
to each), measured once every process holds the list.

    .venv/bin/python bench/video.py [--seconds 10] [--rounds 3] [--listed 10000]
        [--processes 4] [--skip-decode]
"""

from __future__ import annotations

import argparse
import gc
import io
import multiprocessing
import pathlib
import random
import tempfile
import time

import av
import numpy as np
from PIL import Image

from blocklist_addon.hashes import HashList, HashSnapshot
from blocklist_addon.hashes.records import HashRecord
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


def pss_kb() -> int:
    """This process's proportional set size (kB)."""
    for line in pathlib.Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise RuntimeError("no Pss in smaps_rollup")


def _hold(path: str, directory: str | None, query: list, barrier, done) -> tuple[int, bool]:  # type: ignore[no-untyped-def]
    """A process holding the list (mapped from ``directory``, or built here): the PSS it
    adds, measured once every process holds it, and whether the planted video matched."""
    gc.collect()
    before = pss_kb()
    snapshot = HashSnapshot.from_bytes(pathlib.Path(path).read_bytes())
    if directory is None:
        hashes = HashList(snapshot)
    else:
        hashes, note = HashList.mapped(snapshot, directory)
        assert note is None, note
    del snapshot  # a mapped list keeps the file's copy, not the bytes read
    gc.collect()
    matched = hashes.match_video(query) is not None
    barrier.wait(600)
    added = pss_kb() - before
    done.wait(600)
    return added, matched


def bench_memory(listed: list[list], query: list, processes: int) -> None:
    """PSS each of ``processes`` processes adds holding a list of the ``listed`` videos."""
    rng = random.Random(9)
    records = [
        ("bench", HashRecord((("md5", rng.randbytes(16)),), f"v{i}", None, tuple(video)))
        for i, video in enumerate(listed)
    ]
    snapshot = HashSnapshot.build(records)
    frames = sum(len(v) for v in listed)
    size = len(snapshot.to_bytes()) / 2**20
    print(f"\nmemory: {processes} processes holding {len(listed):,} listed videos ({frames:,} "
          f"frames; the snapshot {size:.0f} MiB), PSS each adds")  # fmt: skip
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "snapshot.bin"
        path.write_bytes(snapshot.to_bytes())
        directory = str(pathlib.Path(tmp) / "hashindex")
        started = time.perf_counter()
        HashList.mapped(snapshot, directory)  # the first process writes the file
        written = time.perf_counter() - started
        for label, where in (("mapped (one file a machine)", directory), ("built in each", None)):
            manager = context.Manager()
            barrier, done = manager.Barrier(processes + 1), manager.Event()
            with context.Pool(processes) as pool:
                pending = [
                    pool.apply_async(_hold, (str(path), where, query, barrier, done))
                    for _ in range(processes)
                ]
                barrier.wait(600)
                done.set()
                results = [p.get(600) for p in pending]
            manager.shutdown()
            assert all(matched for _, matched in results)
            added = [kb / 1024 for kb, _ in results]
            print(f"   {label:<28} {min(added):6.1f}-{max(added):6.1f} MiB a process, "
                  f"{sum(added):6.1f} MiB for the {processes}")  # fmt: skip
        print(f"   (the first process built and wrote the file in {written:.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--listed", type=int, default=10_000)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--skip-decode", action="store_true")
    args = parser.parse_args()

    if not args.skip_decode:
        bench_decode(args)
    bench_match(args)


def bench_decode(args: argparse.Namespace) -> None:
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


def bench_match(args: argparse.Namespace) -> None:
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
    del index
    bench_memory(listed, query, args.processes)


if __name__ == "__main__":
    main()
