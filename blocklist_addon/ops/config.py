"""What the commands' config files share (blocklist-sync, blocklist-divert): reading the
TOML file, and the one-line error that makes a command exit 2."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

__all__ = ["ConfigError", "read_toml"]


class ConfigError(Exception):
    """A usage or configuration mistake: the command exits 2 with this one line."""


def read_toml(path: Path) -> dict[str, Any]:
    """The file's table; ConfigError names the file when it cannot be read or parsed."""
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config {path} is not valid TOML: {e}") from None
