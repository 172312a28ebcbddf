"""The image hash matching core: exact hashes, PDQ under the edits a listed image survives,
unrelated images never matched, hostile files, and the snapshot format."""

from __future__ import annotations

import resource

import pytest

from blocklist_addon import HashList, HashMatch
from blocklist_addon.hashes import Check, HashEntry, HashSnapshot, Limits, sniff
from blocklist_addon.hashes.images import Uncheckable, frames
from blocklist_addon.hashes.pdq import PdqIndex
from blocklist_addon.urls.snapshot import SnapshotError
from testlab.images import (
    bomb_png,
    draw,
    encode,
    md5,
    png_declaring,
    reference_pdq,
    variants,
    zip_file,
)

LISTED = draw(1)
LISTED_JPEG = encode(LISTED, quality=90)
LISTED_HEIC = encode(LISTED, "HEIF", quality=60)


def listed_distance(data: bytes, listed: str, threshold: int = 31) -> int | None:
    """What the guard must report, worked out here by brute force and not by the index:
    the Hamming distance from ``listed`` (hex) to the nearest of the 8 orientations of the
    first frame of ``data`` that comes within ``threshold``; None when no frame does."""
    from blocklist_addon.hashes.pdq import pdq_hashes

    target = int.from_bytes(bytes.fromhex(listed))
    for frame in frames(data):
        hashes, _ = pdq_hashes(frame)
        nearest = min((int.from_bytes(h) ^ target).bit_count() for h in hashes)
        if nearest <= threshold:
            return nearest
    return None


@pytest.fixture(scope="module")
def hashlist() -> HashList:
    return HashList.from_entries(
        [
            HashEntry(id="pdq-1", pdq=reference_pdq(LISTED), list_name="hotline"),
            HashEntry(id="md5-1", md5=md5(LISTED_JPEG), list_name="hotline"),
            {"id": "other", "pdq": reference_pdq(draw(99999)), "list": "hotline"},
        ]
    )


@pytest.mark.parametrize("edit", list(variants(LISTED)))
def test_a_listed_image_is_found_after_the_edits_it_survives(hashlist: HashList, edit: str):
    data = variants(LISTED)[edit]
    distance = listed_distance(data, reference_pdq(LISTED))
    assert distance is not None and 0 < distance <= 31, edit  # an edit, yet within reach
    assert hashlist.match_bytes(data) == HashMatch("hotline", "pdq-1", "pdq", distance), edit


def test_two_hundred_unrelated_images_are_never_matched(hashlist: HashList):
    for seed in range(1000, 1200):
        assert hashlist.match_bytes(encode(draw(seed, (320, 240)), quality=85)) is None, seed


def test_an_exact_hash_blocks_the_identical_file_only():
    hl = HashList.from_entries([HashEntry(id="e1", md5=md5(LISTED_JPEG))])
    assert hl.match_bytes(LISTED_JPEG) == HashMatch("default", "e1", "md5", 0)
    assert hl.match_bytes(LISTED_JPEG + b"\0") is None  # one byte more: another file
    assert hl.match_bytes(encode(LISTED, quality=89)) is None  # the same picture re-encoded
    assert hl.kinds == {"md5"}


@pytest.mark.parametrize("kind", ["md5", "sha1", "sha256"])
def test_every_exact_kind_matches_any_file(kind: str):
    import hashlib

    data = zip_file()
    hl = HashList.from_entries([{"id": "z", kind: hashlib.new(kind, data).hexdigest().upper()}])
    assert hl.match_bytes(data) == HashMatch("default", "z", kind, 0)


def test_the_threshold_is_configurable():
    strict = HashList.from_entries([{"id": "p", "pdq": reference_pdq(LISTED)}], threshold=0)
    assert strict.match_bytes(variants(LISTED)["jpeg-q40"]) is None
    default = HashList.from_entries([{"id": "p", "pdq": reference_pdq(LISTED)}])
    distance = listed_distance(variants(LISTED)["jpeg-q40"], reference_pdq(LISTED))
    assert distance is not None and distance > 0
    assert default.match_bytes(variants(LISTED)["jpeg-q40"]) == HashMatch(
        "default", "p", "pdq", distance
    )


def test_low_quality_images_match_exactly_only():
    flat = draw(5).resize((640, 480)).convert("L").point(lambda v: 128 + (v > 128))
    data = encode(flat, "PNG")
    hl = HashList.from_entries([{"id": "p", "pdq": reference_pdq(LISTED)}])
    # Its own hash at distance 0 matches; a hash a few bits away does not.
    from blocklist_addon.hashes.pdq import pdq_hashes

    [frame] = list(frames(data))
    own, quality = pdq_hashes(frame, dihedral=False)
    assert quality < 50
    near = bytes([own[0][0] ^ 0b111]) + own[0][1:]
    exact = HashList.from_entries([{"id": "x", "pdq": own[0].hex()}])
    assert exact.match_pdq(own, quality) == HashMatch("default", "x", "pdq", 0)
    neighbour = HashList.from_entries([{"id": "n", "pdq": near.hex()}])
    assert neighbour.match_pdq(own, quality) is None
    # The same hash of a good frame would: 3 bits flipped.
    assert neighbour.match_pdq(own, 100) == HashMatch("default", "n", "pdq", 3)
    assert hl.match_bytes(data) is None


def test_the_nearest_listed_hash_wins():
    from blocklist_addon.hashes.pdq import pdq_hashes

    [frame] = list(frames(LISTED_JPEG))
    [own], _ = pdq_hashes(frame, dihedral=False)

    def flip(bits: int) -> str:
        value = int.from_bytes(own) ^ ((1 << bits) - 1)
        return value.to_bytes(32).hex()

    hl = HashList.from_entries([{"id": "far", "pdq": flip(20)}, {"id": "near", "pdq": flip(3)}])
    assert hl.match_bytes(LISTED_JPEG) == HashMatch("default", "near", "pdq", 3)


# -- hostile files -----------------------------------------------------------------------


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("decompression bomb", bomb_png(), "too-large"),
        ("truncated JPEG", LISTED_JPEG[: len(LISTED_JPEG) // 2], "truncated"),
        ("PNG declaring 100000 x 100000", png_declaring(100_000, 100_000), "too-large"),
        ("PNG short of pixel data", png_declaring(64, 64), "truncated"),
        ("JPEG header only", b"\xff\xd8\xff\xe0" + b"\0" * 64, "undecodable"),
        ("truncated HEIC", LISTED_HEIC[: len(LISTED_HEIC) // 2], "truncated"),
        ("HEIC header only", LISTED_HEIC[:64], "undecodable"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_hostile_images_are_uncheckable_not_fatal(name: str, data: bytes, reason: str):
    pdq_only = HashList.from_entries([{"id": "p", "pdq": reference_pdq(LISTED)}])
    before = max_rss_mib()
    check = pdq_only.check(data)
    assert max_rss_mib() - before < 200, name  # a 400-megapixel bomb is never decoded
    kind = {"decompression bomb": "PNG", "truncated JPEG": "JPEG", "JPEG header only": "JPEG"}
    image = kind.get(name, "HEIF" if "HEIC" in name else "PNG")
    assert check.match is None and check.image == image, (name, check)
    assert check.unchecked == reason, (name, check)
    # Its exact hash still applies, whatever its pixels.
    both = HashList.from_entries(
        [{"id": "p", "pdq": reference_pdq(LISTED)}, {"id": "m", "md5": md5(data)}]
    )
    assert both.match_bytes(data) == HashMatch("default", "m", "md5", 0)


def test_a_zip_named_jpg_is_no_image_and_its_exact_hash_still_applies():
    data = zip_file()
    assert sniff(data) is None
    hl = HashList.from_entries([{"id": "p", "pdq": reference_pdq(LISTED)}])
    check = hl.check(data)
    assert check.match is None and check.image is None and check.unchecked is None
    assert HashList.from_entries([{"id": "z", "md5": md5(data)}]).match_bytes(data) == HashMatch(
        "default", "z", "md5", 0
    )


def test_animations_are_checked_frame_by_frame_up_to_the_limit():
    frames_ = [draw(300 + i) for i in range(5)] + [LISTED]
    gif = encode(frames_[0], "GIF", save_all=True, append_images=frames_[1:], duration=100)
    listed_first = encode(LISTED, "GIF", save_all=True, append_images=frames_[:2], duration=100)
    listed = reference_pdq(LISTED)
    hl = HashList.from_entries(
        [{"id": "p", "pdq": listed}, {"id": "q", "pdq": reference_pdq(draw(77))}]
    )
    first = HashMatch("default", "p", "pdq", listed_distance(listed_first, listed))
    assert hl.match_bytes(listed_first) == first
    # The 6th frame: every frame up to 1000.
    assert hl.match_bytes(gif) == HashMatch("default", "p", "pdq", listed_distance(gif, listed))
    shallow = HashList.from_entries(
        [{"id": "p", "pdq": reference_pdq(LISTED)}], limits=Limits(max_frames=4)
    )
    check = shallow.check(gif)  # past the limit: said, never silent
    assert check.match is None and check.unchecked == "frames-skipped"
    assert shallow.check(listed_first).match == first


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_the_listed_picture_deep_in_an_animation_is_found(fmt: str) -> None:
    """Frame 50 of 60: four frames used to be hashed, and nothing said the rest were not."""
    frames_ = [draw(400 + i, (160, 120)) for i in range(60)]
    frames_[49] = LISTED.resize((160, 120))
    data = encode(frames_[0], fmt, save_all=True, append_images=frames_[1:], duration=50)
    listed = reference_pdq(LISTED)
    hl = HashList.from_entries([{"id": "p", "pdq": listed}])
    check = hl.check(data)
    assert check.match == HashMatch("default", "p", "pdq", listed_distance(data, listed))
    assert check.unchecked is None


@pytest.mark.parametrize("fmt", ["AVIF", "ICO", "JPEG2000"])
def test_more_formats_are_recognized_by_their_bytes_and_checked(fmt: str) -> None:
    side = (256, 192) if fmt != "ICO" else (128, 128)
    data = encode(LISTED.resize(side), fmt)
    assert sniff(data) == fmt
    listed = reference_pdq(LISTED.resize(side))
    hl = HashList.from_entries([{"id": "p", "pdq": listed, "list": "formats"}])
    expected = HashMatch("formats", "p", "pdq", listed_distance(data, listed))
    assert hl.check(data) == Check(expected, fmt)


@pytest.mark.parametrize(
    ("fmt", "options"),
    [
        ("JPEG", {}),
        ("PNG", {}),
        ("GIF", {}),
        ("WEBP", {}),
        ("BMP", {}),
        ("TIFF", {}),
        ("HEIF", {"quality": 50}),
    ],
)
def test_every_format_is_recognized_by_its_bytes(fmt: str, options: dict[str, object]):
    data = encode(draw(7, (64, 48)), fmt, **options)
    assert sniff(data) == fmt
    assert len(list(frames(data))) == 1


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"BM",
        b"BMxxxxxxxxxxxxxxxxxxxx",
        b"GIF8",
        b"RIFF\0\0\0\0WAVE",
        b"%PDF-1.7",
        b"\0\0\0\x18ftypisom\0\0\0\0isommp41",  # an MP4 video: ISO media, not HEIF
    ],
)
def test_non_images_are_not_sniffed_as_images(data: bytes):
    assert sniff(data) is None
    with pytest.raises(Uncheckable):
        list(frames(data))


# -- the snapshot ------------------------------------------------------------------------


def test_the_snapshot_round_trips_and_refuses_damage():
    entries = [
        {"id": "a", "md5": "0" * 32, "sha1": "1" * 40},
        {"id": "b", "sha256": "2" * 64, "pdq": "3" * 64, "list": "other"},
        {"md5": "4" * 32},  # no id: an opaque one that is not the hash
        {"id": "dup", "md5": "0" * 32},  # its only hash belongs to "a": dropped
    ]
    hl = HashList.from_entries(entries)
    assert len(hl) == 3
    snapshot = HashSnapshot.from_bytes(HashSnapshot.build([]).to_bytes())
    assert len(snapshot) == 0
    data = _snapshot_bytes(entries)
    again = HashSnapshot.from_bytes(data)
    assert again.counts() == {"md5": 2, "sha1": 1, "sha256": 1, "pdq": 1}
    names = {again.entry(n) for n in range(len(again))}
    assert ("default", "a") in names and ("other", "b") in names
    [opaque] = [i for _, i in names if i not in ("a", "b")]
    assert "4444" not in opaque and len(opaque) == 16
    for damaged in (data[:-1], data[:100], b"x" + data[1:], data[:70] + b"\xff" + data[71:]):
        with pytest.raises(SnapshotError):
            HashSnapshot.from_bytes(damaged)


def _snapshot_bytes(entries: list[dict[str, str]]) -> bytes:
    from blocklist_addon.hashes import record_of

    return HashSnapshot.build(
        (entry.get("list", "default"), record_of(entry)) for entry in entries
    ).to_bytes()


def test_malformed_entries_are_refused_by_position():
    for bad in ({"id": "x"}, {"md5": "abc"}, {"pdq": "g" * 64}, {"sha1": "0" * 41}):
        with pytest.raises(ValueError, match="entry 2"):
            HashList.from_entries([{"md5": "0" * 32}, bad])


def test_the_index_finds_within_the_radius_only():
    zero = bytes(32)
    index = PdqIndex(zero + (b"\xff" * 4 + bytes(28)) + (b"\x01" + bytes(31)))
    assert index.nearest([zero], 31) == (0, 0)
    assert index.nearest([b"\xff" * 4 + bytes(28)], 0) == (1, 0)
    assert index.nearest([b"\x03" + bytes(31)], 1) == (2, 1)
    assert index.nearest([b"\xff" * 32], 31) is None
    assert PdqIndex(b"").nearest([zero], 31) is None


def test_the_shipped_self_test_entry_matches_the_projects_own_screenshot():
    """samples/selftest-hashes.jsonl (the operator's guide's check) lists docs/splash.png."""
    import io
    import pathlib

    from PIL import Image

    from sync.feeds import parse_feed

    root = pathlib.Path(__file__).resolve().parent.parent
    feed = parse_feed((root / "samples" / "selftest-hashes.jsonl").read_bytes(), "hashes-jsonl")
    assert feed.invalid_count == 0 and len(feed.entries) == 1
    hl = HashList(HashSnapshot.build(("selftest", r) for r in feed.entries))
    screenshot = (root / "docs" / "splash.png").read_bytes()
    assert hl.match_bytes(screenshot) == HashMatch("selftest", "selftest-image", "md5", 0)
    smaller = Image.open(io.BytesIO(screenshot)).convert("RGB").resize((450, 450))
    smaller_jpeg = encode(smaller, quality=70)
    [record] = feed.entries
    [listed] = [value.hex() for kind, value in record.hashes if kind == "pdq"]
    distance = listed_distance(smaller_jpeg, listed)
    assert distance is not None
    assert hl.match_bytes(smaller_jpeg) == HashMatch("selftest", "selftest-image", "pdq", distance)
