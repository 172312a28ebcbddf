"""No evasion, as a property: a URL built from a listed entry by any combination of the
rewrites a browser or server still reads as the same page is blocked, and the same rewrites
applied to a near miss (a sibling, the parent, a lookalike host) never are.

Each rewrite takes a URL and returns one that every browser resolves to the same resource;
hypothesis draws a chain of them, in any order, for every kind of entry (page, directory,
whole host, exact query, IPv4 page).
"""

from __future__ import annotations

import base64
import ipaddress
import re
import string
from collections.abc import Callable
from urllib.parse import quote, quote_plus, urlsplit, urlunsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocklist_addon import Blocklist

ENTRIES = {
    "page": "http://listed.example.com/gallery/page.html",
    "directory": "http://dir.example.net/photos/",
    "host": "whole-site.test/",
    "query": "http://q.example.org/view.php?id=42",
    "ip": "http://192.0.2.7/img/a.jpg",
    "space": "http://listed.example.com/my%20file.html",
}
BL = Blocklist.from_entries(list(ENTRIES.values()))
#: URLs the listed entries must block, and near misses they must not.
TARGETS = {
    "page": "http://listed.example.com/gallery/page.html",
    "directory": "http://dir.example.net/photos/2024/x.jpg",
    "host": "http://whole-site.test/any/thing",
    "query": "http://q.example.org/view.php?id=42",
    "ip": "http://192.0.2.7/img/a.jpg",
    "space": "http://listed.example.com/my file.html",
}
NEAR_MISSES = [
    "http://listed.example.com/gallery/page2.html",
    "http://listed.example.com/gallery/",
    "http://listed.example.com/Gallery/page.html",
    "http://listed.example.com.evil.test/gallery/page.html",
    "http://dir.example.net/photos",
    "http://dir.example.net/photosx/a.jpg",
    "http://whole-site.testx/",
    "http://site.test/",
    "http://q.example.org/view.php?id=43",
    "http://q.example.org/view.php",
    "http://192.0.2.8/img/a.jpg",
    "http://listed.example.com/my+file.html",
    "http://listed.example.com/page.html%3F/../other.html",
]

Rewrite = Callable[[str, st.DataObject], str]


def _parts(url: str):
    return urlsplit(url)


def upper_scheme_and_host(url: str, data: st.DataObject) -> str:
    p = _parts(url)
    return urlunsplit((p.scheme.upper(), p.netloc.upper(), p.path, p.query, p.fragment))


def _is_ip(host: str) -> bool:
    """Any IP spelling (dotted, decimal, hex, octal, bracketed IPv6): no DNS name rewrites."""
    return host.startswith("[") or re.fullmatch(r"[0-9a-fA-FxX.]+", host) is not None


def trailing_dot(url: str, data: st.DataObject) -> str:
    p = _parts(url)
    host, _, port = p.netloc.partition(":")
    if _is_ip(p.netloc) or host.endswith("."):
        return url
    return urlunsplit((p.scheme, host + "." + (":" + port if port else ""), p.path, p.query, ""))


def default_port(url: str, data: st.DataObject) -> str:
    p = _parts(url)
    if ":" in p.netloc:
        return url
    return urlunsplit((p.scheme, p.netloc + ":80", p.path, p.query, p.fragment))


def dot_segments(url: str, data: st.DataObject) -> str:
    p = _parts(url)
    segments = p.path.split("/")
    at = data.draw(st.integers(1, max(1, len(segments) - 1)))
    extra = data.draw(st.sampled_from(["./", "x/../", "./y/../", ""]))
    path = "/".join(segments[:at]) + "/" + extra + "/".join(segments[at:])
    return urlunsplit((p.scheme, p.netloc, path, p.query, p.fragment))


def escaped_query_dots(url: str, data: st.DataObject) -> str:
    """A segment holding an escaped "?" and removed again by "..": browsers keep "%3F" in
    its segment and resolve the dot segment (issue 15.2)."""
    p = _parts(url)
    segments = p.path.split("/")
    at = data.draw(st.integers(1, max(1, len(segments) - 1)))
    mark = data.draw(st.sampled_from(["%3F", "%3f", "%253F", "x%3Fy"]))
    dots = data.draw(st.sampled_from(["..", "%2e%2e", "%2E.", "%252e%252e"]))
    path = "/".join(segments[:at]) + f"/{mark}/{dots}/" + "/".join(segments[at:])
    return urlunsplit((p.scheme, p.netloc, path, p.query, p.fragment))


def marker_padding(url: str, data: st.DataObject) -> str:
    """Segments that look like embedded URLs, removed again by "..": enough of them to fill
    every marker window of an embedded candidate (issue 15.3)."""
    p = _parts(url)
    segments = p.path.split("/")
    at = data.draw(st.integers(1, max(1, len(segments) - 1)))
    pad = data.draw(st.sampled_from(["www.a/../", "http:/../", "=b.test/../", "x.test/y/../../"]))
    path = (
        "/".join(segments[:at])
        + "/"
        + pad * data.draw(st.integers(9, 20))
        + "/".join(segments[at:])
    )
    return urlunsplit((p.scheme, p.netloc, path, p.query, p.fragment))


def double_slashes(url: str, data: st.DataObject) -> str:
    p = _parts(url)
    return urlunsplit((p.scheme, p.netloc, p.path.replace("/", "//", 1), p.query, p.fragment))


def percent_encode_path(url: str, data: st.DataObject) -> str:
    p = _parts(url)
    chars = [f"%{ord(c):02X}" if c.isalnum() and data.draw(st.booleans()) else c for c in p.path]
    return urlunsplit((p.scheme, p.netloc, "".join(chars), p.query, p.fragment))


def fragment(url: str, data: st.DataObject) -> str:
    return url.split("#", 1)[0] + "#" + data.draw(st.sampled_from(["top", "", "a/b?c"]))


def subdomain(url: str, data: st.DataObject) -> str:
    p = _parts(url)
    if _is_ip(p.netloc.rpartition("@")[2].split(":")[0] if "[" not in p.netloc else p.netloc):
        return url
    label = data.draw(st.sampled_from(["www", "m", "cdn1", "a.b"]))
    return urlunsplit((p.scheme, f"{label}.{p.netloc}", p.path, p.query, p.fragment))


def ip_spelling(url: str, data: st.DataObject) -> str:
    p = _parts(url)
    try:
        ip = ipaddress.IPv4Address(p.hostname or "")
    except ValueError:
        return url
    n = int(ip)
    octets = [int(o) for o in str(ip).split(".")]
    host = data.draw(
        st.sampled_from(
            [
                str(n),
                hex(n),
                ".".join(f"0{o:o}" for o in octets),
                ".".join(hex(o) for o in octets),
                f"{octets[0]}.{octets[1]}.{(octets[2] << 8) + octets[3]}",
                f"[::ffff:{ip}]",
            ]
        )
    )
    return urlunsplit((p.scheme, host, p.path, p.query, p.fragment))


def https(url: str, data: st.DataObject) -> str:
    return "https" + url[4:] if url.startswith("http:") else url


def embed(url: str, data: st.DataObject) -> str:
    """Inside a redirector, translator or archive URL, encoded once or more."""
    times = data.draw(st.integers(1, 3))
    inner = url
    form = data.draw(st.booleans())  # as urlencode() and HTML forms write it: " " is "+"
    for _ in range(times):
        inner = quote_plus(inner, safe="") if form else quote(inner, safe="")
    return data.draw(
        st.sampled_from(
            [
                f"http://redirect.example/?u={inner}",
                f"http://t.example/translate?sl=auto&u={inner}&hl=en",
                f"http://archive.example/web/2020/{url}",
                f"http://r.example/go?to={inner}&ref=mail",
            ]
        )
    )


def _host_and_rest(url: str) -> tuple[str, str] | None:
    """The host (a DNS name: no IP, port or user info) and what follows it, or None."""
    p = _parts(url)
    if p.scheme.lower() not in ("http", "https") or not p.netloc or _is_ip(p.netloc):
        return None
    if ":" in p.netloc or "@" in p.netloc:
        return None
    rest = urlunsplit(("", "", p.path or "/", p.query, ""))
    return p.netloc, rest


def wrap(url: str, data: st.DataObject) -> str:
    """Inside a wrapper that carries the URL in its path or in another encoding (issue 15.6),
    or as browsers read a redirect target leniently (issue 15.5)."""
    # In a path a host is read only as a name or dotted-decimal IPv4 (a number alone is
    # a path segment everywhere); the other spellings go in parameters or with a scheme.
    host = _parts(url).hostname or ""
    if _is_ip(host) and not re.fullmatch(r"(?:[0-9]{1,3}\.){3}[0-9]{1,3}", host):
        return embed(url, data)
    shapes: list[Callable[[], str | None]] = [
        lambda: f"https://a.example/c/s/{without_scheme(url)}",  # AMP cache
        lambda: f"https://a.example/i/s/{without_scheme(url)}",
        lambda: f"https://www.google.example/amp/s/{without_scheme(url)}",
        lambda: f"https://i0.cdn.example/{without_scheme(url)}",  # image CDN
        lambda: f"https://t.example/unsafe/300x200/smart/{without_scheme(url)}",  # Thumbor
        lambda: f"https://m.example/external/Zx9_k2/{url.replace('://', '/', 1)}",  # media
        lambda: f"https://p.example/proxy/{without_scheme(url)}",
        lambda: "https://urldefense.example/v2/url?u=" + proofpoint_v2(url) + "&d=DwMF&c=x",
        lambda: "https://urldefense.example/v3/__" + proofpoint_v3(url) + "!!Ab1$",
        lambda: "http://r.example/?u=" + quote(base64.b64encode(url.encode()).decode()),
        lambda: "http://r.example/go/" + base64.urlsafe_b64encode(url.encode()).decode() + "/x",
        lambda: "https://camo.example/5f1d0e/" + url.encode().hex(),
        lambda: "http://search.example/search?q=cache:" + quote(url, safe=""),
        lambda: "http://search.example/search?q=cache:" + quote(without_scheme(url), safe=""),
        lambda: translated(url),
        # browsers' lenient reading of a redirect target (WHATWG URL)
        lambda: "http://r.example/?u=%20%01//" + quote(without_scheme(url), safe=""),
        lambda: "http://r.example/?u=ht%09tp" + quote(url[url.index(":") :], safe=""),
        lambda: "http://r.example/?u=" + quote(url.replace("://", ":", 1), safe=""),
        lambda: "http://r.example/out/%2F%2F" + quote(without_scheme(url), safe=""),
        lambda: "http://r.example/out/\\\\" + without_scheme(url).replace("/", "\\"),
        lambda: ideographic(url),
    ]
    return data.draw(st.sampled_from(shapes))() or embed(url, data)


def without_scheme(url: str) -> str:
    return url.split("://", 1)[1] if "://" in url else url


def proofpoint_v2(url: str) -> str:
    """URL Defense v2: percent-encoding with "-" for "%", and "_" for "/"."""
    encoded = quote(url, safe="/").replace("-", "%2D").replace("_", "%5F")
    return encoded.replace("%", "-").replace("/", "_")


RUNS = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"


def proofpoint_v3(url: str) -> str:
    """URL Defense v3: the URL as written, "%" and "#" moved behind it in base64url; a
    single one is written "*", a run of n "**" and the n-th run character."""
    moved = "".join(c for c in url if c in "%#")
    kept = re.sub(r"[%#]+", lambda m: "*" if len(m[0]) == 1 else "**" + RUNS[len(m[0]) - 2], url)
    return kept + "__;" + base64.urlsafe_b64encode(moved.encode()).decode().rstrip("=")


def translated(url: str) -> str | None:
    """Google Translate's proxy host form: listed-example-com.translate.goog."""
    parts = _host_and_rest(url)
    if parts is None:
        return None
    host, rest = parts
    label = host.rstrip(".").replace("-", "--").replace(".", "-")
    sep = "&" if "?" in rest else "?"
    return f"https://{label}.translate.goog{rest}{sep}_x_tr_sl=auto&_x_tr_tl=en"


def ideographic(url: str) -> str | None:
    """A bare host with ideographic full stops, as a parameter value."""
    parts = _host_and_rest(url)
    if parts is None:
        return None
    host, rest = parts
    return "http://r.example/?u=" + quote(host.replace(".", "\u3002") + rest, safe="/")


REWRITES: list[Rewrite] = [
    upper_scheme_and_host,
    trailing_dot,
    default_port,
    dot_segments,
    escaped_query_dots,
    marker_padding,
    double_slashes,
    percent_encode_path,
    fragment,
    subdomain,
    ip_spelling,
    https,
]


def rewritten(url: str, data: st.DataObject) -> str:
    for rewrite in data.draw(st.lists(st.sampled_from(REWRITES), max_size=6)):
        url = rewrite(url, data)
    if data.draw(st.booleans()):  # last: an embedded URL keeps its own spelling
        url = embed(url, data) if data.draw(st.booleans()) else wrap(url, data)
    return url


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(sorted(TARGETS)), st.data())
def test_any_chain_of_rewrites_of_a_listed_url_is_blocked(kind: str, data: st.DataObject) -> None:
    url = rewritten(TARGETS[kind], data)
    found, direct = BL.match(url), BL.match(TARGETS[kind])
    assert direct is not None and found is not None, url
    assert (found.entry_id, found.digest) == (direct.entry_id, direct.digest), url  # its entry


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(NEAR_MISSES), st.data())
def test_the_same_rewrites_of_a_near_miss_are_never_blocked(url: str, data: st.DataObject) -> None:
    url = rewritten(url, data)
    assert BL.match(url) is None, url


@pytest.mark.parametrize("url", list(TARGETS.values()))
def test_the_targets_themselves(url: str) -> None:
    assert BL.match(url) is not None
