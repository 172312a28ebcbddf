"""How the addon names an unexpected error in its log: enough for a bug report, nothing of
the traffic."""

from __future__ import annotations

import os
import traceback

__all__ = ["describe_error"]


def describe_error(exc: BaseException) -> str:
    """``TypeName at file.py:123``, where it was raised. Never the error's message: it may
    quote the URL or host being checked."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}{where}"
