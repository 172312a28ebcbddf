"""The embedded-URL search's prefilter in C (``urls/embedded/_plain.c``) against its
reference, the regex ``markers.PLAIN``: the same answer for every text, so a URL the C
code calls plain is one the regex calls plain, which ``test_embedded`` holds to "no marker
to find". A wrong "plain" would let an embedded listed URL through unchecked."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocklist_addon.urls.embedded import _plain, embedded_urls, markers
from blocklist_addon.urls.embedded.markers import is_plain

plain = _plain.plain
by_regex = markers._plain_by_regex  # the reference


def test_the_search_uses_the_compiled_prefilter() -> None:
    """Built with the package (setup.py): the regex serves only a source tree nobody built."""
    assert is_plain is plain
    assert markers._plain_by_regex("http://a.example/x") is True


#: Each branch of the regex, both ways (plain, then not), and the edges of its lookaheads.
VECTORS = [
    # the URL's own scheme and host, which are never searched
    ("http://www.example.com/a", True),
    ("http://www.example.com/www.listed.test/", False),
    ("h2-x+y.z:@@www.host=", True),
    ("1http://x.test/www.a", False),
    ("://host/a", True),
    ("\\\\www.x.test\\a", True),
    # characters that start nothing, "#" among them
    ("http://a.test/p#frag!$'()*+,;~_", True),
    ("http://a.test/p[1]", False),
    ("http://a.test/p\tq", False),
    ("http://a.test/p\xe9", False),
    ("http://a.test/p\u0100\U0001f600", True),
    ("http://a.test/p\x00q", True),
    # escapes: only %20
    ("http://a.test/a%20b", True),
    ("http://a.test/a%2Fb", False),
    ("http://a.test/a%2", False),
    ("http://a.test/a%", False),
    # values
    ("http://a.test/?ref=home&p=43", True),
    ("http://a.test/?u=aHR0cDovL2E", False),
    ("http://a.test/?u=SFRU", False),
    ("http://a.test/?u=aHQ", True),
    ("http://a.test/?u=a1aHR0", False),
    ("http://a.test/?u=a123SFR", False),
    ("http://a.test/?u=a1234aHR", True),
    ("http://a.test/?u=68747470", False),
    ("http://a.test/?u=58747470", True),
    ("http://a.test/?u=http-3A__x", False),
    ("http://a.test/?u=HTTPS-3A", False),
    ("http://a.test/?u=httpsx-", True),
    ("http://a.test/?u=//x", False),
    ("http://a.test/?u= \x01/x", False),
    ("http://a.test/?u=listed.test", False),
    ("http://a.test/?u=report.pdf", False),
    ("http://a.test/?u=v1.2", True),
    ("http://a.test/?u=a.1-_.b", False),
    ("http://a.test/?u=192.0.2.7", False),
    ("http://a.test/?u=192.0.2.", True),
    ("http://a.test/?u=1920.0.2.7", True),
    ("http://a.test/?u=1.2.3", True),
    ("http://a.test/?q=a%20b", True),
    ("http://a.test/?q=%20b", False),
    ("http://a.test/?q= %20a.test", False),  # spaces, then a host
    ("http://a.test/?q=\x01%20a.test", False),
    ("http://a.test/?q=a %20b", False),  # (plain, though the regex leaves it to the search)
    ("http://a.test/?q=a%20%20b", True),
    ("http://a.test/?q=a/b", False),
    ("http://a.test/?q=a\\b", False),
    ("http://a.test/?q=a[b", False),
    ("http://a.test/?q=a%2Fb", False),
    ("http://a.test/?q=a\xe9", False),
    ("http://a.test/?q=a#b", True),
    ("http://a.test/?q=a:b", True),
    ("http://a.test/?q=ok&", True),
    ("http://a.test/?q=a&&b", True),
    # "w", ":"
    ("http://a.test/news", True),
    ("http://a.test/wwx", False),
    ("http://a.test/WW", False),
    ("http://a.test/w", True),
    ("http://a.test/x:y", True),
    ("http://a.test/http:y", False),
    ("http://a.test/cache:y", False),
    ("http://a.test/ssl:y", False),
    ("http://a.test/ftps:y", False),
    # "." before a "/"
    ("http://a.test/story-1692.html", True),
    ("http://a.test/a.test/", False),
    ("http://a.test/a.test./", False),
    ("http://a.test/a.test:8080/", False),
    ("http://a.test/a.test:80x/", True),
    ("http://a.test/a.test.:/", False),
    ("http://a.test/a.te-st\\", False),
    ("http://a.test/a..test/", False),
    ("http://a.test/a.-test/", True),
    ("http://a.test/a..test/", False),
    ("http://a.test/a.-test/", True),
    ("http://a.test/a.test", True),
    # "/" before an address, base64 or hex
    ("http://a.test/photos/89/283.jpg", True),
    ("http://a.test/192.0.2.7/x", False),
    ("http://a.test/192.0.2.7:81/x", False),
    ("http://a.test/192.0.2.7:/x", False),
    ("http://a.test/192.0.2.7x/", True),
    ("http://a.test/192.0.2.1234/", True),
    ("http://a.test/1922.0.2.7/", True),
    ("http://a.test/192.0.2/", True),
    ("http://a.test/a/H", False),
    ("http://a.test/S/x", False),
    ("http://a.test/aF", False),
    ("http://a.test/ax", True),
    ("http://a.test/4874", False),
    ("http://a.test/4875", True),
]


@pytest.mark.parametrize(("text", "expected"), VECTORS)
def test_vectors(text: str, expected: bool) -> None:
    assert by_regex(text) is expected  # the table says what the reference says ...
    assert plain(text) is expected  # ... and the C code says it too


#: Pieces of every branch and lookahead, and characters of every width.
PIECES = st.sampled_from(
    [
        *"/\\:?&=#.%-_[]@ \t\n\r\x00\x01wWhHtTpPsSeElLcCaAxXfFR0123456789",
        *["\x80", "\xe9", "\xff", "\u0100", "\u3002", "\U0001f600"],
        *["http:", "https-", "HTTP-", "//", "www.", "ww", "cache:", "ssl:", "a.com", ".co/"],
        *["1.2.3.4", "192.0.2.7/", ":8080", ":/", "[::1]", "aHR", "SFR", "a12aHR", "a/H"],
        *["6874", "4874", "5874", "%20", "%2520", "%2F", "=%20", ".test/", ".test./", "v1.2"],
    ]
)


@settings(max_examples=3000, deadline=None)
@given(
    st.sampled_from(["http://r.example/", "https://r.example:8/a?", "HTTP:", "//", "", "a+b.c:"]),
    st.lists(PIECES, max_size=16),
)
def test_the_same_answer_as_the_regex(outer: str, pieces: list[str]) -> None:
    text = outer + "".join(pieces)
    assert plain(text) is by_regex(text)


@settings(max_examples=1000, deadline=None)
@given(st.text(max_size=40))
def test_the_same_answer_on_any_text(text: str) -> None:
    assert plain(text) is by_regex(text)


def test_only_text() -> None:
    with pytest.raises(TypeError):
        plain(b"http://a.test/")  # type: ignore[arg-type]


def test_a_carrier_is_never_plain() -> None:
    """End to end: the search behind the prefilter still finds what a carrier embeds."""
    url = "http://r.example.net/out?ref=home&u=http://listed.test/page.html"
    assert not plain(url)
    assert embedded_urls(url) == ["http://listed.test/page.html"]
