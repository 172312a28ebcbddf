"""The hotline's category of a hash record (its severity class) travels from the feed to
the block log and the webhook event, and nothing else about the entry does: the hash
stays out of both (issue 22, item 4)."""

from __future__ import annotations

import http.client
import json
import pathlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from blocklist_addon.hashes import HashList, HashMatch, HashSnapshot
from blocklist_addon.hashes.records import MAX_CATEGORY, HashRecords, category_of
from blocklist_addon.ops.blocklog import BlockEvent, record
from sync.feeds import parse_feed
from testlab.harness import Proxy, running, sync, wait_for
from testlab.images import draw, reference_pdq, variants
from testlab.origins import Origins, TestCA

PDQ = "f" * 64
MD5 = "1" * 32


def feed_lines(*records: dict[str, object]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def test_jsonl_and_csv_categories_reach_the_match() -> None:
    """A string, a number and an empty field; the category comes back with the match, and
    a record without one matches with none."""
    jsonl = feed_lines(
        {"id": "a", "pdq": PDQ, "category": "A"},
        {"id": "b", "md5": MD5, "category": 2},
        {"id": "c", "sha1": "2" * 40, "category": ""},
        {"id": "d", "sha256": "3" * 64},
    )
    csv = (
        f"id,pdq,md5,sha1,sha256,category\na,{PDQ},,,,A\nb,,{MD5},,,2\nc,,,{'2' * 40},,\n"
        f"d,,,,{'3' * 64},\n"
    ).encode()
    for data, fmt in ((jsonl, "hashes-jsonl"), (csv, "hashes-csv")):
        parsed = parse_feed(data, fmt)
        assert parsed.invalid_count == 0, fmt
        snapshot = HashSnapshot.build(parsed.entries.named("hotline"))  # type: ignore[union-attr]
        hashes = HashList(snapshot)
        pdq = hashes.match_pdq([bytes.fromhex(PDQ)], 100)
        assert pdq == HashMatch("hotline", "a", "pdq", 0, "A"), fmt
        md5 = hashes.match_exact({"md5": bytes.fromhex(MD5)})
        assert md5 == HashMatch("hotline", "b", "md5", 0, "2"), fmt
        for entry, kind, value in (("c", "sha1", "2" * 40), ("d", "sha256", "3" * 64)):
            match = hashes.match_exact({kind: bytes.fromhex(value)})
            assert match == HashMatch("hotline", entry, kind, 0, None), fmt


@pytest.mark.parametrize(
    "bad", [{"level": 1}, ["A"], True, 1.5, "x" * (MAX_CATEGORY + 1), "A\nB", "\x1b[31mA"]
)
def test_a_category_that_is_not_one_makes_the_record_invalid(bad: object) -> None:
    """Categories are written into log lines: objects, lists, booleans, floats, overlong
    text and control characters are refused with the record (counted as invalid)."""
    data = feed_lines({"id": "a", "pdq": PDQ, "category": bad}, {"id": "b", "md5": MD5})
    parsed = parse_feed(data, "hashes-jsonl")
    assert parsed.invalid_count == 1
    assert len(parsed.entries) == 1


@given(st.one_of(st.none(), st.integers(), st.text(max_size=80)))
def test_category_of_is_text_or_none_or_refused(value: object) -> None:
    """Whatever a feed holds, a category is None, printable text of at most MAX_CATEGORY
    characters, or a ValueError: never anything a log line could not carry."""
    try:
        category = category_of(value)
    except ValueError:
        return
    assert category is None or (
        0 < len(category) <= MAX_CATEGORY
        and category.isprintable()
        and category == category.strip()
    )


def test_snapshots_without_categories_stay_format_1_and_rebuilds_keep_them() -> None:
    """A list without categories is written as before (format 1, which older proxies read);
    one with them is format 2; a stored version merged again (suppressions, several feeds)
    keeps every entry's category."""
    plain = HashList.from_entries([{"id": "a", "pdq": PDQ}])
    assert plain._snapshot.to_bytes()[8:12] == (1).to_bytes(4, "little")
    rated = HashSnapshot.build(
        parse_feed(
            feed_lines(
                {"id": "a", "pdq": PDQ, "category": "B"},
                {"id": "b", "md5": MD5, "category": "A"},
                {"id": "c", "md5": "4" * 32},
            ),
            "hashes-jsonl",
        ).entries.named("one")  # type: ignore[union-attr]
    )
    assert rated.to_bytes()[8:12] == (2).to_bytes(4, "little")
    again = HashRecords()
    again.add_snapshot(rated, "one", suppressed={"b"})
    again.add_snapshot(HashSnapshot.from_bytes(plain._snapshot.to_bytes()), "two")
    merged = HashSnapshot.build(again)
    assert {(name, r.entry_id, r.category) for name, r in merged.records()} == {
        ("one", "a", "B"),
        ("one", "c", None),
    }  # "two"'s "a" has the same PDQ hash as "one"'s: the first keeps it


def test_the_block_line_carries_the_category_never_the_hash() -> None:
    hashes = HashList.from_entries([{"id": "iwf-7", "pdq": PDQ, "category": "A"}])
    match = hashes.match_pdq([bytes.fromhex(PDQ)], 100)
    assert match == HashMatch("default", "iwf-7", "pdq", 0, "A")
    line = record(
        BlockEvent(match, "image", "refuse", "192.0.2.1", "ref-1"),
        client_mode="none",
        with_url=False,
    )
    doc = json.loads(line)
    assert (doc["entry"], doc["kind"], doc["category"]) == ("iwf-7", "pdq", "A")
    assert PDQ not in line.lower()
    unrated = HashList.from_entries([{"id": "iwf-8", "pdq": PDQ}]).match_pdq(
        [bytes.fromhex(PDQ)], 100
    )
    assert unrated == HashMatch("default", "iwf-8", "pdq", 0, None)
    doc = json.loads(
        record(
            BlockEvent(unrated, "image", "refuse", None, "ref-2"),
            client_mode="none",
            with_url=False,
        )
    )
    assert "category" not in doc


# -- through the proxy -------------------------------------------------------------------------

HOST = "uploads.example.net"
LISTED = draw(61)


@dataclass
class Site:
    """The platform: its upload endpoint and its moderation queue (the webhook's target)."""

    uploads: list[bytes] = field(default_factory=list)
    events: list[dict[str, object]] = field(default_factory=list)

    def app(self) -> web.Application:
        async def upload(request: web.Request) -> web.Response:
            self.uploads.append(await request.read())
            return web.json_response({"stored": True})

        async def moderation(request: web.Request) -> web.Response:
            assert request.headers.get("Authorization") == "Bearer s3cret-token"
            self.events.append(await request.json())
            return web.Response(status=204)

        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post("/moderation", moderation)
        app.router.add_route("*", "/{tail:.*}", upload)
        return app


@pytest.fixture(scope="module")
def rated_proxy(
    tmp_path_factory: pytest.TempPathFactory, confdir: pathlib.Path, ca: TestCA
) -> Iterator[tuple[Proxy, Site]]:
    directory = tmp_path_factory.mktemp("rated")
    path = directory / "hashes.jsonl"
    path.write_bytes(feed_lines({"id": "iwf-2001", "pdq": reference_pdq(LISTED), "category": "B"}))
    store = (directory / "store").as_uri()
    sync(store, path, name="hotline", data_dir=directory / "data", fmt="hashes-jsonl")
    token = directory / "webhook.token"
    token.write_text("s3cret-token\n")
    token.chmod(0o600)
    origins = Origins(ca)
    site = Site()
    try:
        origin = origins.start("uploads", app=site.app())
        queue = origins.start("moderation", app=site.app())
        target = f"127.0.0.1:{origin.port}"
        proxy = Proxy(
            directory / "proxy",
            store=store,
            routes={target: origin.port},
            confdir=confdir,
            ca=ca,
            mode=f"reverse:http://{target}",
            options={
                "blocklist_image_webhook": f"http://127.0.0.1:{queue.port}/moderation",
                "blocklist_image_webhook_token_file": str(token),
            },
        )
        with running(proxy):
            yield proxy, site
    finally:
        origins.close()


def test_block_log_and_webhook_event_carry_the_category(rated_proxy: tuple[Proxy, Site]) -> None:
    """A listed picture re-encoded and uploaded through a real proxy: the block line and
    the event the platform's moderation queue receives both say category B; neither holds
    the listed hash."""
    proxy, site = rated_proxy
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=60)
    try:
        conn.request(
            "POST",
            "/api/upload",
            body=variants(LISTED)["jpeg-q40"],
            headers={"Host": HOST, "Content-Type": "image/jpeg"},
        )
        status = conn.getresponse().status
    finally:
        conn.close()
    assert status == 451
    assert site.uploads == []
    block = proxy.blocks()[-1]
    assert (block["entry"], block["kind"], block["category"]) == ("iwf-2001", "pdq", "B")
    event = wait_for(
        lambda: [e for e in site.events if e["reference"] == block["reference"]], 30, "the webhook"
    )[0]  # type: ignore[index]
    assert (event["entry"], event["category"]) == ("iwf-2001", "B")
    listed = reference_pdq(LISTED)
    assert listed not in json.dumps(block) and listed not in json.dumps(event)
