"""URL canonicalization and host-suffix / path-prefix expressions, as Google Safe Browsing
defines them ("URLs and Hashing").

Everything here is a pure function of its input and never raises on any string: an input
that is not a web URL at all gives ``None`` (or no expressions), never an exception.

Internally a URL is handled as a *byte string held in a str*: every character is one
byte (latin-1), so percent-unescaping may produce any byte, valid UTF-8 or not, and the
re-escaping step writes each byte back as ``%XX`` exactly as the spec's vectors expect.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple, overload

from .hosts import host_to_ascii

__all__ = [
    "MAX_DNS_NAME",
    "Canonical",
    "as_byte_string",
    "canonical_host",
    "canonicalize",
    "dns_suffixes",
    "expressions",
    "host_suffixes",
    "parse",
    "path_prefixes",
    "unescape",
    "unescape_by_level",
]

#: The longest DNS name (RFC 1035, without the root's dot): no listed host is longer.
MAX_DNS_NAME = 253
#: Safe Browsing: at most 5 host variants (the exact host and 4 suffixes) ...
MAX_SB_HOSTS = 5
#: ... and at most 6 path variants (exact with query, exact, and 4 prefixes from the root).
MAX_SB_PREFIXES = 4

# Schemes whose URLs browsers parse leniently ("http:host", "http:\\host", "http:/host").
_SPECIAL_SCHEMES = frozenset({"http", "https", "ws", "wss", "ftp"})

_HEX_PAIRS = {
    f"{a}{b}": chr(int(a + b, 16))
    for a in "0123456789abcdefABCDEF"
    for b in "0123456789abcdefABCDEF"
}
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
_PORT_AFTER_COLON = re.compile(r"[0-9]+(?:[/\\?#]|$)")
_STRIP = "".join(chr(c) for c in range(0x21))  # C0 controls and space, trimmed at both ends
_NEEDS_ESCAPE = re.compile(r"[\x00-\x20\x7f-\xff#%]")
# In a path, also "?": one that was escaped in the input stays in its segment, and the
# canonical URL must read back with the same split.
_PATH_NEEDS_ESCAPE = re.compile(r"[\x00-\x20\x7f-\xff#%?]")
# In a host, also the characters that would end the host when the canonical URL is read
# again ("http://a%2Fb/" must not become host "a", path "/b/"). No real host holds them.
_HOST_NEEDS_ESCAPE = re.compile(r"[\x00-\x20\x7f-\xff#%/:?@\[\\\]]")
_DOTS = re.compile(r"\.{2,}")
_DIGITS = re.compile(r"[0-9]+")
_OCTAL = re.compile(r"0[0-7]*")
_HEX = re.compile(r"0[xX][0-9A-Fa-f]*")
# A host that needs none of the slow steps: ASCII labels, single dots, and a last label
# that cannot be read as a number (so it is not an IPv4 address in any encoding). RFC
# 3986's sub-delimiters and "~" are kept as they are by every step too: a hostile URL's
# bare values run on past the wrapper's "&" ("h0.test&a=h1.test&a=...") by the thousand.
_PLAIN_HOST = re.compile(
    r"(?:[a-z0-9_\-~!$&'()*+,;=]+\.)*(?![0-9]*$)(?!0x)[a-z0-9_\-~!$&'()*+,;=]+"
)
# NAT64's well-known prefix (RFC 6052): on a network with a NAT64 gateway the address
# reaches the IPv4 address in its last 32 bits, so it is read as that address.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class Canonical(NamedTuple):
    """A canonicalized URL, split where the expressions need it. All fields are escaped."""

    scheme: str
    host: str
    path: str
    query: str | None  # without the "?"; None when the URL had no "?" at all
    is_ip: bool

    @property
    def url(self) -> str:
        query = "" if self.query is None else "?" + self.query
        return f"{self.scheme}://{self.host}{self.path}{query}"


# -- percent-unescaping ------------------------------------------------------------------


def _unescape_once(s: str, pairs: Mapping[str, str] = _HEX_PAIRS) -> str:
    parts = s.split("%")
    out = [parts[0]]
    for part in parts[1:]:
        char = pairs.get(part[:2])
        if char is None:
            out.append("%")
            out.append(part)
        else:
            out.append(char)
            out.append(part[2:])
    return "".join(out)


def _unescape_linear(s: str, pairs: Mapping[str, str] = _HEX_PAIRS) -> str:
    """Fixpoint of repeated unescaping in one pass: a decoded byte may complete an escape
    with the characters before it, so reduce on a stack. Linear however deep the nesting."""
    out: list[str] = []
    for ch in s:
        out.append(ch)
        while len(out) >= 3 and out[-3] == "%":
            char = pairs.get(out[-2] + out[-1])
            if char is None:
                break
            del out[-3:]
            out.append(char)
    return "".join(out)


@overload
def unescape(s: str) -> str: ...
@overload
def unescape(s: bytes) -> bytes: ...
def unescape(s: str | bytes) -> str | bytes:
    """Percent-unescape until no escape is left (the spec's "repeatedly"); bytes in, bytes
    out.

    A few whole-string passes settle ordinary input quickly; deeper nesting such as
    ``%252525...`` switches to the linear stack reduction so that work stays O(len(s)).
    """
    if isinstance(s, bytes):
        return _unescape(s.decode("latin-1")).encode("latin-1")
    return _unescape(s)


def _unescape(s: str) -> str:
    for _ in range(3):
        if "%" not in s:
            return s
        t = _unescape_once(s)
        if t == s:
            return s
        s = t
    return _unescape_linear(s) if "%" in s else s


def unescape_by_level(s: str, tables: Sequence[Mapping[str, str]]) -> str:
    """``unescape`` to the same fixpoint, but pass k (from 1) decodes each escape with
    ``tables[k - 1]`` (hex pair -> replacement) and every pass after the last table with
    the last one: a caller can mark what each character was before decoding, and how
    deeply it was encoded. A replacement must not hold "%" or a hex digit."""
    for table in tables[:-1]:
        if "%" not in s:
            return s
        t = _unescape_once(s, table)
        if t == s:
            return s
        s = t
    return _unescape_linear(s, tables[-1]) if "%" in s else s


def _escapes(needs_escape: re.Pattern[str]) -> dict[int, str]:
    """The str.translate table writing each byte ``needs_escape`` matches as ``%XX``."""
    return {b: f"%{b:02X}" for b in range(256) if needs_escape.fullmatch(chr(b))}


# One translate per string (C speed): a regex substitution called back per byte took
# 58 ms for a host of 64 KiB of escaped bytes.
_ESCAPES = {
    pattern: _escapes(pattern)
    for pattern in (_NEEDS_ESCAPE, _PATH_NEEDS_ESCAPE, _HOST_NEEDS_ESCAPE)
}


def _escape(s: str, needs_escape: re.Pattern[str] = _NEEDS_ESCAPE) -> str:
    if needs_escape.search(s) is None:
        return s
    return s.translate(_ESCAPES[needs_escape])


# -- host --------------------------------------------------------------------------------


def _ipv4(host: str) -> str | None:
    """Dotted-decimal form of a host in any legal IPv4 encoding (octal, hex, 1-4 parts)."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers = []
    for part in parts:
        if _HEX.fullmatch(part):
            digits, base = part[2:], 16
        elif _OCTAL.fullmatch(part):
            digits, base = part, 8
        elif _DIGITS.fullmatch(part):
            digits, base = part, 10
        else:
            return None
        digits = digits.lstrip("0")
        if len(digits) > 11:
            # Over 2**32 in any of the bases, so no address; and int() of a long decimal
            # string is quadratic, and refused (ValueError) beyond 4300 digits.
            return None
        numbers.append(int(digits or "0", base))
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(numbers)):
        return None
    value = last
    for i, n in enumerate(head):
        value += n << (8 * (3 - i))
    return ".".join(str((value >> shift) & 0xFF) for shift in (24, 16, 8, 0))


def _ipv6(host: str) -> str | None:
    inner = host[1:-1].split("%", 1)[0]  # a zone id never reaches another host
    try:
        address = ipaddress.IPv6Address(inner)
    except ValueError:
        return None
    mapped = address.ipv4_mapped
    if mapped is not None:
        return str(mapped)
    if address in _NAT64:
        return str(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return f"[{address.compressed}]"


def _idna(host: str) -> str:
    """The ASCII host a browser sends for a host whose bytes hold non-ASCII characters
    (``hosts.host_to_ascii``: WHATWG's domain to ASCII, each label read on its own where
    browsers refuse the host)."""
    try:
        text = host.encode("latin-1").decode("utf-8")
    except UnicodeError:
        text = None
    found = None if text is None else host_to_ascii(text)
    if found is None or "%" in found:
        # Undecodable, or a "%" kept in a label (one mapped from a full-width or small
        # percent sign, or one that was not an escape): that "%" would be unescaped
        # together with what follows when the canonical URL is read again, so keep the
        # bytes as they are (browsers refuse such a host anyway).
        return host.encode("latin-1").lower().decode("latin-1")
    return found.encode("utf-8").decode("latin-1")


def canonical_host(raw: str | bytes) -> tuple[str, bool] | None:
    """The canonical, escaped form of a URL's host (userinfo and port already removed) and
    whether it is an IP address; None for an empty host. A str is text (encoded as UTF-8),
    bytes are bytes, as for ``parse``; the result is the host ``parse`` gives."""
    if not isinstance(raw, (str, bytes)):
        return None
    return _canonical_host(as_byte_string(raw))


def _canonical_host(raw: str) -> tuple[str, bool] | None:
    """``canonical_host`` of a host held as bytes in a str."""
    if _PLAIN_HOST.fullmatch(raw):
        return raw, False
    host = _unescape(raw)
    if host.startswith("[") and host.endswith("]"):
        v6 = _ipv6(host)
        if v6 is not None:
            return v6, True
    host = host.lower() if host.isascii() else _idna(host)
    host = _DOTS.sub(".", host.strip("."))
    if not host:
        return None
    v4 = _ipv4(host)
    if v4 is not None:
        return v4, True
    return _escape(host, _HOST_NEEDS_ESCAPE), False


# -- path --------------------------------------------------------------------------------


def _normalize_path(path: str) -> str:
    """Resolve ``.`` and ``..`` segments and collapse runs of slashes."""
    if "/." not in path and "//" not in path:
        return path
    stack: list[str] = []
    segments = path.split("/")
    for segment in segments:
        if segment in ("", "."):
            continue
        if segment == "..":
            if stack:
                stack.pop()
        else:
            stack.append(segment)
    trailing = segments[-1] in ("", ".", "..")
    if not stack:
        return "/"
    return "/" + "/".join(stack) + ("/" if trailing else "")


# -- whole URL ---------------------------------------------------------------------------


def as_byte_string(url: str | bytes) -> str:
    """The bytes of ``url`` held one per character (latin-1): text is encoded as UTF-8."""
    if isinstance(url, bytes):
        return url.decode("latin-1")
    if url.isascii():
        return url
    try:
        # mitmproxy (like os.fsdecode) carries undecodable request bytes as lone surrogates
        # U+DC80..U+DCFF: turn them back into the bytes the client sent.
        return url.encode("utf-8", "surrogateescape").decode("latin-1")
    except UnicodeEncodeError:
        return url.encode("utf-8", "surrogatepass").decode("latin-1")


def parse(url: str | bytes) -> Canonical | None:
    """Canonicalize ``url``; None when it has no host or is not a hierarchical web URL
    (``mailto:``, ``data:``, ``javascript:`` ...)."""
    if not isinstance(url, (str, bytes)):
        return None
    s = as_byte_string(url)
    if "\t" in s or "\r" in s or "\n" in s:  # str.translate would cost more than the rest
        s = s.replace("\t", "").replace("\r", "").replace("\n", "")
    s = s.strip(_STRIP)
    s = s.split("#", 1)[0]

    scheme = "http"
    special = True
    m = _SCHEME.match(s)
    if m is not None and (
        # "host:8080/" is a host and port; "http:3405803783/" is a scheme and a numeric
        # host, as browsers read it (a host named "http" is no web site).
        m.group(1).lower() in _SPECIAL_SCHEMES or not _PORT_AFTER_COLON.match(s, m.end())
    ):
        scheme = m.group(1).lower()
        s = s[m.end() :]
        special = scheme in _SPECIAL_SCHEMES
        if not special:
            if not s.startswith("//"):
                return None
            s = s[2:]
    if special:
        s = s.lstrip("/\\")

    query: str | None = None
    if "?" in s:
        s, query = s.split("?", 1)
    if special and "\\" in s:
        s = s.replace("\\", "/")
    authority, _, path = s.partition("/")
    authority = authority.rpartition("@")[2]
    if authority.startswith("["):
        authority = authority[: authority.find("]") + 1] or authority
    else:
        authority = authority.partition(":")[0]

    host = _canonical_host(authority)
    if host is None:
        return None
    # The query starts at the first real "?" only: an escaped one stays inside its path
    # segment, as browsers and servers read it, so "x%3F/../page.html" is "page.html".
    # (Google's reference implementation unescapes the whole URL first, so "%3F" starts
    # the query there; the matcher checks that reading as well.) On a special scheme an
    # escaped backslash is a slash like an escaped "/". The canonical URL reads back as
    # itself: its path holds "?" only as "%3F", and never a backslash.
    path = _unescape(path)
    if query is not None:
        query = _unescape(query)
    if special and "\\" in path:
        path = path.replace("\\", "/")
    path = _escape(_normalize_path("/" + path), _PATH_NEEDS_ESCAPE)
    if query is not None:
        query = _escape(query)
    return Canonical(scheme, host[0], path, query, host[1])


def canonicalize(url: str | bytes) -> str | None:
    """The canonical URL exactly as Safe Browsing defines it, or None when ``url`` cannot be
    read as a web URL with a host."""
    c = parse(url)
    return None if c is None else c.url


def host_suffixes(host: str, is_ip: bool, limit: int | None = MAX_SB_HOSTS) -> list[str]:
    """The exact host, then its suffixes of at least two labels, longest first.

    With the default ``limit`` this is the spec's list (the exact host plus at most four
    suffixes built from the last five labels); ``limit=None`` gives every suffix.
    """
    if is_ip:
        return [host]
    labels = host.split(".")
    n = len(labels)
    first = 1 if limit is None else max(1, n - limit)
    return [host] + [".".join(labels[k:]) for k in range(first, n - 1)]


def dns_suffixes(host: str, is_ip: bool) -> list[str]:
    """``host_suffixes(host, is_ip, limit=None)`` without those longer than a DNS name.

    No listed host is longer than MAX_DNS_NAME, so a longer suffix cannot be one; and a
    host of thousands of labels made as many suffixes of up to its whole length, each then
    hashed: work quadratic in the host (85 ms for 8 KiB), on the event loop. Built from
    the right, this costs what a DNS name does, however long the host."""
    if is_ip:
        return [host]
    suffixes: list[str] = []
    cut = host.rfind(".", 0, host.rfind("."))  # the dot before the last two labels
    while cut >= 0 and len(host) - cut - 1 <= MAX_DNS_NAME:
        suffixes.append(host[cut + 1 :])
        cut = host.rfind(".", 0, cut)
    suffixes.reverse()  # longest first, as host_suffixes gives them
    return ([host] if len(host) <= MAX_DNS_NAME else []) + suffixes


def path_prefixes(path: str, query: str | None, limit: int | None = MAX_SB_PREFIXES) -> list[str]:
    """The exact path with its query, the exact path, then the directory prefixes from the
    root ("/", "/a/", "/a/b/" ...), without duplicates.

    With the default ``limit`` at most four prefixes are made, as the spec says;
    ``limit=None`` gives every directory above the path.
    """
    out = []
    if query is not None:
        out.append(f"{path}?{query}")
    out.append(path)
    segments = path.split("/")[1:-1]  # directories above the last segment
    if limit is not None:
        segments = segments[: limit - 1]
    prefix = "/"
    if prefix != path:
        out.append(prefix)
    for segment in segments:
        prefix = f"{prefix}{segment}/"
        if prefix != path:
            out.append(prefix)
    return out


def expressions(url: str | bytes) -> list[str]:
    """The Safe Browsing host-suffix / path-prefix expressions of ``url`` (at most 5 x 6),
    most specific first; empty when the URL cannot be canonicalized."""
    c = parse(url)
    if c is None:
        return []
    paths = path_prefixes(c.path, c.query)
    return [h + p for h in host_suffixes(c.host, c.is_ip) for p in paths]
