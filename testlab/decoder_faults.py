"""Work for ``DecoderPool`` that misbehaves on purpose, as a native decoder can: a crash, a
runaway allocation, a spin. Module-level so that worker processes can import it."""

from __future__ import annotations

import os
import signal
import time

from blocklist_addon.hashes.decoder import pdq_frames
from blocklist_addon.hashes.images import Limits


def hostile(data: bytes, limits: Limits, dihedral: bool) -> object:
    if data == b"segfault":
        os.kill(os.getpid(), signal.SIGSEGV)  # what a memory-safety bug in a codec does
    if data == b"allocate":
        return len(bytearray(8 << 30))  # far past the worker's address-space limit
    if data == b"spin":
        while True:  # bounded by the worker's CPU limit, which kills it
            time.monotonic()
    return pdq_frames(data, limits, dihedral)
