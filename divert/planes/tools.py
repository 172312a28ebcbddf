"""Running a data plane's command-line tool (nft, birdc): one way to run it, bounded in time,
and one-line errors an operator can act on."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from divert import DivertError

__all__ = ["run_tool"]


def run_tool(
    command: str | Sequence[str],
    args: Sequence[str],
    *,
    timeout: float,
    install: str,
    slow: str,
    script: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """``command ARGS`` (``script`` on its stdin), whatever its exit status. DivertError
    when the tool is missing (``install`` says how to get it) or runs past ``timeout``
    (``slow`` says what that means)."""
    argv = [command] if isinstance(command, str) else list(command)
    try:
        return subprocess.run(
            [*argv, *args],
            input=script,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        raise DivertError(f"{argv[0]} not found: {install}") from None
    except subprocess.TimeoutExpired:
        raise DivertError(slow) from None
