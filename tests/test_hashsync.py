"""Image hash list feeds: the parsers (tables and hypothesis) and ``blocklist-sync`` of a
hashes-jsonl / hashes-csv feed into the store's "hashes" namespace, Redis and file store,
with the same gates, versions, rollback and suppression as URL lists."""

from __future__ import annotations

import json
import pathlib
import random

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from blocklist_addon.hashes import KINDS, HashList, HashSnapshot
from blocklist_addon.store import open_store
from sync import cli
from sync.feeds import FeedError, parse_feed, validate
from sync.hashfeeds import duplicate_hashes

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
    assert [e.entry_id for e in feed.entries] == ["1", "2"]
    assert feed.entries[0].hashes == (("pdq", bytes.fromhex("cd" * 32)),)
    assert feed.entries[1].hashes == (("md5", bytes.fromhex("ef" * 16)),)


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
    assert duplicate_hashes(feed.entries) == 2
    validate(feed)  # duplicates are not invalid
    assert len({e.digest for e in feed.entries}) == 2  # distinct images, as the snapshot keeps


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
    assert found is not None and found.list_name == "hotline" and found.entry_id == record["id"]
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
