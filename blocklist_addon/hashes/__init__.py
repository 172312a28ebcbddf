"""Image hash lists: refusing known abuse images by exact and perceptual (PDQ) hashes.

One-way flow: ``kinds`` (hash kinds, hex) and ``images`` (recognize, decode under limits)
feed ``pdq`` (hashing) and ``pdqindex`` (the exact distance index, its loops in ``_mih.c``);
``snapshot`` is the stored form, ``mapped`` the file a machine's processes share; ``hashlist``
matches files against it. Pure: no store, proxy or logging here except ``HashList.load``.

Names are imported on first use: the sync worker needs the snapshot format, not numpy's
index and Pillow (0.2 s to import).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__all__ = [
    "DEFAULT_THRESHOLD",
    "KINDS",
    "MIN_QUALITY",
    "NAMESPACE",
    "Check",
    "HashEntry",
    "HashList",
    "HashMatch",
    "HashRecord",
    "HashSnapshot",
    "Limits",
    "Uncheckable",
    "record_of",
    "sniff",
]

_WHERE = {
    "NAMESPACE": "kinds",
    "KINDS": "kinds",
    "Check": "hashlist",
    "HashEntry": "hashlist",
    "HashList": "hashlist",
    "HashMatch": "hashlist",
    "record_of": "records",
    "Limits": "images",
    "Uncheckable": "images",
    "sniff": "images",
    "DEFAULT_THRESHOLD": "pdq",
    "MIN_QUALITY": "pdq",
    "HashRecord": "records",
    "HashSnapshot": "snapshot",
}

if TYPE_CHECKING:
    from blocklist_addon.hashes.hashlist import Check, HashEntry, HashList, HashMatch
    from blocklist_addon.hashes.images import Limits, Uncheckable, sniff
    from blocklist_addon.hashes.kinds import KINDS, NAMESPACE
    from blocklist_addon.hashes.pdq import DEFAULT_THRESHOLD, MIN_QUALITY
    from blocklist_addon.hashes.records import HashRecord, record_of
    from blocklist_addon.hashes.snapshot import HashSnapshot


def __getattr__(name: str) -> object:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
