"""Option values checked where mitmproxy expects it, in each concern's ``configure``: a bad
value then stops ``--set`` at start (or is refused at run time) with a message naming the
option, instead of surfacing later, on traffic (``blocklist_poll=0`` made the store watcher
spin)."""

from __future__ import annotations

from mitmproxy import ctx
from mitmproxy.exceptions import OptionsError

__all__ = ["int_option"]


def int_option(name: str, low: int, high: int | None = None) -> int:
    """The integer option ``name``, refused unless ``low <= value <= high``."""
    value = getattr(ctx.options, name)
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise OptionsError(f"{name} must be {bounds}, not {value}")
    return value
