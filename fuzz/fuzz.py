"""Coverage-guided fuzzing with atheris (libFuzzer) of everything that reads untrusted input.

    make fuzz                                    # every target, 60 s each
    .venv/bin/python fuzz/fuzz.py TARGET [libFuzzer flags, e.g. -max_total_time=300]

Targets: canonical (canonicalize and expressions: total, idempotent, expressions agree),
embedded (embedded_urls: total, every candidate ASCII and at most MAX_CANDIDATE_CHARS long,
or three times that where bytes are written as %XX), matcher (Blocklist.match: total; a
listed URL wrapped in the input, as a parameter or in base64, still matches), pages
(neutralize: total; the fast scan finds what the reference scanner finds, cold and with the
verdicts of the earlier inputs kept; nothing listed means the body comes back unchanged;
neutralizing twice changes nothing more), plain (the embedded search's prefilter in C gives
the regex's answer, and a text it calls plain holds no candidate), uploads (listed_in_body:
total) and feeds (parse_feed in every format: a feed or a FeedError, nothing else). A failed
invariant is an AssertionError, which libFuzzer reports as a crash with its input saved as
crash-*.
"""

from __future__ import annotations

import base64
import contextlib
import os
import sys
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import atheris

with atheris.instrument_imports():
    from blocklist_addon import Blocklist, canonicalize, expressions
    from blocklist_addon.content import pages
    from blocklist_addon.content.pages import Verdicts, neutralize
    from blocklist_addon.content.uploads import listed_in_body
    from blocklist_addon.urls.embedded import (
        MAX_CANDIDATE_CHARS,
        _candidates,
        _plain,
        embedded_urls,
    )
    from blocklist_addon.urls.embedded.markers import _plain_by_regex
    from sync.feeds import FORMATS, FeedError, parse_feed

LISTED = "http://blocked.example.com/page.html"
BLOCKLIST = Blocklist.from_entries([LISTED, "whole-site.blocked.test/", "http://192.0.2.44/a.jpg"])
B64_LISTED = base64.b64encode(LISTED.encode()).decode()
SPLASH = "http://site.example/.well-known/blocklist-proxy/blocked?list=default"
PAGE = "http://site.example/a/b.html"
VERDICTS = Verdicts()  # kept across inputs, as a proxy keeps them across pages


def _text(data: bytes) -> str:
    return atheris.FuzzedDataProvider(data).ConsumeUnicodeNoSurrogates(len(data))


def fuzz_canonical(data: bytes) -> None:
    url = _text(data)
    canonical = canonicalize(url)
    if canonical is not None:
        assert canonicalize(canonical) == canonical, (url, canonical)
    found = expressions(url)
    assert (canonical is None) == (found == []), (url, canonical, found)


def fuzz_embedded(data: bytes) -> None:
    for candidate in embedded_urls(_text(data)):
        assert candidate.isascii()
        assert len(candidate) <= 3 * MAX_CANDIDATE_CHARS


def fuzz_matcher(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    prefix = provider.ConsumeUnicodeNoSurrogates(64)
    BLOCKLIST.match(prefix + provider.ConsumeUnicodeNoSurrogates(4096))
    wrapped = f"http://r.example/?{prefix.replace('&', '')}&u={LISTED}"
    if "#" not in prefix and "%" not in prefix and not any(c.isspace() for c in prefix):
        assert BLOCKLIST.match(wrapped) is not None, wrapped
        assert BLOCKLIST.match(f"{wrapped.split('&u=')[0]}&u={B64_LISTED}") is not None, wrapped


def fuzz_pages(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    content_type = provider.PickValueInList(["text/html", "text/css", "text/html; charset=utf-16"])
    body = provider.ConsumeBytes(len(data))
    out, found = neutralize(body, content_type, PAGE, BLOCKLIST.match, lambda m: SPLASH)
    kept = VERDICTS.of(BLOCKLIST)
    warm = neutralize(body, content_type, PAGE, BLOCKLIST.match, lambda m: SPLASH, kept)
    reference = pages._neutralize(
        body, content_type, PAGE, BLOCKLIST.match, lambda m: SPLASH, fast=False
    )
    assert (out, found) == warm == reference, body
    if not found:
        assert out == body
    else:
        again, _ = neutralize(out, content_type, PAGE, BLOCKLIST.match, lambda m: SPLASH)
        assert again == out


def fuzz_plain(data: bytes) -> None:
    text = _text(data)
    plain = _plain.plain(text)
    assert plain is _plain_by_regex(text), text
    if plain:
        found: dict[str, None] = {}
        assert not _candidates(found, text, None) and not found, text


def fuzz_uploads(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    content_type = provider.PickValueInList(
        [
            "application/json",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=b",
        ]
    )
    listed_in_body(provider.ConsumeBytes(len(data)), content_type, BLOCKLIST.match)


def fuzz_feeds(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    fmt = provider.PickValueInList(list(FORMATS))
    with contextlib.suppress(FeedError):
        parse_feed(provider.ConsumeBytes(len(data)), fmt)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "canonical": fuzz_canonical,
    "embedded": fuzz_embedded,
    "matcher": fuzz_matcher,
    "pages": fuzz_pages,
    "plain": fuzz_plain,
    "uploads": fuzz_uploads,
    "feeds": fuzz_feeds,
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        raise SystemExit(f"usage: fuzz.py {{{','.join(TARGETS)}}} [libFuzzer flags]")
    target = TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
