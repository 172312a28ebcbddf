"""Option values checked where mitmproxy expects it, in each concern's ``configure``: a bad
value then stops ``--set`` at start (or is refused at run time) with a message naming the
option, instead of surfacing later, on traffic (``blocklist_poll=0`` made the store watcher
spin)."""

from __future__ import annotations

import math

from mitmproxy import ctx
from mitmproxy.exceptions import OptionsError

__all__ = ["float_option", "int_option", "refuse_unsafe"]


def refuse_unsafe(updated: set[str]) -> None:
    """Refuse mitmproxy options under which requests reach origins unchecked (OptionsError:
    at start the proxy then exits with one line, at run time the change is rolled back)."""
    if "validate_inbound_headers" in updated and not getattr(
        ctx.options, "validate_inbound_headers", True
    ):
        raise OptionsError(
            "validate_inbound_headers=false: mitmproxy then forwards a request with both "
            "Content-Length and Transfer-Encoding as it came, and an origin that reads "
            "Content-Length takes the rest of its body for a second request no check sees "
            "(request smuggling); leave it on"
        )


def int_option(name: str, low: int, high: int | None = None) -> int:
    """The integer option ``name``, refused unless ``low <= value <= high``."""
    value = getattr(ctx.options, name)
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise OptionsError(f"{name} must be {bounds}, not {value}")
    return value


def float_option(name: str, low: float, high: float) -> float:
    """The option ``name``, a string (mitmproxy's ``--set`` reads no floats), as a number,
    refused unless it is one, finite, and ``low <= value <= high``."""
    text = getattr(ctx.options, name)
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and low <= value <= high):
        raise OptionsError(f"{name} must be a number between {low:g} and {high:g}, not {text!r}")
    return value
