"""How a fetch fails: one FetchError whose text is fit for cron mail, what failed and
where, never a credential, the URL without its userinfo and query string (where signed URLs
keep their secrets)."""

from __future__ import annotations

import ssl

import aiohttp
import yarl

__all__ = ["FetchError", "Transient", "reason", "shown_url", "too_big", "truncated"]


class FetchError(Exception):
    """One line: what failed, e.g. 'HTTP 401 from https://feed.example.net/list (check
    the token file)'. Never a credential; the URL without userinfo or query string."""


class Transient(FetchError):
    """A failure worth another attempt: connection errors, timeouts, 5xx."""


def shown_url(url: str) -> str:
    """``url`` fit for a message: no userinfo, no query string (signed URLs keep their
    secrets there), no fragment."""
    try:
        parsed = yarl.URL(url)
        if parsed.scheme == "file" or not parsed.host:
            return str(parsed.with_query(None).with_fragment(None))
        return str(parsed.with_user(None).with_query(None).with_fragment(None))
    except (ValueError, TypeError):
        return "<unparseable URL>"


def reason(e: BaseException | None) -> str:
    """An exception's reason without anything it was given to read: strerror for OS
    errors, the library's reason for TLS errors, else only the type."""
    if isinstance(e, aiohttp.ClientConnectorError):
        return reason(e.os_error)
    if isinstance(e, ssl.SSLError):
        return str(e.reason or type(e).__name__)
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    if isinstance(e, UnicodeDecodeError):
        return "not UTF-8 text"
    return type(e).__name__


def too_big(where: object, max_bytes: int, detail: str = "") -> str:
    return f"feed {where} is over the {max_bytes}-byte limit{detail}"


def truncated(shown: str, received: int, expected: int) -> str:
    return f"truncated body from {shown}: {received} of {expected} bytes"
