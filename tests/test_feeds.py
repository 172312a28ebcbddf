"""Reading and validating feeds (DESIGN "Feed formats", "Failure behaviour").

Entry text must never reach an error message: every test that fails a feed holding the
distinctive host SECRET checks that the message does not name it.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocklist_addon.urls.matcher import Blocklist, Match, compile_entry, expression_of
from blocklist_addon.urls.snapshot import DIGEST_SIZE, Snapshot, expression_digest, host_key
from sync.feeds import FORMATS, FeedEntry, FeedError, ParsedFeed, parse_feed, validate

SECRET = "secret-entry.test"


def digest_of(url: str) -> bytes:
    c = compile_entry(url)
    assert c is not None
    return expression_digest(expression_of(c))


def feed_error(data: bytes, fmt: str) -> str:
    with pytest.raises(FeedError) as e:
        parse_feed(data, fmt)
    message = str(e.value)
    assert SECRET not in message and "\n" not in message
    return message


def blocklist(feed: ParsedFeed) -> Blocklist:
    return Blocklist(
        Snapshot.build((e.digest, e.host_key, "test", e.entry_id) for e in feed.entries)
    )


def listed(digest: bytes) -> Match:
    """What ``blocklist(feed)`` answers for a URL matching the entry of ``digest`` (an entry
    without an id is named by its digest)."""
    return Match("test", digest.hex(), digest.hex(), False)


# -- text --------------------------------------------------------------------------------

TEXT = (
    "\ufeff# Example list, generated for tests\r\n"
    "\r\n"
    f"http://{SECRET}/gallery/page.html\r\n"
    "  listed.example.com/dir/  \r\n"
    "# a comment between entries\r\n"
    "whole-site.test/\r\n"
    "http://q.example.net/view.php?id=42"  # no final newline
).encode()


def test_text_happy_path() -> None:
    feed = parse_feed(TEXT, "text")
    assert feed.records == 4 and feed.invalid_count == 0 and feed.invalid == []
    assert [e.digest for e in feed.entries] == [
        expression_digest(f"{SECRET}/gallery/page.html"),
        expression_digest("listed.example.com/dir/"),
        expression_digest("whole-site.test/"),
        expression_digest("q.example.net/view.php?id=42"),
    ]
    assert feed.entries[0].host_key == host_key(SECRET)
    assert all(e.entry_id is None for e in feed.entries)
    assert all(len(e.digest) == DIGEST_SIZE for e in feed.entries)


@pytest.mark.parametrize(
    "spelling",
    [
        f"HTTP://{SECRET.upper()}:80/gallery/./page.html",
        f"http://{SECRET}./gallery//page.html#top",
        f"http://user@{SECRET}/x/../gallery/%70age.html",
        f"{SECRET}/gallery/page%252Ehtml",
        f"http:\\\\{SECRET}\\gallery\\page.html",
    ],
)
def test_equivalent_spellings_give_the_listed_digest(spelling: str) -> None:
    listed = expression_digest(f"{SECRET}/gallery/page.html")
    (entry,) = parse_feed(spelling.encode(), "text").entries
    assert entry.digest == listed
    assert entry.host_key == host_key(SECRET)


def test_parsed_entries_block_what_the_matcher_blocks() -> None:
    bl = blocklist(parse_feed(TEXT, "text"))
    page = expression_digest(f"{SECRET}/gallery/page.html")
    assert bl.match(f"https://www.{SECRET.upper()}/gallery/page.html?x=1") == listed(page)
    directory = expression_digest("listed.example.com/dir/")
    assert bl.match("http://listed.example.com/dir/sub/a.jpg") == listed(directory)
    query = expression_digest("q.example.net/view.php?id=42")
    assert bl.match("http://q.example.net/view.php?id=42") == listed(query)
    assert bl.match(f"http://{SECRET}/gallery/other.html") is None
    assert bl.match("http://q.example.net/view.php?id=43") is None


def test_invalid_text_records_are_counted_by_line() -> None:
    data = "\n".join(
        [
            f"http://{SECRET}/ok.html",  # 1
            "mailto:someone@example.com",  # 2: not a web URL
            "# comment",  # 3
            "",  # 4
            "http://",  # 5: no host
            f"1,http://{SECRET}/a,cat",  # 6: a CSV row read as text: no real host
            "localhost/x",  # 7: single-label host
            "http://192.0.2.7/img.jpg",  # 8: IP hosts are fine
        ]
    ).encode()
    feed = parse_feed(data, "text")
    assert feed.records == 6
    assert feed.invalid == [2, 5, 6, 7] and feed.invalid_count == 4
    assert feed.entries == [
        FeedEntry(expression_digest(f"{SECRET}/ok.html"), host_key(SECRET), None),
        FeedEntry(expression_digest("192.0.2.7/img.jpg"), host_key("192.0.2.7"), None),
    ]


def test_a_csv_or_json_body_read_as_text_is_all_invalid() -> None:
    body = f'id,url\n1,http://{SECRET}/a\n[{{"url": "http://{SECRET}/b"}}]\n'.encode()
    feed = parse_feed(body, "text")
    assert feed.entries == [] and feed.invalid_count == feed.records == 3


def test_invalid_positions_are_capped_at_twenty() -> None:
    feed = parse_feed(b"javascript:x\n" * 50 + b"example.com/a\n", "text")
    assert feed.invalid == list(range(1, 21)) and feed.invalid_count == 50


# -- sha256 ------------------------------------------------------------------------------


def test_sha256_happy_path() -> None:
    full = hashlib.sha256(f"{SECRET}/gallery/page.html".encode()).hexdigest()
    other = hashlib.sha256(b"whole-site.test/").hexdigest().upper()
    data = f"\ufeff# hashes only\r\n{full}\r\n\r\n  {other}  \r\n".encode()
    feed = parse_feed(data, "sha256")
    assert feed.records == 2 and feed.invalid_count == 0
    assert [e.digest for e in feed.entries] == [
        expression_digest(f"{SECRET}/gallery/page.html"),
        expression_digest("whole-site.test/"),
    ]
    assert all(e.host_key is None and e.entry_id is None for e in feed.entries)
    page = expression_digest(f"{SECRET}/gallery/page.html")
    assert blocklist(feed).match(f"http://{SECRET}/gallery/page.html") == listed(page)


def test_sha256_invalid_lines() -> None:
    good = "ab" * 32
    lines = [good, "ab" * 31, "zz" * 32, f"{good}0", f"http://{SECRET}/", good]
    feed = parse_feed("\n".join(lines).encode(), "sha256")
    assert feed.invalid == [2, 3, 4, 5]
    assert feed.entries == [FeedEntry(bytes.fromhex("ab" * DIGEST_SIZE), None, None)] * 2


# -- csv ---------------------------------------------------------------------------------


def test_csv_happy_path() -> None:
    data = (
        "\ufeff Category ,extra, URL ,Id\r\n"
        f"1,x,http://{SECRET}/gallery/page.html,IWF-001\r\n"
        '2,"a, quoted extra",whole-site.test/, 17 \r\n'
        "\r\n"
        '1,y,"q.example.net/view.php?id=42",\r\n'
    ).encode()
    feed = parse_feed(data, "csv")
    assert feed.records == 3 and feed.invalid_count == 0
    assert [e.entry_id for e in feed.entries] == ["IWF-001", "17", None]
    assert feed.entries[0].digest == expression_digest(f"{SECRET}/gallery/page.html")
    assert feed.entries[2].digest == expression_digest("q.example.net/view.php?id=42")


@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_csv_other_delimiters(delimiter: str) -> None:
    data = f"id{delimiter}url\n7{delimiter}example.com/a.html\n".encode()
    (entry,) = parse_feed(data, "csv").entries
    assert entry == FeedEntry(expression_digest("example.com/a.html"), host_key("example.com"), "7")


def test_csv_without_id_column_and_with_comments() -> None:
    data = b"# exported for tests\nurl\nexample.com/a\n# note\nexample.net/b\n"
    feed = parse_feed(data, "csv")
    assert feed.records == 2 and [e.entry_id for e in feed.entries] == [None, None]


def test_csv_invalid_rows_by_line() -> None:
    data = (
        "id,url\n"  # 1
        "1,example.com/a\n"  # 2
        "2\n"  # 3: no url cell
        "3,\n"  # 4: empty url
        '4,"example.com/multi\n'  # 5-6: one record spanning two lines
        'line"\n'
        "5,mailto:x@example.com\n"  # 7
        f"{'x' * 300},example.com/long-id\n"  # 8: an id far too long to be one
    ).encode()
    feed = parse_feed(data, "csv")
    assert feed.records == 6
    assert feed.invalid == [3, 4, 7, 8]


def test_csv_no_url_column() -> None:
    no_url = "CSV header (line 1) has no url column"
    assert feed_error(f"id,link\n1,http://{SECRET}/\n".encode(), "csv") == no_url
    assert feed_error(f"http://{SECRET}/a\n".encode(), "csv") == no_url


def test_csv_header_only_is_empty() -> None:
    assert feed_error(b"id,url,category\r\n\r\n", "csv") == "feed is empty"


def test_csv_field_too_large_is_malformed() -> None:
    data = f'id,url\n1,"http://{SECRET}/{"a" * 200_000}"\n'.encode()
    assert feed_error(data, "csv") == "malformed CSV at line 2"


# -- json --------------------------------------------------------------------------------


def test_json_array_happy_path() -> None:
    doc = [
        {"url": f"http://{SECRET}/gallery/page.html", "id": 101, "category": 1},
        {"url": "whole-site.test/", "id": "W-2", "extra": [1, 2]},
        {"url": "q.example.net/view.php?id=42"},
        {"url": "example.org/p.html", "id": 3.0},
    ]
    feed = parse_feed(("\ufeff" + json.dumps(doc, indent=2)).encode(), "json")
    assert feed.records == 4 and feed.invalid_count == 0
    assert [e.entry_id for e in feed.entries] == ["101", "W-2", None, "3"]
    assert feed.entries[0].digest == expression_digest(f"{SECRET}/gallery/page.html")


def test_json_entries_object() -> None:
    doc = {"version": 7, "entries": [{"url": "example.com/a", "id": "x"}]}
    (entry,) = parse_feed(json.dumps(doc).encode(), "json").entries
    assert entry.entry_id == "x"


def test_json_invalid_items_by_index() -> None:
    doc = [
        {"url": "example.com/a"},  # 1
        f"http://{SECRET}/bare-string",  # 2: not an object
        {"id": 5},  # 3: no url
        {"url": 17},  # 4: url not a string
        {"url": "example.com/b", "id": True},  # 5: id not a string or number
        {"url": "example.com/c", "id": {"n": 1}},  # 6
        {"url": "mailto:x@example.com"},  # 7
        {"url": "example.com/d", "id": "\ud800"},  # 8: cannot be stored as UTF-8
    ]
    feed = parse_feed(json.dumps(doc).encode(), "json")
    assert feed.records == 8 and feed.invalid == [2, 3, 4, 5, 6, 7, 8]
    assert feed.position == "entry"
    with pytest.raises(FeedError) as e:
        validate(feed)
    assert str(e.value) == "7 of 8 records invalid (entries 2, 3, 4, 5, 6, 7, 8), over the 1% limit"


@pytest.mark.parametrize(
    "body",
    [
        f'[{{"url": "http://{SECRET}/a"}}',  # truncated
        f'{{"url": "http://{SECRET}/a",}}',
        "[" * 100_000 + "]" * 100_000,  # nesting too deep
        "[" + "1" * 5000 + "]",  # an integer too long to read
    ],
)
def test_json_not_valid(body: str) -> None:
    assert feed_error(body.encode(), "json").startswith("not valid JSON")


@pytest.mark.parametrize("body", ['{"url": "example.com/a"}', '"example.com/a"', "42", "null"])
def test_json_wrong_shape(body: str) -> None:
    shape = 'JSON feed is not an array of entries (nor {"entries": [...]})'
    assert feed_error(body.encode(), "json") == shape


def test_json_empty_array() -> None:
    assert feed_error(b"[]", "json") == "feed is empty"
    assert feed_error(b'{"entries": []}', "json") == "feed is empty"


# -- not a list at all -------------------------------------------------------------------

HTML_PAGES = [
    f"<!DOCTYPE html><html><body>http://{SECRET}/</body></html>",
    f"\n\n  <html lang=en><head><title>Error</title></head>{SECRET}</html>",
    "<!-- proxy error -->\n<HTML><BODY>Service temporarily unavailable</BODY></HTML>",
    "<head><title>401 Authorization Required</title></head>",
]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("page", HTML_PAGES)
def test_html_page(fmt: str, page: str) -> None:
    assert feed_error(page.encode(), fmt) == "feed looks like an HTML page, not a text list"


@pytest.mark.parametrize("fmt", FORMATS)
def test_xml_error_document(fmt: str) -> None:
    body = b'<?xml version="1.0"?><Error><Code>AccessDenied</Code></Error>'
    assert feed_error(body, fmt) == "feed looks like an XML document, not a list"


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("body", [b"", b"   \r\n\n\t", b"\xef\xbb\xbf", b"\xef\xbb\xbf\r\n"])
def test_empty(fmt: str, body: bytes) -> None:
    assert feed_error(body, fmt) == "feed is empty"


@pytest.mark.parametrize("fmt", ["text", "csv", "sha256"])
def test_only_comments_is_empty(fmt: str) -> None:
    assert feed_error(f"# only\n\n  # comments: {SECRET}\n".encode(), fmt) == "feed is empty"


@pytest.mark.parametrize("fmt", FORMATS)
def test_not_text(fmt: str) -> None:
    line = f"http://{SECRET}/a\n".encode()
    assert feed_error(line * 3 + b"\x00" + line, fmt) == "not text: a NUL byte at line 4"
    assert feed_error(line + b"\x01\x02\x03", fmt) == "not text: a binary control byte at line 2"
    assert feed_error(line * 2 + b"\xff\xfe\xfd" + line, fmt) == "not text: invalid UTF-8 at line 3"
    utf16 = line.decode().encode("utf-16")
    assert feed_error(utf16, fmt) == "not text: UTF-16 (the feed must be UTF-8)"
    assert feed_error(gzip.compress(line), fmt) == "not text: gzip-compressed data"


def test_unknown_format() -> None:
    known = ", ".join(FORMATS)
    assert feed_error(b"example.com/a", "xml") == f"unknown feed format 'xml' (one of {known})"


# -- validate ----------------------------------------------------------------------------


def feed_of(valid: int, invalid: int = 0) -> ParsedFeed:
    lines = [f"host{n}.example.com/p.html" for n in range(valid)]
    lines += ["javascript:void(0)"] * invalid
    return parse_feed("\n".join(lines).encode(), "text")


def test_validate_accepts_a_good_feed() -> None:
    validate(feed_of(100))
    validate(feed_of(100, 1), max_invalid_ratio=0.01)  # 1 of 101 is under 1%
    validate(feed_of(99, 1))  # exactly 1%


def test_validate_min_entries() -> None:
    with pytest.raises(
        FeedError, match="only 3 valid entries in 3 records, under the minimum of 5"
    ):
        validate(feed_of(3), min_entries=5)
    validate(feed_of(5), min_entries=5)


def test_validate_counts_distinct_entries() -> None:
    feed = parse_feed(b"example.com/a\nEXAMPLE.com/a\nhttp://example.com:80/a\n", "text")
    same = FeedEntry(expression_digest("example.com/a"), host_key("example.com"), None)
    assert feed.entries == [same] * 3
    with pytest.raises(FeedError, match="only 1 valid entries"):
        validate(feed, min_entries=2)


def test_validate_invalid_ratio_message() -> None:
    lines = [f"http://{SECRET}/page{n}.html" for n in range(988)]
    for n in (2, 8, 100, 200, 300, 400, 500, 600, 700, 800, 900, 950):
        lines.insert(n, f"mailto:{n}@{SECRET}")
    feed = parse_feed("\n".join(lines).encode(), "text")
    with pytest.raises(FeedError) as e:
        validate(feed)
    message = str(e.value)
    assert message == (
        "12 of 1000 records invalid (lines 3, 9, 101, 201, 301, 401, 501, 601, 701, 801, "
        "901, 951), over the 1% limit"
    )
    assert SECRET not in message
    validate(feed, max_invalid_ratio=0.02)


def test_validate_invalid_ratio_elides_beyond_twenty() -> None:
    with pytest.raises(FeedError, match=r"\(lines 11, 12, .*, 30, \.\.\.\), over the 0.5% limit"):
        validate(feed_of(10, 100), max_invalid_ratio=0.005)


def test_validate_shrink() -> None:
    feed = feed_of(2000)
    with pytest.raises(FeedError) as e:
        validate(feed, previous_entries=6000)
    assert str(e.value) == (
        "shrank from 6000 to 2000 entries (67%), over the 50% limit; use --force if intended"
    )
    validate(feed, previous_entries=6000, force=True)
    validate(feed, previous_entries=4000)  # exactly 50%
    validate(feed, previous_entries=6000, max_shrink=0.7)
    validate(feed, previous_entries=None)
    validate(feed, previous_entries=0)
    validate(feed, previous_entries=1000)  # growing is fine


def test_force_does_not_override_other_checks() -> None:
    with pytest.raises(FeedError, match="records invalid"):
        validate(feed_of(10, 10), previous_entries=100, force=True)
    with pytest.raises(FeedError, match="under the minimum"):
        validate(feed_of(1), min_entries=2, force=True)


# -- properties --------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400), fmt=st.sampled_from(FORMATS))
def test_arbitrary_bytes_give_a_feed_or_feed_error(data: bytes, fmt: str) -> None:
    try:
        feed = parse_feed(data, fmt)
    except FeedError as e:
        assert "\n" not in str(e)
        return
    assert feed.records >= 1 and feed.invalid_count + len(feed.entries) == feed.records


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=300), fmt=st.sampled_from(FORMATS))
def test_arbitrary_text_gives_a_feed_or_feed_error(text: str, fmt: str) -> None:
    for data in (
        text.encode("utf-8", "surrogatepass"),
        f"id,url\n{text}".encode("utf-8", "replace"),
    ):
        with contextlib.suppress(FeedError):
            parse_feed(data, fmt)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(["url", "id", "category", "entries", "x"]), children)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(doc=_json_values)
def test_arbitrary_json_gives_a_feed_or_feed_error(doc: object) -> None:
    data = json.dumps(doc).encode("utf-8", "surrogatepass")
    try:
        feed = parse_feed(data, "json")
    except FeedError:
        return
    assert feed.invalid_count + len(feed.entries) == feed.records


_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
_domain = st.builds(
    lambda labels, suffix: ".".join([*labels, suffix]),
    st.lists(_label, min_size=0, max_size=3),
    st.sampled_from(["example.com", "example.net", "example.org", "test", "invalid"]),
).filter(lambda host: "." in host)
_segment = st.from_regex(r"[A-Za-z0-9._~-]{1,12}", fullmatch=True).filter(
    lambda s: s not in (".", "..")
)
_url = st.builds(
    lambda scheme, host, segments, slash, query: (
        f"{scheme}{host}/{'/'.join(segments)}{'/' if slash and segments else ''}"
        f"{'?' + query if query else ''}"
    ),
    st.sampled_from(["http://", "https://", "HTTP://", ""]),
    _domain,
    st.lists(_segment, max_size=4),
    st.booleans(),
    st.none() | st.from_regex(r"[a-z]{1,5}=[0-9]{1,4}", fullmatch=True),
)


@settings(max_examples=100, deadline=None)
@given(urls=st.lists(_url, min_size=1, max_size=30), crlf=st.booleans())
def test_generated_text_feeds_round_trip(urls: list[str], crlf: bool) -> None:
    newline = "\r\n" if crlf else "\n"
    data = ("# generated\n" + newline.join(urls) + newline).encode()
    feed = parse_feed(data, "text")
    assert feed.records == len(urls) and feed.invalid_count == 0
    assert [e.digest for e in feed.entries] == [digest_of(u) for u in urls]
    bl = blocklist(feed)
    for url in urls:
        request = url if "://" in url else f"http://{url}"
        assert bl.match(request) == listed(digest_of(url)), url


@settings(max_examples=100, deadline=None)
@given(urls=st.lists(_url, min_size=1, max_size=10))
def test_generated_feeds_agree_across_formats(urls: list[str]) -> None:
    text = parse_feed("\n".join(urls).encode(), "text")
    rows = "".join(f'{n},"{u}"\r\n' for n, u in enumerate(urls))
    csv_feed = parse_feed(f"id,url\r\n{rows}".encode(), "csv")
    doc = [{"url": u, "id": n} for n, u in enumerate(urls)]
    json_feed = parse_feed(json.dumps(doc).encode(), "json")
    digests = [e.digest for e in text.entries]
    assert [e.digest for e in csv_feed.entries] == digests
    assert [e.digest for e in json_feed.entries] == digests
    assert [e.entry_id for e in csv_feed.entries] == [str(n) for n in range(len(urls))]
    assert [e.entry_id for e in json_feed.entries] == [str(n) for n in range(len(urls))]
