"""Videos in the hash list (issue 22, item 3): a feed record's ``vpdq`` read by the sync,
kept in the snapshot (format 3; a list without videos is written as before, and formats 1
and 2 still read), carried through merges and suppressions, and matched by
``HashList.check_video``: a listed clip re-encoded, resized or trimmed is found, twenty
other clips are not. The clips are drawn here (testlab.videos); nothing from a real list."""

from __future__ import annotations

import hashlib
import json
import pathlib
import random
import struct

import pytest

from blocklist_addon.hashes import HashEntry, HashList, HashMatch, HashSnapshot
from blocklist_addon.hashes.records import HashRecord, HashRecords, record_of
from blocklist_addon.hashes.snapshot import SnapshotError
from blocklist_addon.hashes.video import hash_video
from sync import cli
from sync.feeds import FeedError, parse_feed, validate
from testlab.videos import draw, encode

LISTED = draw(1)  # 8 s at 10 fps, 320 x 240: 8 frames hashed
LISTED_FILE = encode(LISTED)
FRAMES = hash_video(LISTED_FILE).frames
#: The listed video as HMA's compact features (what a feed's vpdq field holds).
COMPACT = [f"{value.hex()},{quality},{n:.3f}" for n, (value, quality) in enumerate(FRAMES)]
RNG = random.Random(22)
MD5 = RNG.randbytes(16)
PDQ = RNG.randbytes(32)
MAGIC = b"\x89BLHASH\n"


def video(rng: random.Random, frames: int) -> tuple[tuple[bytes, int], ...]:
    return tuple((rng.randbytes(32), rng.randrange(50, 101)) for _ in range(frames))


def jsonl(records: list[dict[str, object]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def checksummed(data: bytes) -> bytes:
    """``data`` with its last 32 bytes replaced by the SHA-256 of the rest."""
    return data[:-32] + hashlib.sha256(data[:-32]).digest()


# -- the feed ------------------------------------------------------------------------------


def test_jsonl_and_csv_records_may_carry_vpdq_alone_or_with_hashes() -> None:
    """A record with vpdq alone is an entry; with exact hashes too it keeps both; a CSV
    column holds HMA's JSON signal string."""
    feed = parse_feed(
        jsonl(
            [
                {"id": "clip", "category": "A", "vpdq": COMPACT},
                {"id": "both", "md5": MD5.hex(), "vpdq": json.dumps(COMPACT[:2])},
                {"id": "plain", "pdq": PDQ.hex(), "vpdq": ""},
            ]
        ),
        "hashes-jsonl",
    )
    assert (feed.records, feed.invalid_count) == (3, 0)
    clip, both, plain = feed.entries
    assert (clip.entry_id, clip.category, clip.hashes, clip.vpdq) == ("clip", "A", (), FRAMES)
    assert both.hashes == (("md5", MD5),) and both.vpdq == FRAMES[:2]
    assert plain.hashes == (("pdq", PDQ),) and plain.vpdq == ()

    signal = json.dumps(COMPACT).replace('"', '""')
    csv = f'id,vpdq,md5\nclip,"{signal}",\nexact,,{MD5.hex()}\n'.encode()
    feed = parse_feed(csv, "hashes-csv")
    assert (feed.records, feed.invalid_count) == (2, 0)
    assert [(r.entry_id, r.vpdq) for r in feed.entries] == [("clip", FRAMES), ("exact", ())]


@pytest.mark.parametrize(
    "value",
    [
        [COMPACT[0].replace(",", ";")],  # not HMA's form
        [COMPACT[0][:-10] + "101,0.000"],  # quality past 100
        [COMPACT[1], COMPACT[0]],  # time goes back
        "[" + COMPACT[0],  # a signal string cut short
        {"hash": FRAMES[0][0].hex()},
        7,
    ],
)
def test_a_bad_vpdq_makes_its_record_invalid_named_by_line_never_quoted(value: object) -> None:
    """The record is invalid even with a good MD5 beside it, and the refusal names its line
    and nothing of its content (hashes are confidential)."""
    good = [{"id": f"g{i}", "vpdq": COMPACT} for i in range(3)]
    body = jsonl([*good, {"id": "bad", "md5": MD5.hex(), "vpdq": value}])
    feed = parse_feed(body, "hashes-jsonl")
    assert (feed.records, feed.invalid_count, feed.invalid) == (4, 1, [4])
    with pytest.raises(FeedError) as refused:
        validate(feed)
    message = str(refused.value)
    assert "1 of 4 records invalid (lines 4)" in message
    assert MD5.hex() not in message.lower()
    assert not any(value.hex() in message.lower() for value, _ in FRAMES)


def test_record_of_reads_vpdq_as_the_feed_does() -> None:
    """``HashList.from_entries``' reader: vpdq alone is a record, a bad one none."""
    record = record_of({"id": "v", "vpdq": COMPACT})
    assert record == HashRecord((), "v", None, FRAMES)
    assert record_of({"id": "v", "md5": MD5.hex(), "vpdq": ["x"]}) is None
    assert record_of({"id": "v", "vpdq": "[]"}) is None  # nothing listed at all
    unnamed = record_of({"vpdq": COMPACT})
    assert unnamed is not None and len(unnamed.id()) == 16
    assert all(value.hex()[:16] != unnamed.id() for value, _ in FRAMES)
    listed = HashList.from_entries([HashEntry(id="e", vpdq=COMPACT, category="A")])
    assert listed.match_video(FRAMES) == HashMatch("default", "e", "vpdq", 0, "A")


# -- the snapshot --------------------------------------------------------------------------


def v2_bytes(sections: list[bytes], version: int) -> bytes:
    """A snapshot packed by hand as formats 1 and 2 lay it out (the module docstring)."""
    head = struct.pack("<8sI13I", MAGIC, version, *map(len, sections))
    return head + b"".join(sections) + hashlib.sha256(head + b"".join(sections)).digest()


def old_sections(document: dict[str, object], categories: bytes = b"") -> list[bytes]:
    """One entry "e1" with an MD5, in the layout of formats 1 and 2."""
    metadata = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    owners = struct.pack("<I", 0)
    ids = struct.pack("<2I", 0, 2)
    return [MD5, owners, b"", b"", b"", b"", b"", b"", ids, b"", b"e1", metadata, categories]


def test_a_list_without_videos_is_written_and_read_as_before() -> None:
    """Byte for byte the format 1 (no category) or 2 layout, so a proxy that reads only
    those keeps working until a feed lists a video; both still read."""
    counts = {"md5": 1, "pdq": 0, "sha1": 0, "sha256": 0}
    document = {"lists": ["old"], "meta": {"entries": 1, "hashes": counts}}
    record = HashRecord((("md5", MD5),), "e1")
    assert HashSnapshot.build([("old", record)]).to_bytes() == v2_bytes(old_sections(document), 1)
    with_category = HashRecord((("md5", MD5),), "e1", "B")
    expected = v2_bytes(old_sections({**document, "categories": ["B"]}, b"\x01\x00"), 2)
    assert HashSnapshot.build([("old", with_category)]).to_bytes() == expected
    for data, category in [(v2_bytes(old_sections(document), 1), None), (expected, "B")]:
        snapshot = HashSnapshot.from_bytes(data)
        assert snapshot.video() is None
        assert list(snapshot.records()) == [("old", HashRecord((("md5", MD5),), "e1", category))]
        hashlist = HashList(snapshot)
        assert hashlist.kinds == {"md5"}
        assert hashlist.check_video(LISTED_FILE).match is None  # nothing decoded, no video


def test_a_list_with_videos_is_format_3_and_round_trips() -> None:
    """Format 3: format 2's header, then the count of further sections (3) and their
    lengths; the frames of each entry together, in order; every record comes back."""
    rng = random.Random(5)
    records = [
        ("a", HashRecord((("md5", MD5),), "m", "A")),
        ("a", HashRecord((), "v1", None, video(rng, 3))),
        ("b", HashRecord((("pdq", PDQ),), "both", "B", video(rng, 5))),
        ("a", HashRecord((), None, "C", video(rng, 2))),
    ]
    snapshot = HashSnapshot.build(records)
    data = snapshot.to_bytes()
    magic, version, *lengths = struct.unpack_from("<8sI13I", data)
    extra, *more = struct.unpack_from("<4I", data, 64)
    assert (magic, version, extra, more) == (MAGIC, 3, 3, [320, 10, 40])
    start = 80 + sum(lengths)
    frames = b"".join(value for _, r in records for value, _ in r.vpdq)
    assert data[start : start + 320] == frames
    assert list(data[start + 320 : start + 330]) == [q for _, r in records for _, q in r.vpdq]
    assert struct.unpack_from("<10I", data, start + 330) == (1,) * 3 + (2,) * 5 + (3,) * 2
    assert (snapshot.meta["videos"], snapshot.meta["frames"]) == (3, 10)
    unnamed = records[3][1]
    expected = [*records[:3], ("a", HashRecord((), unnamed.id(), "C", unnamed.vpdq))]
    assert list(snapshot.records()) == expected
    assert list(HashSnapshot.from_bytes(data).records()) == expected
    assert HashSnapshot.build(snapshot.records()).to_bytes() == data


def test_a_damaged_format_3_is_refused_whole() -> None:
    """A count of further sections this does not know, frames out of entry order, a
    quality past 100, a truncated header: each refused with its reason."""
    rng = random.Random(6)
    data = HashSnapshot.build(
        [
            ("a", HashRecord((), "x", None, video(rng, 2))),
            ("a", HashRecord((), "y", None, video(rng, 1))),
        ]
    ).to_bytes()
    more = bytearray(data)
    more[64:68] = struct.pack("<I", 4)
    with pytest.raises(SnapshotError, match=r"^unsupported hash snapshot format 3 with 4 further"):
        HashSnapshot.from_bytes(checksummed(bytes(more)))
    owners = len(data) - 32 - 12
    backwards = bytearray(data)
    backwards[owners : owners + 12] = struct.pack("<3I", 1, 0, 0)
    quality = bytearray(data)
    quality[owners - 1] = 101
    for damaged in (backwards, quality):
        with pytest.raises(SnapshotError, match=r"^malformed hash snapshot: vpdq sections$"):
            HashSnapshot.from_bytes(checksummed(bytes(damaged)))
    with pytest.raises(SnapshotError, match=r"^truncated hash snapshot: only 100 bytes$"):
        HashSnapshot.from_bytes(data[:68] + bytes(32))


def test_a_video_listed_twice_is_one_entry_and_counted_as_a_duplicate() -> None:
    """The first record keeps a video, as it keeps a hash; the same frames at another
    quality are another video; a record keeps its exact hash when its video is a
    duplicate; the digest tells records with different videos apart."""
    rng = random.Random(7)
    clip = video(rng, 4)
    requalified = tuple((value, quality - 1) for value, quality in clip)
    packed = HashRecords()
    for record in [
        HashRecord((), "first", None, clip),
        HashRecord((), "again", None, clip),
        HashRecord((), "other", None, requalified),
        HashRecord((("md5", MD5),), "md5-and-again", None, clip),
    ]:
        packed.append(record, "l")
    assert (packed.distinct(), packed.duplicates()) == (3, 2)
    snapshot = HashSnapshot.build(packed)
    assert [(r.entry_id, r.vpdq) for _, r in snapshot.records()] == [
        ("first", clip),
        ("other", requalified),
        ("md5-and-again", ()),
    ]
    assert HashRecord((), "a", None, clip).digest != HashRecord((), "a", None, requalified).digest
    assert HashRecord((), "a", None, clip).digest == HashRecord((), "b", None, clip).digest


def test_suppressing_a_video_entry_drops_its_frames_and_keeps_the_others() -> None:
    """``add_snapshot`` (the sync's suppress and rebuild) carries frames with their entry
    and leaves a suppressed entry's out, whichever kind it has."""
    rng = random.Random(8)
    records = [
        ("l", HashRecord((), "v1", "A", video(rng, 3))),
        ("l", HashRecord((("md5", MD5),), "m", None)),
        ("l", HashRecord((), "v2", None, video(rng, 2))),
        ("l", HashRecord((("pdq", PDQ),), "v3", "B", video(rng, 4))),
    ]
    snapshot = HashSnapshot.build(records)
    for suppressed in [set(), {"v1"}, {"v2", "m"}, {"v3"}, {"v1", "v2", "v3"}]:
        packed = HashRecords()
        packed.add_snapshot(snapshot, "w", suppressed)
        kept = [("w", r) for _, r in records if r.entry_id not in suppressed]
        assert list(packed) == [r for _, r in kept], suppressed
        assert list(HashSnapshot.build(packed).records()) == kept, suppressed


# -- matching ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hashlist() -> HashList:
    rng = random.Random(9)
    return HashList.from_entries(
        [
            {"id": "decoy", "vpdq": [{"hash": v.hex(), "quality": q} for v, q in video(rng, 6)]},
            {"id": "clip-1", "category": "A", "vpdq": COMPACT, "list": "hotline"},
            {"id": "image", "pdq": PDQ.hex()},
        ]
    )


@pytest.mark.parametrize(
    "variant",
    [
        pytest.param(lambda: encode(LISTED, options={"crf": "40"}), id="re-encoded-crf-40"),
        pytest.param(lambda: encode(LISTED, size=(240, 180)), id="resized-240x180"),
        pytest.param(lambda: encode(LISTED[25:]), id="trimmed-2.5s"),
        pytest.param(lambda: encode(LISTED, "webm"), id="vp9-webm"),
    ],
)
def test_check_video_finds_a_listed_clip_made_another_way(hashlist: HashList, variant) -> None:
    """The match names the list, the entry and its category, as other matches do; its
    distance is the closest frames' (never a hash), computed here pair by pair."""
    data = variant()
    check = hashlist.check_video(data)
    distance = closest(hash_video(data).frames, FRAMES)
    assert distance <= 31
    expected = HashMatch("hotline", "clip-1", "vpdq", distance, "A")
    assert (check.match, check.unchecked) == (expected, None)
    assert check.video == ("matroska" if data[:4] == b"\x1a\x45\xdf\xa3" else "mp4")
    assert hashlist.check(data) == check  # check() sends videos there too


def closest(query: tuple[tuple[bytes, int], ...], listed: tuple[tuple[bytes, int], ...]) -> int:
    """The smallest distance between frames of quality 50 or more of both (HMA's filter)."""
    return min(
        (int.from_bytes(a) ^ int.from_bytes(b)).bit_count()
        for a, qa in query
        for b, qb in listed
        if qa >= 50 and qb >= 50
    )


def test_twenty_other_clips_do_not_match(hashlist: HashList) -> None:
    """Unrelated clips, fully decoded (4 frames each), match nothing and are not unchecked."""
    for seed in range(200, 220):
        check = hashlist.check_video(encode(draw(seed, seconds=4, fps=5, size=(128, 96)), fps=5))
        assert (check.match, check.unchecked, check.video) == (None, None, "mp4"), seed


def test_what_cannot_be_decoded_is_unchecked_with_its_reason(hashlist: HashList) -> None:
    """A truncated file says so; a file that is no video is not decoded at all."""
    check = hashlist.check_video(LISTED_FILE[: len(LISTED_FILE) // 3])
    assert check.video == "mp4" and check.unchecked == "truncated"
    assert hashlist.check_video(b"plain text, not a video\n") == hashlist.check(b"x" * 30)
    assert hashlist.kinds == {"pdq", "vpdq"}


@pytest.mark.parametrize("with_pdq", [False, True], ids=["video-only", "video-and-pdq"])
def test_a_list_with_videos_maps_and_matches(tmp_path: pathlib.Path, with_pdq: bool) -> None:
    """The shared file (``hashes.mapped``) of a list whose only hashes are videos, or
    videos and PDQ: mapped without a note, read back by a second process's load, and the
    video index (built in each process) finds the clip."""
    entries: list[dict[str, object]] = [{"id": "clip", "vpdq": COMPACT}]
    if with_pdq:
        entries.append({"id": "image", "pdq": PDQ.hex()})
    snapshot = HashList.from_entries(entries)._snapshot
    for _ in range(2):  # written, then read from the file
        hashlist, note = HashList.mapped(snapshot, tmp_path)
        assert note is None
        assert hashlist.match_video(FRAMES) == HashMatch("default", "clip", "vpdq", 0, None)
    assert len(list(tmp_path.glob("*.pdqx"))) == 1


async def test_the_sync_stores_videos_and_suppresses_one(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``blocklist-sync`` of a feed with vpdq records: the stored list matches the clip;
    suppressing its id takes it out at once, unsuppressing brings it back."""
    monkeypatch.setenv("BLOCKLIST_DATA_DIR", str(tmp_path / "data"))
    feed = tmp_path / "hashes.jsonl"
    feed.write_bytes(jsonl([{"id": "clip", "vpdq": COMPACT}, {"id": "exact", "md5": MD5.hex()}]))
    store = (tmp_path / "store").as_uri()
    args = ["--store", store, "--feed-url", feed.as_uri(), "--format", "hashes-jsonl"]
    args += ["--name", "hotline"]

    async def run(*argv: str) -> int:
        return await cli.run(cli.build_parser().parse_args(list(argv)))

    assert await run(*args) == 0
    hashlist = await HashList.aload(store)
    assert hashlist.match_video(FRAMES) == HashMatch("hotline", "clip", "vpdq", 0, None)
    assert await run(*args, "suppress", "--kind", "hashes", "clip") == 0
    suppressed = await HashList.aload(store)
    assert (len(suppressed), suppressed.match_video(FRAMES), suppressed.kinds) == (
        1,
        None,
        {"md5"},
    )
    assert await run(*args, "unsuppress", "--kind", "hashes", "clip") == 0
    assert (await HashList.aload(store)).match_video(FRAMES) == HashMatch(
        "hotline", "clip", "vpdq", 0, None
    )
    printed = capsys.readouterr()
    assert not any(v.hex() in (printed.out + printed.err).lower() for v, _ in FRAMES)
