"""Image hash list feeds: the parsers (tables and hypothesis) and ``blocklist-sync`` of a
hashes-jsonl / hashes-csv feed into the store's "hashes" namespace, Redis and file store,
with the same gates, versions, rollback and suppression as URL lists."""

from __future__ import annotations

import json
import pathlib
import random
import tracemalloc

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from blocklist_addon.hashes import KINDS, HashList, HashMatch, HashSnapshot
from blocklist_addon.hashes.records import HashRecord, HashRecords
from blocklist_addon.lists.store import open_store
from blocklist_addon.ops.config import ConfigError
from sync import cli
from sync.feeds import FeedError, parse_feed, validate

SIZES = {"md5": 16, "sha1": 20, "sha256": 32, "pdq": 32}


def random_hex(kind: str, rng: random.Random) -> str:
    return rng.randbytes(SIZES[kind]).hex()


def jsonl(records: list[dict[str, object]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


RNG = random.Random(14)
RECORDS = [{"id": f"h{i}", "category": "A", RNG.choice(KINDS): None} for i in range(40)]
for record in RECORDS:
    kind = next(k for k in KINDS if k in record)
    record[kind] = random_hex(kind, RNG)
FEED = jsonl(RECORDS)
#: What must never appear in logs or output: every hash of the feed, in any case.
SECRETS = [str(v).lower().encode() for r in RECORDS for k, v in r.items() if k in KINDS]


# -- parsers -------------------------------------------------------------------------------


def test_jsonl_records_with_one_or_more_hashes():
    feed = parse_feed(
        b'{"id": "a", "md5": "00112233445566778899AABBCCDDEEFF", "pdq": "' + b"ab" * 32 + b'"}\n'
        b"\n# a comment\n"
        b'{"id": 7, "sha1": "' + b"01" * 20 + b'"}\n',
        "hashes-jsonl",
    )
    assert feed.records == 2 and feed.invalid_count == 0
    first, second = feed.entries
    assert first.entry_id == "a" and [k for k, _ in first.hashes] == ["md5", "pdq"]
    assert first.hashes[0][1] == bytes.fromhex("00112233445566778899aabbccddeeff")
    assert second.entry_id == "7"


@pytest.mark.parametrize(
    "line",
    [
        b'{"id": "x"}',  # no hash
        b'{"id": "x", "md5": "0011"}',  # too short
        b'{"id": "x", "sha1": "' + b"0" * 42 + b'"}',  # too long
        b'{"id": "x", "pdq": "' + b"zz" * 32 + b'"}',  # not hex
        b'{"id": "x", "md5": 12345}',  # not a string
        b'{"id": ["x"], "md5": "' + b"0" * 32 + b'"}',  # a bad id
        b'["md5", "' + b"0" * 32 + b'"]',  # not an object
        b"{not json",
        b"00112233445566778899aabbccddeeff",  # a bare hash is not a record
    ],
)
def test_malformed_jsonl_records_are_invalid(line: bytes):
    good = b'{"id": "g", "md5": "' + b"1" * 32 + b'"}\n'
    feed = parse_feed(good + line + b"\n", "hashes-jsonl")
    assert feed.records == 2 and feed.invalid_count == 1 and feed.invalid == [2]


def test_csv_with_any_delimiter_and_column_order():
    text = "# header next\nPDQ;ID;Category;MD5\n" + f"{'cd' * 32};1;B;\n;2;;{'ef' * 16}\n"
    feed = parse_feed(text.encode(), "hashes-csv")
    first, second = feed.entries
    assert (first.entry_id, second.entry_id) == ("1", "2")
    assert first.hashes == (("pdq", bytes.fromhex("cd" * 32)),)
    assert second.hashes == (("md5", bytes.fromhex("ef" * 16)),)


def test_csv_without_a_hash_column_is_refused_without_echoing_it():
    with pytest.raises(FeedError, match="no hash column") as caught:
        parse_feed(b"id,url\n1,http://listed.example/\n", "hashes-csv")
    assert "listed.example" not in str(caught.value)


def test_a_feed_of_one_format_read_as_another_fails_validation():
    for data, fmt in [(FEED, "hashes-csv"), (b"http://a.example/\n" * 5, "hashes-jsonl")]:
        with pytest.raises(FeedError):
            validate(parse_feed(data, fmt))


def test_errors_never_hold_a_hash():
    good = [{"id": str(i), "md5": f"{i:032x}"} for i in range(5)]
    bad = jsonl(good + [{"id": "1", "md5": "0123456789abcdef0123456789abcdeX"}] * 3)
    with pytest.raises(FeedError) as caught:
        validate(parse_feed(bad, "hashes-jsonl"))
    assert "0123456789abcdef" not in str(caught.value) and "lines 6, 7, 8" in str(caught.value)


def test_duplicates_are_merged_and_counted():
    same = {"id": "a", "md5": "0" * 32}
    feed = parse_feed(
        jsonl([same, {**same, "id": "b"}, same, {"id": "c", "sha1": "1" * 40}]), "hashes-jsonl"
    )
    assert isinstance(feed.entries, HashRecords) and feed.entries.duplicates() == 2
    validate(feed)  # duplicates are not invalid
    assert feed.distinct() == 2  # distinct images, as the snapshot keeps


def test_the_shrink_gate_applies_to_hash_lists():
    feed = parse_feed(jsonl(RECORDS[:10]), "hashes-jsonl")
    with pytest.raises(FeedError, match="shrank from 40 to 10"):
        validate(feed, previous_entries=40)
    validate(feed, previous_entries=40, force=True)


hex_of = {
    kind: st.binary(min_size=SIZES[kind], max_size=SIZES[kind]).map(bytes.hex) for kind in KINDS
}
text = st.text(st.characters(codec="ascii", categories=("L", "N", "P", "Zs")), max_size=70)
record_strategy = st.fixed_dictionaries(
    {
        "id": st.one_of(
            st.none(), text.filter(lambda t: not t.lstrip().startswith("#")), st.integers()
        )
    },
    optional={kind: st.one_of(hex_of[kind], hex_of[kind].map(str.upper), text) for kind in KINDS}
    | {"category": text.map(lambda t: t[:5])},
)


def expected_hashes(record: dict[str, object]) -> tuple[tuple[str, bytes], ...] | None:
    """The model: the record's hashes, or None when it is invalid (no hash, or a bad one)."""
    given_ = {k: str(record[k]).strip() for k in KINDS if k in record and str(record[k]).strip()}
    for kind, value in given_.items():
        if len(value) != 2 * SIZES[kind] or any(c not in "0123456789abcdefABCDEF" for c in value):
            return None
    return tuple((k, bytes.fromhex(v)) for k, v in given_.items()) or None


def csv_bytes(records: list[dict[str, object]]) -> bytes:
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["id", "category", *KINDS])
    for r in records:
        cells = [r.get("id"), r.get("category"), *(r.get(k) for k in KINDS)]
        writer.writerow(["" if c is None else c for c in cells])
    return out.getvalue().encode()


@settings(max_examples=150, deadline=None)
@given(st.lists(record_strategy, max_size=30), st.sampled_from(["hashes-jsonl", "hashes-csv"]))
def test_parsers_agree_with_a_simple_model(records: list[dict[str, object]], fmt: str):
    """Any list of records, in either format: the valid ones (a hash, every hash given
    well-formed hex of its kind's length) come back with their hashes, in order; the
    others are counted invalid; a feed with no record at all is refused."""
    data = jsonl(records) if fmt == "hashes-jsonl" else csv_bytes(records)
    if fmt == "hashes-csv":  # a row of empty cells is no record
        records = [r for r in records if any(str(v).strip() for v in r.values() if v is not None)]
    try:
        feed = parse_feed(data, fmt)
    except FeedError as e:
        assert not records, e
        return
    model = [expected_hashes(r) for r in records]
    assert [e.hashes for e in feed.entries] == [m for m in model if m is not None]
    assert feed.records == len(records)
    assert feed.invalid_count == model.count(None)


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_csv_line_endings_and_bom(newline: str):
    """The body is decoded as it is read: a BOM, CRLF and old Mac CR still read as before."""
    rows = ["id,md5", f"a,{'ab' * 16}", "# note", f"b,{'cd' * 16}", "c,bad"]
    feed = parse_feed(("\ufeff" + newline.join(rows) + newline).encode(), "hashes-csv")
    assert [e.entry_id for e in feed.entries] == ["a", "b"]
    assert feed.records == 3 and feed.invalid == [5]


def test_invalid_utf8_is_found_by_line_past_the_first_chunk():
    """UTF-8 is checked a chunk of lines at a time; the line of a bad byte is exact in any
    chunk, and a character split across chunk reads is never mistaken for one."""
    line = ('{"id": "é€😀", "md5": "' + "0" * 32 + '"}\n').encode()
    body = line * 40_000  # 2.6 MB: three chunks
    feed = parse_feed(body, "hashes-jsonl")
    assert feed.records == 40_000 and feed.invalid_count == 0
    for at in (1, 17_000, 39_999):
        bad = line * (at - 1) + b'{"id": "\xc3("}\n' + line
        with pytest.raises(FeedError, match=f"^not text: invalid UTF-8 at line {at}$"):
            parse_feed(bad, "hashes-jsonl")


@pytest.mark.parametrize("fmt", ["hashes-jsonl", "hashes-csv"])
def test_max_entries_stops_reading_at_the_limit(fmt: str):
    data = jsonl(RECORDS) if fmt == "hashes-jsonl" else csv_bytes(RECORDS)
    first = 1 if fmt == "hashes-jsonl" else 2  # the line of the first record
    assert parse_feed(data, fmt, max_entries=40).records == 40
    with pytest.raises(FeedError) as caught:
        parse_feed(data, fmt, max_entries=39)
    assert str(caught.value) == (
        f"more than 39 entries (line {first + 39}), over the max_entries limit"
    )
    # Invalid records are counted, not entries: they do not reach the limit.
    bad = jsonl([{"id": "x", "md5": "0"}] * 10) + jsonl(RECORDS[:5])
    assert parse_feed(bad, "hashes-jsonl", max_entries=5).invalid_count == 10


def test_url_feeds_have_the_limit_too():
    body = "".join(f"http://h{i}.example.com/p\n" for i in range(10)).encode()
    assert len(parse_feed(body, "text", max_entries=10).entries) == 10
    with pytest.raises(FeedError, match=r"more than 9 entries \(line 10\)"):
        parse_feed(body, "text", max_entries=9)


def test_parsing_keeps_packed_hashes_not_objects():
    """A 100,000-record feed of MD5 + PDQ (48 bytes of hashes and ~5 of id a record) is read
    within 160 traced bytes a record and built within 400 (HashRecord objects in a list took
    ~700 to read and ~800 to build; bench/hashfeed.py measures it at 1,000,000)."""
    rng = random.Random(3)
    n = 100_000
    body = jsonl(
        [
            {"id": f"h{i:x}", "md5": rng.randbytes(16).hex(), "pdq": rng.randbytes(32).hex()}
            for i in range(n)
        ]
    )
    tracemalloc.start()
    try:
        feed = parse_feed(body, "hashes-jsonl")
        parse_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        assert isinstance(feed.entries, HashRecords)
        snapshot = HashSnapshot.build(feed.entries.named("bench"))
        build_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(snapshot) == n and feed.invalid_count == 0
    assert parse_peak / n < 160, parse_peak / n
    assert build_peak / n < 400, build_peak / n


def model_build(records: list[tuple[str, HashRecord]]) -> dict[str, object]:
    """What a snapshot holds, by the rule read simply: each hash belongs to the first record
    that lists it; a record left with no hash is dropped; entries are numbered in order."""
    owner: dict[tuple[str, bytes], int] = {}
    entries: list[tuple[str, str]] = []
    for name, record in records:
        fresh = [h for h in record.hashes if h not in owner]
        for h in fresh:
            owner[h] = len(entries)
        if fresh:
            entries.append((name, record.id()))
    sections = {
        kind: sorted((value, n) for (k, value), n in owner.items() if k == kind) for kind in KINDS
    }
    return {"entries": entries, "sections": sections}


def snapshot_contents(snapshot: HashSnapshot) -> dict[str, object]:
    sections = {}
    for kind in KINDS:
        hashes, owners = snapshot.section(kind)
        size = SIZES[kind]
        sections[kind] = [
            (bytes(hashes[i * size : (i + 1) * size]), owner) for i, owner in enumerate(owners)
        ]
    return {"entries": [snapshot.entry(n) for n in range(len(snapshot))], "sections": sections}


pools = st.fixed_dictionaries(
    {
        k: st.lists(st.binary(min_size=s, max_size=s), min_size=1, max_size=4)
        for k, s in SIZES.items()
    }
)


@settings(max_examples=150, deadline=None)
@given(pools, st.data())
def test_packed_build_agrees_with_a_simple_model(pool: dict[str, list[bytes]], data):
    """Records drawn from a few hashes (so duplicates are common), in up to three lists,
    with and without ids: the snapshot holds what the model says, and a stored snapshot
    read back into packed records (less suppressed ids) builds what its records build."""
    record = st.builds(
        lambda kinds, picks, entry_id: HashRecord(
            tuple(
                (k, pool[k][p % len(pool[k])])
                for k, p in zip(KINDS, picks, strict=True)
                if k in kinds
            ),
            entry_id,
        ),
        st.sets(st.sampled_from(KINDS)),
        st.lists(st.integers(0, 3), min_size=4, max_size=4),
        st.one_of(st.none(), st.sampled_from(["a", "b", "é", "🙂x"])),
    )
    records = data.draw(st.lists(st.tuples(st.sampled_from(["x", "y", "z"]), record)))
    snapshot = HashSnapshot.build(records)
    assert snapshot_contents(snapshot) == model_build(records)
    assert snapshot.meta["entries"] == len(snapshot)

    suppressed = data.draw(st.sets(st.sampled_from(["a", "b", "é", "🙂x"])))
    packed = HashRecords()
    packed.add_snapshot(snapshot, "w", suppressed)
    kept = [("w", r) for _, r in snapshot.records() if r.id() not in suppressed]
    assert HashSnapshot.build(packed).to_bytes() == HashSnapshot.build(kept).to_bytes()
    assert [(r.hashes, r.entry_id) for r in packed] == [(r.hashes, r.entry_id) for _, r in kept]


# -- blocklist-sync ------------------------------------------------------------------------


@pytest.fixture
async def feed_url(tmp_path: pathlib.Path):
    served = {"body": FEED}

    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=served["body"])

    app = web.Application()
    app.router.add_get("/hashes.jsonl", handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}/hashes.jsonl", served
    await runner.cleanup()


async def run(*argv: str) -> int:
    return await cli.run(cli.build_parser().parse_args(list(argv)))


async def hash_versions(store_url: str) -> list[int]:
    store = open_store(store_url, namespace="hashes")
    try:
        return [v.version for v in await store.versions()]
    finally:
        await store.close()


async def test_a_hash_feed_syncs_beside_the_url_list(
    store_url, feed_url, capsys, tmp_path, monkeypatch
):
    monkeypatch.setenv("BLOCKLIST_DATA_DIR", str(tmp_path / "data"))
    url, served = feed_url
    args = ["--store", store_url, "--feed-url", url, "--format", "hashes-jsonl", "--name", "hot"]
    assert await run(*args) == 0
    out = capsys.readouterr().out
    assert "hot: updated, 40 entries" in out and "activated hash list version 1" in out
    # The URL list is untouched: none is active there.
    url_store = open_store(store_url)
    try:
        assert await url_store.active() is None
    finally:
        await url_store.close()
    hl = await HashList.aload(store_url)
    assert len(hl) == 40 and hl.kinds <= set(KINDS)

    # Unchanged content: no new version. A shrunk feed: refused, the old list stays.
    assert await run(*args) == 0 and await hash_versions(store_url) == [1]
    served["body"] = jsonl(RECORDS[:5])
    assert await run(*args) == 1
    assert "shrank from 40 to 5" in capsys.readouterr().err
    assert await hash_versions(store_url) == [1]
    # Malformed hashes beyond the tolerance: refused, counted by line only.
    served["body"] = FEED + jsonl([{"id": "bad", "md5": "0" * 31}])
    assert await run(*args) == 1
    err = capsys.readouterr().err
    assert "1 of 41 records invalid (lines 41)" in err
    served["body"] = b""
    assert await run(*args) == 1 and "feed is empty" in capsys.readouterr().err
    assert await hash_versions(store_url) == [1]

    # status shows both kinds; --json too.
    assert await run("--store", store_url, "status") == 0
    out = capsys.readouterr().out
    assert "active: none" in out and "hash list active: version 1, 40 entries" in out
    assert await run("--store", store_url, "status", "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["active"] is None and doc["hashes"]["active"]["entries"] == 40

    # Suppress one entry by id (--kind hashes), at once; unsuppress; roll back.
    assert await run(*args, "suppress", "--kind", "hashes", "h3") == 0
    assert "activated hash list version 2, 39 entries" in capsys.readouterr().out
    assert len(await HashList.aload(store_url)) == 39
    assert await run(*args, "unsuppress", "--kind", "hashes", "h3") == 0
    assert len(await HashList.aload(store_url)) == 40
    assert await run("--store", store_url, "rollback", "--kind", "hashes") == 0
    assert "rolled back hash list: version 4, 39 entries, rollback to 2" in capsys.readouterr().out
    # The rolled-back content is not brought straight back by the next cron run.
    served["body"] = FEED
    assert await run(*args) == 0
    assert len(await HashList.aload(store_url)) == 39

    everything = capsys.readouterr()
    for secret in SECRETS:
        assert secret not in (everything.out + everything.err).lower().encode()


async def test_url_and_hash_feeds_in_one_config(store_url, feed_url, tmp_path, capsys):
    url, _ = feed_url
    urls = tmp_path / "urls.txt"
    urls.write_text("http://blocked.example.com/page.html\n")
    config = tmp_path / "sync.toml"
    config.write_text(
        f'store = "{store_url}"\n'
        f'[feeds.urls]\nurl = "{urls.as_uri()}"\nformat = "text"\n'
        f'[feeds.hashes]\nurl = "{url}"\nformat = "hashes-jsonl"\nlist = "hotline"\n'
    )
    assert await run("--config", str(config)) == 0
    out = capsys.readouterr().out
    assert (
        "activated version 1, 1 entry" in out and "activated hash list version 1, 40 entries" in out
    )
    hl = await HashList.aload(store_url)
    assert hl.match_exact({"md5": bytes(16)}) is None
    record = next(r for r in RECORDS if "md5" in r)
    found = hl.match_exact({"md5": bytes.fromhex(str(record["md5"]))})
    assert found == HashMatch("hotline", str(record["id"]), "md5", 0, "A")
    assert await run("--config", str(config), "status") == 0
    out = capsys.readouterr().out
    assert "feed urls: 1 entry" in out and "feed hashes: 40 entries" in out


async def test_hash_lists_on_disk_are_private(feed_url, tmp_path):
    url, _ = feed_url
    store = tmp_path / "store"
    assert await run("--store", store.as_uri(), "--feed-url", url, "--format", "hashes-jsonl") == 0
    files = [p for p in (store / "hashes").rglob("*") if p.is_file()]
    assert any(p.suffix == ".snap" for p in files)
    for path in files:
        assert path.stat().st_mode & 0o077 == 0, path
    blob = b"".join(p.read_bytes() for p in files)
    assert HashSnapshot.MAGIC if hasattr(HashSnapshot, "MAGIC") else True
    assert bytes.fromhex(str(RECORDS[0][next(k for k in KINDS if k in RECORDS[0])])) in blob


async def test_a_feed_over_max_entries_is_refused_and_changes_nothing(
    store_url, feed_url, tmp_path, capsys
):
    url, served = feed_url
    config = tmp_path / "sync.toml"
    config.write_text(
        f'store = "{store_url}"\nmax_entries = 40\n'
        f'[feeds.hot]\nurl = "{url}"\nformat = "hashes-jsonl"\n'
    )
    assert await run("--config", str(config)) == 0
    served["body"] = FEED + jsonl([{"id": "h40", "md5": "f" * 32}])
    assert await run("--config", str(config)) == 1
    err = capsys.readouterr().err
    assert (
        "hot: FAILED: more than 40 entries (line 41), over the max_entries limit; "
        "its last good entries stay in force"
    ) in err.splitlines()
    assert await hash_versions(store_url) == [1]
    assert len(await HashList.aload(store_url)) == 40
    config.write_text(config.read_text().replace("max_entries = 40", "max_entries = 0"))
    with pytest.raises(ConfigError, match="max_entries must be at least"):  # exit 2
        await run("--config", str(config))
