"""Listed URLs in posted bodies (blocklist_addon/content/uploads.py)."""
# ruff: noqa: RUF001 (prose in scripts with full-width punctuation is what is tested)

from __future__ import annotations

import base64
import json
from urllib.parse import quote, urlencode

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from blocklist_addon import Blocklist
from blocklist_addon.content.uploads import listed_in_body, listed_in_text, texts
from blocklist_addon.urls.matcher import Entry, Match

BL = Blocklist.from_entries(
    [
        Entry("http://blocked.example.com/page.html", id="page-1", list_name="uploads"),
        Entry("whole-site.blocked.test/", id="site-1", list_name="uploads"),
    ]
)


def found(match: Match | None) -> tuple[str, str] | None:
    """Which entry of which list a match names. (Whether it says embedded depends on the
    reading that found it: "请看http://..." as written is a URL with the page in its path.)"""
    return None if match is None else (match.list_name, match.entry_id)


PAGE = ("uploads", "page-1")  # what finding the listed page in a body must say

WRITTEN = [
    "http://blocked.example.com/page.html",
    "see blocked.example.com/page.html now",
    "HTTPS://WWW.BLOCKED.EXAMPLE.COM./page.html",
    '<a href="http://blocked.example.com/page.html">here</a>',
    "[url=http://blocked.example.com/page.html]x[/url]",
    "[here](https://blocked.example.com/page.html)",
    "//blocked.example.com/%70age.html",
    "http://r.example.net/?u=http%3A%2F%2Fblocked.example.com%2Fpage.html",
    "line one\nsub.whole-site.blocked.test/anything\nline three",
    # Prose: the punctuation around a URL is not part of it, as linkifiers read it.
    "Please remove http://blocked.example.com/page.html.",
    "Is it blocked.example.com/page.html? Or not!",
    "«http://blocked.example.com/page.html»",
    "voir«blocked.example.com/page.html»",  # a word glued to the opening quote
    "“blocked.example.com/page.html”, he wrote",
    "请看 http://blocked.example.com/page.html。谢谢",
    "请看「blocked.example.com/page.html」",
    "見てhttp://blocked.example.com/page.html！",
    "blocked。example。com/page.html",
]
CLEAN = [
    "http://blocked.example.com/other.html",
    "blocked.example.com is mentioned, no page",
    "whole-site.blocked.testing/",
    "nothing at all",
    "http://blocked.example.com/page.html.x is another page",
    "blocked.example.com/page.htm.",
    "«blocked.example.com/page.html2»。",
    "请看 http://blocked.example.com/page.html2。谢谢",
    "http://blocked.example.com/page.html谢谢 is another path",
]


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = "----blocklistBoundary7"
    parts = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        )
    body = "".join(parts).encode()
    for name, (filename, data) in files.items():
        body += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
            ).encode()
            + data
            + b"\r\n"
        )
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def bodies(text: str) -> list[tuple[bytes, str]]:
    return [
        (
            urlencode({"subject": "hi", "message": text}).encode(),
            "application/x-www-form-urlencoded",
        ),
        (quote(text, safe="").encode(), "application/x-www-form-urlencoded"),
        multipart({"subject": "hi", "message": text}, {}),
        (json.dumps({"post": {"title": "hi", "body": [1, text]}}).encode(), "application/json"),
        (text.encode(), "text/plain; charset=utf-8"),
    ]


@pytest.mark.parametrize("text", WRITTEN)
def test_listed_urls_are_found_in_every_kind_of_body(text: str) -> None:
    expected = ("uploads", "site-1") if "whole-site" in text else PAGE
    for body, content_type in bodies(text):
        match = listed_in_body(body, content_type, BL.match)
        assert found(match) == expected, content_type
        if "?u=" in text:  # the redirector's parameter: the page embedded in another URL
            assert match is not None and match.embedded, content_type


@pytest.mark.parametrize("text", CLEAN)
def test_unlisted_text_passes(text: str) -> None:
    for body, content_type in bodies(text):
        assert listed_in_body(body, content_type, BL.match) is None, content_type


@settings(max_examples=300, deadline=None)
@given(
    before=st.sampled_from(["", " ", "see ", "请看", "\n", "'", "«", "“", "「", "（"]),
    written=st.sampled_from(
        [
            "http://blocked.example.com/page.html",
            "HTTPS://Blocked.Example.Com/%70age.html",
            "blocked.example.com/page.html",
            "blocked。example．com/page.html",
        ]
    ),
    after=st.lists(st.sampled_from(list(".!?:'»’”」』）。．｡！？、，")), max_size=3).map("".join),
    rest=st.sampled_from(["", " now", "谢谢", "\nnext line"]),
)
def test_a_listed_url_in_any_punctuation_is_found(
    before: str, written: str, after: str, rest: str
) -> None:
    # A word glued to a path is part of it (/wiki/東京) unless a sentence mark ends the URL.
    assume(rest != "谢谢" or any(c in "。｡！？、，」』）" for c in after))
    text = before + written + after + rest
    assert found(listed_in_text(text, BL.match)) == PAGE, text
    near = before + written.replace("age.html", "age.htm") + after + rest
    assert listed_in_text(near, BL.match) is None, near


def test_binary_file_parts_are_not_read_but_their_names_are() -> None:
    body, content_type = multipart({}, {"f": ("a.bin", b"http://blocked.example.com/page.html")})
    assert listed_in_body(body, content_type, BL.match) is None
    body, content_type = multipart({}, {"f": ("blocked.example.com/page.html", b"\x00")})
    assert found(listed_in_body(body, content_type, BL.match)) == PAGE


def _form(boundary: bytes, parts: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(b"--" + boundary + b"\r\n" + h + b"\r\n\r\n" + d + b"\r\n" for h, d in parts)
    return body + b"--" + boundary + b"--\r\n"


FIELD = b'Content-Disposition: form-data; name="message"'
LISTED = b"see http://blocked.example.com/page.html"


@pytest.mark.parametrize(
    ("disposition", "read"),
    [
        (b'form-data; name="message"', True),  # no file name: a field, whatever its type
        (b'form-data; name="message"; filename=""', True),
        (b"form-data; name=\"message\"; filename*=UTF-8''a.bin", True),
        (b'form-data; name="message"; filename="a.bin"; filename=""', True),
        (b'form-data; name="message; filename=a.bin"', True),  # inside the name's quotes
        (b'form-data; name="message"; filename="a.bin"', False),  # a file: not read
    ],
)
def test_only_a_file_of_a_binary_type_goes_unread(disposition: bytes, read: bool) -> None:
    """PHP, Django and aiohttp hand a part without a file name to the app as a field."""
    headers = b"Content-Disposition: " + disposition + b"\r\nContent-Type: application/octet-stream"
    body = _form(b"B", [(headers, LISTED)])
    match = listed_in_body(body, "multipart/form-data; boundary=B", BL.match)
    assert (found(match) == PAGE) is read


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (_form(b"B", [(FIELD, LISTED)]), 'multipart/form-data; x="boundary=zzz"; boundary=B'),
        (_form(b"B", [(FIELD, LISTED)]), "multipart/form-data; xboundary=zzz; boundary=B"),
        (
            _form(b"B", [(FIELD, b"an early --B-- here"), (FIELD, LISTED)]),
            "multipart/form-data; boundary=B",
        ),
        (_form("B€x".encode(), [(FIELD, LISTED)]), "multipart/form-data; boundary=B€x"),
        (_form("Bé".encode(), [(FIELD, LISTED)]), "multipart/form-data; boundary=Bé"),
        (_form(b"M", [(b"Content-Type: text/plain", LISTED)]), "multipart/mixed; boundary=M"),
        (
            _form(
                b"R",
                [
                    (
                        b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64",
                        base64.b64encode(LISTED),
                    )
                ],
            ),
            "multipart/related; boundary=R",
        ),
        (
            _form(
                b"Q",
                [
                    (
                        FIELD + b"\r\nContent-Transfer-Encoding: quoted-printable",
                        b"see http=3A//blocked.example.com/page.html",
                    )
                ],
            ),
            "multipart/form-data; boundary=Q",
        ),
    ],
    ids=[
        "decoy-quoted",
        "decoy-parameter",
        "early-close",
        "euro",
        "latin-1",
        "mixed",
        "base64",
        "qp",
    ],
)
def test_a_listed_url_in_any_multipart_reading_is_found(body: bytes, content_type: str) -> None:
    """The readings an origin might make of a hostile body: each one's text is checked."""
    assert found(listed_in_body(body, content_type, BL.match)) == PAGE


def test_other_bodies() -> None:
    assert list(texts(b"\x89PNG...", "image/png")) == []
    assert list(texts(b'{"a": broken', "application/json")) == ['{"a": broken']
    deep = "[" * 10_000 + "]" * 10_000
    assert listed_in_body(deep.encode(), "application/json", BL.match) is None


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=500),
    st.sampled_from(
        [
            "application/json",
            "text/plain",
            "multipart/form-data; boundary=x",
            "application/x-www-form-urlencoded",
        ]
    ),
)
def test_never_raises(body: bytes, content_type: str) -> None:
    listed_in_body(body, content_type, BL.match)


def test_prose_is_not_looked_up_word_by_word() -> None:
    looked_up: list[str] = []
    text = (
        "Lorem ipsum dolor sit amet. Sed do eiusmod tempor, ut labore! Quis nostrud? "
        "See blocked.example.com/page.html then 192.0.2.44/img and http://x.test/ too."
    )
    assert listed_in_text(text, lambda url: looked_up.append(url)) is None
    assert looked_up == ["blocked.example.com/page.html", "192.0.2.44/img", "http://x.test/"]
