"""The 451 response for a listed request (DESIGN "Splash page").

A page navigation gets a branded HTML page that says what was blocked and why, how to report
a wrongly blocked page and where to get confidential help; images, scripts and API calls get
a tiny plain body, so a blocked image costs the client nothing. Every reflected value is
HTML-escaped, and nothing here names the matched entry: the page must not make the proxy a
better oracle for the confidential list than the 451 itself.

Pure: the only I/O is reading a template file. No mitmproxy import, so the library and the
tests can use it without a proxy.
"""

from __future__ import annotations

import functools
import html
import json
import re
import string
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.resources import files
from urllib.parse import urlsplit

__all__ = [
    "DEFAULT_ABOUT_URL",
    "DEFAULT_APPEAL_URL",
    "DEFAULT_HELP_URL",
    "DEFAULT_HOTLINE",
    "DEFAULT_OPERATOR",
    "PLACEHOLDERS",
    "SplashConfig",
    "SplashError",
    "SplashResponse",
    "default_template",
    "load_template",
    "render",
    "wants_page",
]

DEFAULT_ABOUT_URL = "https://www.iwf.org.uk/"  # Link rel="blocked-by" default
DEFAULT_APPEAL_URL = "https://www.iwf.org.uk/"  # hotline's content assessment appeal
DEFAULT_HELP_URL = "https://www.stopitnow.org.uk/"  # confidential help (deterrence messaging)
DEFAULT_HOTLINE = "the Internet Watch Foundation (IWF)"
DEFAULT_OPERATOR = "your access provider"

#: Every ``$name`` a template may use.
PLACEHOLDERS: frozenset[str] = frozenset(
    {
        "url",  # the requested URL, at most URL_DISPLAY_MAX characters
        "list",  # the list's name
        "reference",  # opaque event reference, to look up in the block log
        "time",  # UTC, ISO 8601 to the second
        "operator",
        "contact",
        "contact_html",  # ready-made sentence with a link, or "" when no contact is set
        "hotline",
        "appeal_url",
        "help_url",
        "about_url",
    }
)

STATUS = 451  # RFC 7725 Unavailable For Legal Reasons
URL_DISPLAY_MAX = 300  # characters of the requested URL shown on the page, ellipsis included
REFERENCE_MAX = 64

#: No scripts, no external resources; inline styles for the page and data: images so an
#: operator's template can carry a logo without loading anything.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "base-uri 'none'; form-action 'none'"
)

#: Sec-Fetch-Dest values that render a document, so the user sees the page.
_PAGE_DESTS = frozenset({"document", "iframe", "frame", "embed", "object"})
#: Only these methods can come from a navigation (links, forms, the address bar).
_NAVIGATION_METHODS = frozenset({"GET", "HEAD", "POST"})

# Characters refused in configured URLs: they would break out of the Link header's <...>
# or an HTML attribute, or are not URI characters at all.
_URL_FORBIDDEN = frozenset("<>\"'\\`")
# A practical e-mail address: nothing that means something else inside a mailto: URL.
_EMAIL = re.compile(
    r"[A-Za-z0-9._+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+"
)
_REFERENCE_DROP = re.compile(r"[^A-Za-z0-9-]")
_HEADER_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")
# Control, format (bidi overrides) and surrogate code points: never shown as they are.
_UNSHOWABLE = frozenset({"Cc", "Cf", "Cs"})


class SplashError(ValueError):
    """Bad splash configuration; the message names the setting and the problem."""


@dataclass(frozen=True, slots=True)
class SplashConfig:
    """What the operator sets. Validated on creation, so a bad setting fails at startup and
    never while a user is waiting for the page."""

    about_url: str = DEFAULT_ABOUT_URL
    operator: str = DEFAULT_OPERATOR
    contact: str = ""  # e-mail address, mailto: or http(s) URL to report wrong blocks; "" = none
    hotline: str = DEFAULT_HOTLINE
    appeal_url: str = DEFAULT_APPEAL_URL
    help_url: str = DEFAULT_HELP_URL
    template: str | None = None  # template text, not a path; None = the bundled default
    #: Lists of test entries (the self-test feed): their blocks say so, not the hotline's words.
    test_lists: frozenset[str] = frozenset({"selftest"})

    def __post_init__(self) -> None:
        for name in ("about_url", "appeal_url", "help_url"):
            _check_http_url(name, getattr(self, name))
        _check_text("operator", self.operator)
        _check_text("hotline", self.hotline)
        if not isinstance(self.contact, str):
            raise SplashError(f"contact: must be a string, not {type(self.contact).__name__}")
        if self.contact:
            _contact_href(self.contact)  # raises SplashError when it is none of the three forms
        if self.template is not None:
            check_template(self.template)


@dataclass(frozen=True, slots=True)
class SplashResponse:
    """A complete 451 response, ready for the proxy to send."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


def check_template(text: str, setting: str = "template") -> None:
    """Raise SplashError unless ``text`` is a valid template using only PLACEHOLDERS."""
    if not isinstance(text, str):
        raise SplashError(f"{setting}: must be text, not {type(text).__name__}")
    if not text.strip():
        raise SplashError(f"{setting}: is empty")
    template = string.Template(text)
    if not template.is_valid():
        match = next(m for m in template.pattern.finditer(text) if m.group("invalid") is not None)
        at = match.start()  # the "$" itself
        line = text.count("\n", 0, at) + 1
        column = at - text.rfind("\n", 0, at)
        raise SplashError(
            f"{setting}: invalid placeholder at line {line}, column {column}: "
            "write $name or ${name} for a placeholder and $$ for a literal $"
        )
    unknown = sorted(set(template.get_identifiers()) - PLACEHOLDERS)
    if unknown:
        names = ", ".join(f"${name}" for name in unknown)
        known = ", ".join(f"${name}" for name in sorted(PLACEHOLDERS))
        raise SplashError(f"{setting}: unknown placeholder {names} (known: {known})")


def load_template(path: str) -> str:
    """Read and validate an operator's template file, so a bad one fails at startup."""
    try:
        with open(path, encoding="utf-8-sig") as file:
            text = file.read()
    except UnicodeDecodeError as exc:
        raise SplashError(f"template {path}: not UTF-8 (byte offset {exc.start})") from None
    except OSError as exc:
        raise SplashError(f"template {path}: cannot read: {exc.strerror or exc}") from None
    check_template(text, f"template {path}")
    return text


@functools.cache
def default_template() -> str:
    """The bundled template, read once on first use."""
    resource = files("blocklist_addon.ops") / "templates" / "splash.html"
    return resource.read_text(encoding="utf-8")


def wants_page(method: str, headers: Mapping[str, str]) -> bool:
    """True for page navigations (branded HTML), False for images, scripts, XHR/fetch (tiny
    body): a page nobody sees is wasted bytes, and an HTML body in an <img> is just broken."""
    if method.upper() not in _NAVIGATION_METHODS:
        return False
    lowered: dict[str, str] = {}
    for key, value in headers.items():
        name = key.lower()
        lowered[name] = f"{lowered[name]}, {value}" if name in lowered else value
    dest = lowered.get("sec-fetch-dest", "").strip().lower()
    if dest:
        return dest in _PAGE_DESTS
    if lowered.get("sec-fetch-mode", "").strip().lower() == "navigate":
        return True
    if "x-requested-with" in lowered:
        return False
    return _accepts_html(lowered.get("accept", ""))


def _accepts_html(accept: str) -> bool:
    """True when the Accept header lists text/html itself (not */*, not with q=0)."""
    for media_range in accept.split(","):
        media_type, *params = media_range.split(";")
        if media_type.strip().lower() != "text/html":
            continue
        quality = "1"
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                quality = value.strip()
        try:
            if float(quality) > 0:
                return True
        except ValueError:
            return True  # a malformed q is ignored, as if it were absent
    return False


def render(
    config: SplashConfig,
    *,
    url: str,
    list_name: str,
    reference: str,
    page: bool,
    method: str = "GET",
    now: datetime | None = None,
) -> SplashResponse:
    """The 451 response for one blocked request. Never raises on odd ``url``/``list_name``
    text: it is the user's request, and the proxy must answer it whatever it holds."""
    ref = _reference(reference)
    content_type = "text/html; charset=utf-8" if page else "text/plain; charset=utf-8"
    headers = _headers(config, content_type)
    if method.upper() == "HEAD":
        body = b""
    elif list_name in config.test_lists:
        body = _test_page(config, list_name=list_name, reference=ref, page=page)
    elif page:
        body = _page(config, url=url, list_name=list_name, reference=ref, now=now).encode("utf-8")
    else:
        body = f"Blocked (451 Unavailable For Legal Reasons). Reference: {ref}\n".encode("ascii")
    return SplashResponse(STATUS, headers, body)


def _test_page(config: SplashConfig, *, list_name: str, reference: str, page: bool) -> bytes:
    """The answer to a test entry: the same 451, in words that accuse no one."""
    text = (
        f"blocklist-proxy self-test: this address is on the test list "
        f"'{_showable(list_name)}' of {config.operator}, so this request went through the "
        f"proxy and was blocked. Blocking works. Reference: {reference}"
    )
    if not page:
        return text.encode("utf-8") + b"\n"
    escaped = html.escape(text, quote=True)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        "<title>blocklist-proxy self-test</title></head>"
        f"<body><h1>Self-test: blocked as expected</h1><p>{escaped}</p></body></html>\n"
    ).encode()


#: Who refuses an upload, when the operator has not named itself: in front of a platform
#: (reverse mode) the site refuses it; elsewhere (a school's or an ISP's proxy) the provider.
DEFAULT_SITE = "this site"


def refused_upload(
    config: SplashConfig,
    *,
    list_name: str,
    reference: str,
    as_json: bool,
    image: bool = False,
    site: bool = False,
) -> SplashResponse:
    """The 451 answer to a post or upload that carries a listed URL (``image``: a file that
    matches the image hash list): it never reached the site. JSON for API clients, a short
    HTML page for forms; nothing of the post is shown. ``site``: the proxy stands in front
    of the platform (reverse mode), so the one refusing is the site (``blocklist_operator``
    when set), never "your access provider"; the operator's contact is given either way."""
    ref = _reference(reference)
    who = config.operator
    if site and who == DEFAULT_OPERATOR:
        who = DEFAULT_SITE
    if list_name in config.test_lists:  # the self-test upload: words that accuse no one
        reason = (
            f"blocklist-proxy self-test: the submission was not accepted by {who}: it contains "
            f"{'an image' if image else 'a link'} on the test list '{_showable(list_name)}', "
            "so it went through the proxy and was refused. Blocking works."
        )
    elif image:
        reason = (
            f"The submission was not accepted by {who}: it contains an image that matches a "
            f"list of known child sexual abuse images from {config.hotline}."
        )
    else:
        reason = (
            f"The submission was not accepted by {who}: it contains a link to a page that is "
            "blocked because it may contain indecent images of children as identified by "
            f"{config.hotline}."
        )
    if as_json:
        doc = {
            "error": "unavailable_for_legal_reasons",
            "message": reason,
            "list": _showable(list_name),
            "reference": ref,
            "about": config.about_url,
        }
        if config.contact:
            doc["contact"] = _contact_href(config.contact)
        body = (json.dumps(doc, ensure_ascii=True) + "\n").encode("ascii")
        return SplashResponse(STATUS, _headers(config, "application/json"), body)
    contact = ""
    if config.contact:
        href = _contact_href(config.contact)
        label = href[7:].partition("?")[0] if href[:7].lower() == "mailto:" else href
        contact = (
            f' Contact {html.escape(who)}: <a href="{html.escape(href, quote=True)}">'
            f"{html.escape(label)}</a>."
        )
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>Submission not accepted</title></head><body>"
        f"<h1>Submission not accepted</h1><p>{html.escape(reason)}</p>"
        f"<p>{'Remove the file' if image else 'Remove the link'} and submit again. "
        "If you think this is a mistake, quote "
        f"reference <code>{html.escape(ref)}</code> (list {html.escape(_showable(list_name))})."
        f"{contact}"
        f' More: <a href="{html.escape(config.about_url)}">{html.escape(config.about_url)}</a>'
        "</p></body></html>\n"
    )
    return SplashResponse(STATUS, _headers(config, "text/html; charset=utf-8"), page.encode())


def _reference(reference: str) -> str:
    """The reference as shown: letters, digits and dashes only, bounded."""
    return _REFERENCE_DROP.sub("", reference)[:REFERENCE_MAX] or "unknown"


def _headers(config: SplashConfig, content_type: str) -> list[tuple[str, str]]:
    headers = [
        ("Content-Type", content_type),
        ("Cache-Control", "no-store"),
        ("Link", f'<{config.about_url}>; rel="blocked-by"'),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
    ]
    if content_type.startswith("text/html"):
        headers.append(("Content-Security-Policy", CONTENT_SECURITY_POLICY))
    # Validation already keeps these clean; this holds even for a config built around it.
    return [(name, _HEADER_UNSAFE.sub("", value)) for name, value in headers]


def _page(
    config: SplashConfig, *, url: str, list_name: str, reference: str, now: datetime | None
) -> str:
    when = datetime.now(UTC) if now is None else now
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    shown_url = _showable(url[:URL_DISPLAY_MAX])
    if len(url) > URL_DISPLAY_MAX:
        shown_url = shown_url[:-1] + "\u2026"
    values = {
        "url": shown_url,
        "list": _showable(list_name),
        "reference": reference,
        "time": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "operator": config.operator,
        "contact": config.contact,
        "hotline": config.hotline,
        "appeal_url": config.appeal_url,
        "help_url": config.help_url,
        "about_url": config.about_url,
    }
    escaped = {name: html.escape(value, quote=True) for name, value in values.items()}
    escaped["contact_html"] = _contact_html(config, reference)
    return string.Template(config.template or default_template()).substitute(escaped)


def _contact_html(config: SplashConfig, reference: str) -> str:
    """One sentence with a link to the operator's contact, built from escaped parts."""
    if not config.contact:
        return ""
    href = _contact_href(config.contact)
    is_mail = href[:7].lower() == "mailto:"
    label = href[7:].partition("?")[0] if is_mail else href
    return (
        f"Please tell {html.escape(config.operator, quote=True)} at "
        f'<a href="{html.escape(href, quote=True)}">{html.escape(label, quote=True)}</a>, '
        f"quoting the reference {html.escape(reference, quote=True)}."
    )


def _contact_href(contact: str) -> str:
    """The link for a contact setting: an http(s) URL, a mailto: URL or a bare address."""
    if _EMAIL.fullmatch(contact):
        return f"mailto:{contact}"
    if contact[:7].lower() == "mailto:":
        _check_url_characters("contact", contact)
        address = contact[7:].partition("?")[0]
        if not _EMAIL.fullmatch(address):
            raise SplashError(f"contact: {contact!r} is not a mailto: URL with one e-mail address")
        return contact
    if urlsplit(contact).scheme.lower() in ("http", "https"):
        _check_http_url("contact", contact)
        return contact
    raise SplashError(
        f"contact: {contact!r} is not an e-mail address, a mailto: URL or an http(s) URL"
    )


def _check_http_url(setting: str, value: object) -> None:
    """Raise SplashError unless ``value`` is an absolute http(s) URL safe in a header and
    an HTML attribute as it is."""
    if not isinstance(value, str):
        raise SplashError(f"{setting}: must be a string, not {type(value).__name__}")
    _check_url_characters(setting, value)
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - parses the port, raising ValueError when it is not a number
    except ValueError as exc:
        raise SplashError(f"{setting}: {value!r} is not a valid URL ({exc})") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise SplashError(f"{setting}: {value!r} must be an absolute http:// or https:// URL")
    if not parts.hostname:
        raise SplashError(f"{setting}: {value!r} has no host")


def _check_url_characters(setting: str, value: str) -> None:
    for char in value:
        if char.isspace() or ord(char) < 0x20 or ord(char) == 0x7F:
            raise SplashError(f"{setting}: {value!r} contains whitespace or a control character")
        if ord(char) > 0x7E:
            raise SplashError(
                f"{setting}: {value!r} contains a non-ASCII character "
                "(percent-encode the path, use the punycode host name)"
            )
        if char in _URL_FORBIDDEN:
            raise SplashError(f"{setting}: {value!r} contains {char!r}, not allowed in a URL")


def _check_text(setting: str, value: object) -> None:
    """Raise SplashError unless ``value`` is non-empty text without control characters
    (format characters such as ZWNJ stay allowed: some scripts need them in names)."""
    if not isinstance(value, str):
        raise SplashError(f"{setting}: must be a string, not {type(value).__name__}")
    if not value.strip():
        raise SplashError(f"{setting}: must not be empty")
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in value):
        raise SplashError(f"{setting}: {value!r} contains a control character")


def _showable(text: str) -> str:
    """``text`` safe to show: lone surrogates (undecodable bytes), control and bidi/format
    characters become U+FFFD, so nothing raises and nothing reorders or hides the text."""
    return "".join("\ufffd" if unicodedata.category(char) in _UNSHOWABLE else char for char in text)
