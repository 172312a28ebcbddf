"""Videos (blocklist_addon.hashes.video): recognized by their bytes, decoded with PyAV under
limits, hashed as vPDQ does (a PDQ hash a second) and matched by HMA's rule. The clips are
drawn here (testlab.videos): a listed clip re-encoded at another bit rate, resized, cut or
put in another container still matches; fifty other clips do not; what cannot be checked
says why."""

from __future__ import annotations

import io
import json
import random
from collections.abc import Iterator

import av
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blocklist_addon.hashes import images
from blocklist_addon.hashes.decoder import DecoderPool
from blocklist_addon.hashes.video import (
    CODECS,
    VideoHashes,
    VideoLimits,
    hash_video,
    sniff_video,
    truncated,
)
from blocklist_addon.hashes.vpdq import MAX_FEED_FRAMES, VideoIndex, VideoMatch, parse_vpdq, prepare
from testlab import images as test_images
from testlab.videos import FORMATS, draw, encode

LISTED = draw(1)  # 8 s at 10 fps, 320 x 240: 8 frames hashed
#: The listed clip as the hotline hashed it, and unrelated listed clips around it.
LISTED_FILE = encode(LISTED)
DECOYS = [encode(draw(seed, seconds=4)) for seed in range(2, 6)]


@pytest.fixture(scope="module")
def listed() -> list[tuple[tuple[bytes, int], ...]]:
    """The listed clip's frames, then the decoys'."""
    return [hash_video(LISTED_FILE).frames] + [hash_video(d).frames for d in DECOYS]


@pytest.fixture(scope="module")
def listing(listed: list[tuple[tuple[bytes, int], ...]]) -> VideoIndex:
    return VideoIndex(listed)


# -- what matches --------------------------------------------------------------------------

VARIANTS = {
    # name: (file, query share, compared share)
    "the same file": (lambda: LISTED_FILE, 100.0, 100.0),
    "H.264 at CRF 40 (a third of the bytes)": (
        lambda: encode(LISTED, options={"crf": "40"}),
        100.0,
        100.0,
    ),
    "resized to 240 x 180": (lambda: encode(LISTED, size=(240, 180)), 100.0, 100.0),
    "VP9 in WebM": (lambda: encode(LISTED, "webm"), 100.0, 100.0),
    "MPEG-4 part 2 in Matroska": (lambda: encode(LISTED, "mkv"), 100.0, 100.0),
    "MJPEG in AVI": (lambda: encode(LISTED, "avi"), 100.0, 100.0),
    "QuickTime": (lambda: encode(LISTED, "mov"), 100.0, 100.0),
    "cut at 2 s": (lambda: encode(LISTED[20:]), 100.0, 75.0),
    "cut at 2.5 s (between samples)": (lambda: encode(LISTED[25:]), 100.0, 75.0),
    # 0, 1, 2 s match the listed 0, 1, 2 s and its 3 s (the scene of 2 s, 1 s on)
    "its first 3 s": (lambda: encode(LISTED[:30]), 100.0, 50.0),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_a_listed_clip_reencoded_resized_or_cut_matches(
    listing: VideoIndex, listed: list, variant: str
) -> None:
    """HMA's rule at its defaults (80% of the query's frames within 31 bits of the listed
    video's): a copy made another way is found, it alone (no decoy), the shares are the
    exact counts and the distance the closest frames' (computed here pair by pair)."""
    make, query_share, compared_share = VARIANTS[variant]
    hashed = hash_video(make())
    assert hashed.unchecked is None
    nearest = closest(hashed.frames, listed[0])
    assert listing.matches(hashed.frames) == [VideoMatch(0, query_share, compared_share, nearest)]


def test_fifty_other_clips_do_not_match(listing: VideoIndex) -> None:
    """Unrelated clips, each fully decoded and hashed (4 frames), match no listed video, not
    even the decoys of the same length."""
    for seed in range(100, 150):
        hashed = hash_video(encode(draw(seed, seconds=4, fps=5, size=(128, 96)), fps=5))
        assert (hashed.unchecked, len(hashed.frames)) == (None, 4), seed
        assert listing.matches(hashed.frames) == [], seed


def test_one_frame_a_second_from_the_first_whatever_the_frame_rate() -> None:
    """vPDQ's sampling: frames at 0, 1, 2 ... s of the video's own time, at 10 or 25 fps
    alike (the same picture at the same time hashes the same)."""
    at_10 = hash_video(encode(LISTED))
    at_25 = hash_video(encode([f for f in LISTED for _ in range(5)][::2], fps=25))
    assert (len(at_10.frames), at_10.decoded, at_10.seconds) == (8, 80, 7.9)
    assert (len(at_25.frames), at_25.decoded, at_25.seconds) == (8, 200, 7.96)
    assert (
        max(distance(a, b) for (a, _), (b, _) in zip(at_10.frames, at_25.frames, strict=True)) <= 16
    )


def test_a_forged_frame_rate_does_not_thin_the_sampling(listing: VideoIndex, listed: list) -> None:
    """A listed clip in Matroska whose DefaultDuration claims 1 ms a frame (1,000 fps):
    FFmpeg then reports that rate, so sampling by frame count (vPDQ's every
    int(rate)-th frame) would hash frame 0 alone, and a plain first frame (quality < 50,
    filtered) would leave nothing to match. By presentation time: 8 frames, matched."""
    whole = encode(LISTED, "mkv")
    at = whole.index(b"\x23\xe3\x83\x84")  # DefaultDuration, 4 bytes: 100,000,000 ns
    assert int.from_bytes(whole[at + 4 : at + 8], "big") == 100_000_000
    forged = whole[: at + 4] + (1_000_000).to_bytes(4, "big") + whole[at + 8 :]
    with av.open(io.BytesIO(forged)) as media:
        assert media.streams.video[0].average_rate == 1000
    hashed = hash_video(forged)
    assert (hashed.unchecked, len(hashed.frames), hashed.decoded) == (None, 8, 80)
    assert listing.matches(hashed.frames) == hma_brute(hashed.frames, listed)
    assert listing.match(hashed.frames) == VideoMatch(
        0, 100.0, 100.0, closest(hashed.frames, listed[0])
    )


def test_the_worker_pool_gives_what_this_process_does() -> None:
    """The proxy runs hash_video in its decoder workers (rlimits, restarts): same answer."""
    pool = DecoderPool(1, work=hash_video)
    try:
        got = pool.run(LISTED_FILE, VideoLimits(), cpu_seconds=30, timeout=120)
    finally:
        pool.close()
    assert isinstance(got, VideoHashes)
    assert got == hash_video(LISTED_FILE, VideoLimits())


# -- what cannot be checked ----------------------------------------------------------------


def test_a_clip_past_each_limit_is_unchecked_with_its_reason() -> None:
    size = len(LISTED_FILE)
    cases = {
        "bytes": (VideoLimits(max_bytes=size - 1), "too-large", 0),
        "pixels": (VideoLimits(max_pixels=320 * 240 - 1), "too-large", 0),
        "frames": (VideoLimits(max_frames=35), "frames-skipped", 4),  # 0, 1, 2, 3 s
        "seconds": (VideoLimits(max_seconds=3.0), "frames-skipped", 4),
        "time": (VideoLimits(max_ms=0), "frames-skipped", 0),
    }
    for name, (limits, reason, frames) in cases.items():
        hashed = hash_video(LISTED_FILE, limits)
        assert (hashed.unchecked, len(hashed.frames)) == (reason, frames), name
    at_bound = VideoLimits(max_bytes=size, max_pixels=320 * 240, max_frames=80, max_seconds=7.9)
    assert hash_video(LISTED_FILE, at_bound) == hash_video(LISTED_FILE)


def test_what_was_hashed_before_a_limit_still_matches(listing: VideoIndex) -> None:
    """Stopped at 3 s of an 8 s listed clip: unchecked, and refused all the same."""
    hashed = hash_video(LISTED_FILE, VideoLimits(max_seconds=3.0))
    assert hashed.unchecked == "frames-skipped"
    assert listing.match(hashed.frames) == VideoMatch(0, 100.0, 50.0, 0)


@pytest.mark.parametrize("kind", ["mp4", "webm", "avi"])
def test_a_truncated_file_is_unchecked_as_truncated(kind: str) -> None:
    """Cut in half: the container's own framing says bytes are missing (an MP4 whose index
    came last cannot even be opened)."""
    whole = encode(LISTED, kind)
    half = whole[: len(whole) // 2]
    assert not truncated(whole, sniff_video(whole) or "")
    assert truncated(half, sniff_video(half) or "")
    assert hash_video(half).unchecked == "truncated"


@pytest.mark.parametrize("kind", ["webm", "mkv", "avi"])
def test_a_truncated_stream_is_matched_as_far_as_it_goes(
    listing: VideoIndex, listed: list, kind: str
) -> None:
    """Matroska and AVI cut at three quarters: the frames before the cut (0-5 s) are
    hashed and matched, and the check says truncated. (FFmpeg opens no cut MP4, not even
    a fragmented one: that is the test above.)"""
    whole = encode(LISTED, kind)
    hashed = hash_video(whole[: len(whole) * 3 // 4])
    assert (hashed.unchecked, len(hashed.frames)) == ("truncated", 6)
    # 6 of the 8 listed frames, the closest pair as computed here
    expected = VideoMatch(0, 100.0, 75.0, closest(hashed.frames, listed[0]))
    assert listing.matches(hashed.frames) == hma_brute(hashed.frames, listed) == [expected]


def test_corrupt_or_foreign_bytes_are_undecodable() -> None:
    rng = random.Random(7)
    junk = bytes(rng.randrange(256) for _ in range(4000))
    ftyp = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"
    garbled = ftyp + (8 + len(junk)).to_bytes(4, "big") + b"moov" + junk
    unknown_codec = encode(LISTED[:20], "mkv", codec="ffv1")
    webm = encode(LISTED[:20], "webm")
    no_codec = webm.replace(b"V_VP9", b"V_ZZZ")  # a codec id FFmpeg does not know
    assert "ffv1" not in CODECS
    assert hash_video(junk) == VideoHashes((), None, "undecodable")
    assert hash_video(garbled) == VideoHashes((), "mp4", "undecodable")
    assert hash_video(unknown_codec) == VideoHashes((), "matroska", "undecodable")
    assert no_codec != webm
    assert hash_video(no_codec) == VideoHashes((), "matroska", "undecodable")


SMALL = {kind: encode(LISTED[:30], kind) for kind in ("mp4", "webm", "avi", "mkv")}
REASONS = {None, "too-large", "truncated", "undecodable", "frames-skipped", "decoder-crashed"}


@pytest.fixture(scope="module")
def workers() -> Iterator[DecoderPool]:
    pool = DecoderPool(2, work=hash_video)
    try:
        yield pool
    finally:
        pool.close()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(sorted(SMALL)),
    st.lists(
        st.tuples(st.sampled_from("sdi"), st.floats(0, 1), st.binary(min_size=1, max_size=64)),
        min_size=1,
        max_size=20,
    ),
)
def test_a_damaged_clip_is_answered_with_a_reason_never_an_error(
    workers: DecoderPool, kind: str, edits: list[tuple[str, float, bytes]]
) -> None:
    """Bytes set, deleted or inserted anywhere in a 3 s clip: hash_video answers (in a
    worker, as the proxy runs it: a crash there is decoder-crashed, never the process),
    with hashes of good PDQ form and one of the reason words. A codec FFmpeg does not
    know once raised AttributeError here (found by this kind of mutation)."""
    data = bytearray(SMALL[kind])
    for op, where, chunk in edits:
        at = int(where * (len(data) - 1))
        if op == "s":
            data[at : at + len(chunk)] = chunk
        elif op == "d":
            del data[at : at + len(chunk)]
        else:
            data[at:at] = chunk
    try:
        got = workers.run(bytes(data), VideoLimits(max_ms=5000), cpu_seconds=10, timeout=60)
    except images.Uncheckable as exc:
        assert exc.reason == "decoder-crashed"
        return
    assert isinstance(got, VideoHashes) and got.unchecked in REASONS
    assert all(len(h) == 32 and 0 <= q <= 100 for h, q in got.frames)
    assert len(got.frames) <= got.decoded


# -- recognizing -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(FORMATS))
def test_each_container_is_recognized_by_its_bytes(kind: str) -> None:
    """Whatever a client declares, the first bytes decide; the image sniffer leaves every
    video to this one, and this one leaves every image to it."""
    family = {"mp4": "mp4", "mov": "mp4", "webm": "matroska", "mkv": "matroska", "avi": "avi"}
    data = encode(LISTED[:10], kind)
    assert sniff_video(data) == family[kind]
    assert images.sniff(data) is None


def test_images_and_other_iso_media_are_not_videos() -> None:
    picture = test_images.draw(3, (64, 48))
    for fmt in ("JPEG", "PNG", "GIF", "WEBP", "HEIF", "AVIF", "TIFF", "BMP"):
        data = test_images.encode(picture, fmt)
        assert images.sniff(data) == fmt
        assert sniff_video(data) is None, fmt
    quicktime = b"\x00\x00\x00\x08wide\x00\x00\x10\x00mdat"  # before ftyp existed
    assert sniff_video(quicktime) == "mp4"
    assert sniff_video(b"RIFF\x10\x00\x00\x00WAVEfmt ") is None
    assert sniff_video(b"\x1a\x45\xdf") is None  # too short to say
    assert sniff_video(b"\x00\x00\x00\x05wide\x00\x00\x00\x00") is None  # a box can't be 5


# -- the matcher against HMA's brute force ---------------------------------------------------


def distance(a: bytes, b: bytes) -> int:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).bit_count()


def closest(query: tuple[tuple[bytes, int], ...], listed: tuple[tuple[bytes, int], ...]) -> int:
    """The smallest distance between frames of quality 50 or more of both (HMA's filter)."""
    return min(distance(a, b) for a, qa in query for b, qb in listed if qa >= 50 and qb >= 50)


def hma_brute(
    query: list[tuple[bytes, int]], listed: list[list[tuple[bytes, int]]], threshold: int = 31
) -> list[VideoMatch]:
    """A transcription of python-threatexchange's match_VPDQ_hash_brute (quality filter,
    dedupe, every pair compared) and of VPDQIndex.query's thresholds (80.0 / 0.0)."""

    q = prepare(query)
    found = []
    for number, frames in enumerate(listed):
        t = prepare(frames)
        if not q or not t:
            continue
        q_hits = sum(any(distance(a, b) <= threshold for b in t) for a in q)
        t_hits = sum(any(distance(b, a) <= threshold for a in q) for b in t)
        if q_hits * 100 / len(q) >= 80.0 and t_hits * 100 / len(t) >= 0.0 and q_hits:
            best = min(distance(a, b) for a in q for b in t)
            found.append(VideoMatch(number, q_hits * 100 / len(q), t_hits * 100 / len(t), best))
    found.sort(key=lambda m: (-m.query_percent, -m.compared_percent, m.video))
    return found


def flip(value: bytes, bits: int, rng: random.Random) -> bytes:
    number = int.from_bytes(value, "big")
    for bit in rng.sample(range(256), bits):
        number ^= 1 << bit
    return number.to_bytes(32, "big")


def random_listing(seed: int, videos: int, frames: int) -> tuple[list[bytes], list[list]]:
    """Videos made of near copies (0-40 bits) of a few base frames, some repeated exactly,
    some of low quality: the cases the rule's filters and shares are about."""
    rng = random.Random(seed)
    bases = [rng.randbytes(32) for _ in range(max(4, videos))]
    listed = []
    for _ in range(videos):
        own = rng.sample(bases, 3)
        listed.append(
            [
                (flip(rng.choice(own), rng.choice([0, 0, 5, 20, 31, 32, 40]), rng), q)
                for q in rng.choices([100, 90, 50, 49, 10], k=frames)
            ]
        )
    return bases, listed


@pytest.fixture(scope="module")
def probed() -> tuple[list[list], VideoIndex]:
    """About 1,500 listed frames (of 2,480: quality and dedupe) in 8-bit chunks: the index
    probes its tables (no scan), and a video of 80 frames sharing their first 64 bits
    fills buckets past the hot limit, so its frames are found in the hot set instead."""
    _, listed = random_listing(11, 60, 40)
    rng = random.Random(12)
    prefix = rng.randbytes(8)
    listed.append([(prefix + rng.randbytes(24), 100) for _ in range(80)])
    index = VideoIndex(listed, bits=8)
    # 32 tables of 8 bits, each probed at the query's chunk alone (radius 0)
    assert index.index.probes(31) == 32
    # hot: every prepared frame in a bucket of more than the limit in any table (the 80
    # sharing their first 8 chunks, and whatever else falls in those buckets), no other
    rows = np.frombuffer(index.arrays()["hashes"], dtype=np.uint8).reshape(-1, 32)
    limit = index.index.hot_limit
    crowded = np.zeros(len(rows), dtype=bool)
    for offset in range(0, 256, 8):
        chunk = rows[:, offset // 8].astype(np.int64)
        crowded |= np.bincount(chunk, minlength=256)[chunk] > limit
    assert np.flatnonzero(crowded).tolist() == index.index.arrays()["hot"].tolist()
    assert index.index.hot >= 80
    return listed, index


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32), st.integers(1, 12))
def test_the_index_answers_as_the_brute_force_rule(
    probed: tuple[list[list], VideoIndex], seed: int, length: int
) -> None:
    """Every listed video the rule matches, with the same shares and distance, in the same
    order: the index finds every frame within the threshold, not just the nearest. Queries
    are mostly near copies of one listed video's frames (the hot one a third of the time),
    some of another's."""
    listed, index = probed
    rng = random.Random(seed)
    target = listed[-1] if rng.random() < 0.3 else rng.choice(listed)
    query = [
        (
            flip(
                rng.choice(target if rng.random() < 0.85 else rng.choice(listed))[0],
                rng.choice([0, 3, 15, 30, 31, 31, 32]),
                rng,
            ),
            quality,
        )
        for quality in rng.choices([100, 70, 50, 49], k=length)
    ]
    assert index.matches(query) == hma_brute(query, listed)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 8), st.integers(1, 12))
def test_small_listings_scanned_answer_as_the_brute_force_rule(
    seed: int, videos: int, length: int
) -> None:
    bases, listed = random_listing(seed, videos, 6)
    index = VideoIndex(listed)
    rng = random.Random(seed + 1)
    query = [(flip(rng.choice(bases), rng.choice([0, 10, 31, 32]), rng), 90) for _ in "x" * length]
    assert index.index.probes(31) is None
    assert index.matches(query) == hma_brute(query, listed)


def test_the_thresholds_are_options() -> None:
    """A cut holding 3 s of an 8 s video: matched at HMA's defaults, not when the listed
    video's share must be 80% too, nor when frames must agree within 10 bits."""
    listed = [hash_video(LISTED_FILE).frames]
    cut = hash_video(encode(LISTED[:30], options={"crf": "40"})).frames
    assert VideoIndex(listed).matches(cut) == hma_brute(cut, listed)
    assert [m.video for m in hma_brute(cut, listed)] == [0]
    assert VideoIndex(listed, compared_match_percent=80.0).match(cut) is None
    assert VideoIndex(listed, distance_threshold=10).match(cut) is None
    with pytest.raises(ValueError):
        VideoIndex(listed, query_match_percent=101)


# -- a feed's vpdq field ---------------------------------------------------------------------

FRAMES = st.lists(st.tuples(st.binary(min_size=32, max_size=32), st.integers(0, 100)), min_size=1)


@given(FRAMES, st.sampled_from(["compact", "signal", "cli", "old", "objects"]))
def test_a_vpdq_field_reads_back_in_each_form_hma_writes(
    frames: list[tuple[bytes, int]], form: str
) -> None:
    """HMA's compact features (a list, or its JSON signal string), the vpdq CLI's lines,
    the older signal string keyed by frame number, and objects: the same frames."""
    compact = [f"{h.hex()},{q},{n:.3f}" for n, (h, q) in enumerate(frames)]
    value = {
        "compact": compact,
        "signal": json.dumps(compact),
        "cli": [f"{n},{h.hex().upper()},{q},{n}" for n, (h, q) in enumerate(frames)],
        "old": json.dumps(
            {
                str(n): {"hash": h.hex(), "quality": q, "timestamp": n}
                for n, (h, q) in enumerate(frames)
            }
        ),
        "objects": [{"hash": h.hex(), "quality": q} for h, q in frames],
    }[form]
    assert parse_vpdq(value) == tuple(frames)


def test_a_malformed_vpdq_field_is_refused() -> None:
    good = "ab" * 32
    for value in [
        None,
        "",
        "[]",
        [],
        "not json",
        [f"{good},100"],  # no timestamp
        [f"{good[:-2]},100,0"],  # 31 bytes
        [f"{'zz' * 32},100,0"],
        [f"{good},101,0"],
        [f"{good},-1,0"],
        [f"{good},high,0"],
        [f"{good},100,1", f"{good},100,0.5"],  # time goes back
        [f"{good},100,-1"],
        [f"{good},100,nan"],
        [{"hash": good, "quality": True}],
        [{"hash": good}],
        [[good, 100]],
        {"x": {"hash": good, "quality": 1}},
        [f"{good},100,0"] * (MAX_FEED_FRAMES + 1),
    ]:
        assert parse_vpdq(value) is None, value
    assert parse_vpdq([f"{good},100,0"] * MAX_FEED_FRAMES) == ((bytes.fromhex(good), 100),) * (
        MAX_FEED_FRAMES
    )
