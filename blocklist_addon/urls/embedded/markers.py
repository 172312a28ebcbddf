"""Where an embedded URL may begin: the markers :mod:`blocklist_addon.urls.embedded` searches for.

Every marker after the URL's own scheme and host starts a candidate:

- ``http:`` or ``https:`` (any case), with any run of ``/`` and ``\\`` or none
  (``https:host/``, ``http:3405803783/``: browsers read a host there), anywhere;
- ``www.`` (also ``www2.`` ...), anywhere, so also in a path: ``/web/2020/www.x.test/``;
- a host as a path segment followed by a path: ``host.tld``, dotted IPv4 or ``[IPv6]``,
  with an optional port. This is how AMP caches (``/c/s/<host>/<path>``, ``/i/s/``,
  ``/amp/s/``), image CDNs (``/<host>/<path>``), Thumbor (``/unsafe/<opts>/<host>/<path>``),
  media proxies (``/external/<sig>/https/<host>/<path>``), ``/proxy/<host>/`` and a
  protocol-relative URL in a path (``/out//host/``, ``/out/%2F%2Fhost``, ``/out/\\\\host``)
  carry a URL, on any host (their names vary, some are self-hosted). A host not followed
  by a path (``/tag/<host>``, a WHOIS page) is a mention, not a fetch: no candidate; nor is
  one in a page about it (``/tag/<host>/page/2/``: :mod:`blocklist_addon.urls.embedded.mentions`
  drops those markers);
- at the start of a parameter value (after ``=``, ``?`` or ``&``, and any C0 controls and
  spaces browsers drop): ``//`` (protocol-relative, also ``\\\\`` and ``///``), Google's
  ``cache:`` operator, or a value that looks like a host followed by ``/ \\ ? # & :`` or the
  end. File names such as ``?file=report.pdf`` are candidates too: ``.zip`` and ``.mov`` are
  real TLDs, so there is no telling them apart. Such a candidate without a path is the
  host's root, which only an entry for the whole host matches. ``ssl:<host>`` (an image
  proxy's https shorthand) is read like ``cache:``.

Hosts may be written with the ideographic, full-width or halfwidth full stops that browsers
map to ``.``. URLs written in base64 or hex, or by Proofpoint's URL Defense, are found here
and decoded by :mod:`blocklist_addon.urls.embedded.decode`. The bounds on a candidate live here
too, beside the markers its window counts.
"""

from __future__ import annotations

import base64
import itertools
import re

__all__ = [
    "ENCODINGS",
    "LEADS",
    "MARKER",
    "MARKER_WINDOW",
    "MAX_CANDIDATE_CHARS",
    "PLAIN",
    "SKIP_OUTER",
    "is_plain",
]

#: No candidate is longer (browsers and servers refuse longer URLs anyway) ...
MAX_CANDIDATE_CHARS = 8192
#: ... or runs past where this many further markers begin, so total output stays linear.
MARKER_WINDOW = 8

# The URL's own scheme and host, which are not embedded in it.
_OUTER = r"(?:[A-Za-z][A-Za-z0-9+.\-]*+:)?+[/\\]*+[^/\\?#%=&]*+"
# A host as a bare value or path segment: a name with a TLD (dots may be the ideographic,
# full-width or halfwidth full stops browsers map to "."), dotted IPv4, or bracketed IPv6.
_DOT = r"(?:\.|\xe3\x80\x82|\xef\xbc\x8e|\xef\xbd\xa1)"
_LABEL = rf"(?:[a-zA-Z0-9_\-]++|(?!{_DOT})[\x80-\xff])++"
_TLD = rf"(?:[a-zA-Z]{{2,63}}|[xX][nN]--[a-zA-Z0-9\-]{{1,59}}|(?:(?!{_DOT})[\x80-\xff]){{2,}})"
_HOST = (
    rf"(?:(?:{_LABEL}{_DOT})+{_TLD}{_DOT}?"
    r"|(?:[0-9]{1,3}\.){3}[0-9]{1,3}"
    r"|\[[0-9a-fA-F:.]{2,45}\])"
)
# The first characters of "http:/" and "https:" (any case) in base64 and in hex: where an
# encoded URL may begin (at a parameter value or path segment).
_B64_SCHEMES = sorted(
    {
        base64.b64encode("".join(chars).encode()).decode()
        for scheme in ("http:/", "https:")
        for chars in itertools.product(*({c.lower(), c.upper()} for c in scheme))
    }
)
_HEX_SCHEME = r"[46]8[57]4[57]4[57]0(?:[57]3)?3[aA]2[fF]"
_HTTP = r"[hH][tT][tT][pP][sS]?:"
_REST_OF_HOST = r"[^/\\?#&]*+"
# (Case spelled out: re.IGNORECASE makes this search twice as slow.)
# imgproxy and image-search proxies split base64url by "/" anywhere, so a "/" may part the
# encoded scheme too; a tracker may put a version tag (a letter and 1 to 3 digits) before it
# ("u=a1aHR0cHM6...").


def _trie(words: list[str]) -> str:
    """One regex for ``words`` with an optional "/" after every character, as a trie (twice
    as fast as their alternation: a position is tried once per character)."""
    groups: dict[str, list[str]] = {}
    for word in words:
        groups.setdefault(word[0], []).append(word[1:])
    branches = [
        re.escape(first) + ("/?" + _trie(rest) if rest[0] else "")
        for first, rest in sorted(groups.items())
    ]
    return branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"


_B64 = r"(?=[aS]/?[HF]/?R)(?P<b64%s>" + _trie(_B64_SCHEMES) + r"[A-Za-z0-9+/_\-]*+=*+)"
_B64_TAG = r"(?:[A-Za-z][0-9]{1,3}(?=[aS][HF]R))?"
_HEXED = r"(?P<hex%s>" + _HEX_SCHEME + r"(?:[0-9a-fA-F]{2})*+)"
# Alternatives grouped by their first character, so that a position is tried once.
MARKER = re.compile(
    # after "/" or "\": a URL in base64, base64url or hex (camo); or a host as a path
    # segment followed by a path: "/c/s/<host>/<path>" (AMP caches), "/unsafe/300x200/
    # <host>/<path>" (Thumbor), "/external/<sig>/https/<host>/<path>", "/proxy/<host>/",
    # "//<host>/" (protocol-relative); a mere mention ("/tag/<host>") is not one
    r"[/\\](?:"
    + _B64 % ""
    + "|"
    + _HEXED % ""
    + rf"|{_HOST}(?::[0-9]{{1,5}})?(?=[/\\]))"
    # at the start of a parameter value: the same encodings, Proofpoint URL Defense v2
    # ("u=http-3A__host_path"), and after leading C0 controls and spaces (which browsers
    # drop) protocol-relative, a host, or Google's cache: operator
    + r"|[=?&](?:"
    + _B64_TAG
    + _B64 % "_v"
    + "|"
    + _HEXED % "_v"
    + r"|(?P<pp2>[hH][tT][tT][pP][sS]?-3[aA]__[^&#\s]*+)"
    + r"|[\x00-\x20]*+(?:[/\\]{2,}+"
    + _REST_OF_HOST
    + rf"|{_HOST}(?=[/\\?#&:]|\Z)"
    + rf"|(?P<cache>(?:[cC][aA][cC][hH][eE]|[sS][sS][lL]):)(?:{_HOST}|(?={_HTTP}))))"
    # Proofpoint URL Defense v3 ("__http://host/path__;<replaced>!!"), a scheme as well
    + rf"|(?P<pp3>__)(?={_HTTP})"
    # a scheme, with or without slashes ("https:host/", "http:3405803783/"), and its host
    + "|"
    + _HTTP
    + r"(?:[/\\]++|(?=[a-zA-Z0-9\[]))"
    + _REST_OF_HOST
    + r"|[wW]{3}[0-9]{0,3}"
    + _DOT  # anywhere: "/web/2020/www.x.test/"
)
# Where a marker's candidate begins: after its "/", "=", "?" or "&" (or "cache:").
LEADS = frozenset("/\\=?&")
ENCODINGS = frozenset({"b64", "b64_v", "hex", "hex_v", "pp2", "pp3"})
SKIP_OUTER = re.compile(_OUTER)
# Matches only strings in which MARKER finds nothing after the outer host, also once
# unescaped: the common case, decided by one fullmatch, several times cheaper than a MARKER
# search. It may refuse more than it must (a refused URL takes the full search). The only
# escape it takes is "%20" (a space, which starts nothing), and in a value only after a
# character that is not a space or control: a marker may follow spaces at a value's start,
# escaped or not ("?q=hello%20world" is plain; "?u=%20//host" and "?u= %20host.test" are not).
PLAIN = re.compile(
    _OUTER
    + r"""(?:
        [^:wW=?&%./\\\[\t\n\r\x80-\xff]++  # characters that start nothing
      | %20  # a space
      | [=?&](?![aS][HF]R|[A-Za-z][0-9]{1,3}[aS][HF]R|[46]8[57]4|[hH][tT][tT][pP][sS]?-  # value
          |[\x00-\x20]*+(?:[/\\]|[a-zA-Z0-9_\-]++\.[a-zA-Z0-9_\-.]*?[a-zA-Z]  # starts no
                         |[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]))  # host, no "/" ...
          (?:[^=?&#%/\\:wW\[\t\n\r\x80-\xff]|(?<![=?&\x00-\x20])%20)*+(?![/\\%\[\x80-\xff])
      | [wW](?![wW])  # a "w" that does not start "ww"
      | (?<![pPsSeElL]):  # a ":" that does not end "http", "https", "cache" or "ssl"
      | \.(?![a-zA-Z][a-zA-Z0-9\-]*+\.?(?::[0-9]*+)?[/\\])  # not a TLD before a "/"
      | [/\\](?!(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?::[0-9]*+)?[/\\]|[aS][/HF]|[46]8[57]4)
    )*+""",
    re.VERBOSE,
)


def _plain_by_regex(text: str) -> bool:
    """``PLAIN.fullmatch(text) is not None``: the reference of the compiled ``is_plain``."""
    return PLAIN.fullmatch(text) is not None


try:  # PLAIN read in C (_plain.c): the same answer for every str, several times faster
    from blocklist_addon.urls.embedded._plain import plain as is_plain
except ImportError:  # a source tree nobody built
    is_plain = _plain_by_regex
