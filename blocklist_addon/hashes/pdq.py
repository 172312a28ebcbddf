"""PDQ hashes of decoded frames, and the index that finds listed hashes near them.

Hashing uses ``pdqhash``, the Cython binding of Meta's C++ reference implementation (what
ThreatExchange's own PDQ hasher calls). Its dihedral variant gives, for the price of one,
the hashes of the 8 rotations and mirror images of a frame, so a mirrored or rotated copy
of a listed image (or one whose EXIF orientation was applied) is found too.

The index (``pdqindex.PdqIndex``) finds listed hashes within the threshold exactly, by
multi-index hashing instead of a scan: the 8 orientations of an upload against 10,000,000
listed hashes cost ~2.6 ms here, where faiss' ``IndexBinaryFlat`` (the scan it replaced)
took ~100 ms (``bench/hashes.py`` measures both in one run).
"""

from __future__ import annotations

import numpy as np
import pdqhash
from PIL import Image

from blocklist_addon.hashes.pdqindex import PdqIndex

__all__ = ["DEFAULT_THRESHOLD", "MIN_QUALITY", "PdqIndex", "pdq_hashes"]

#: Hamming distance (of 256 bits) within which a PDQ hash matches: the published default.
DEFAULT_THRESHOLD = 31
#: Below this quality (0-100) a frame is too plain for a near match to mean anything: its
#: hash is matched exactly only.
MIN_QUALITY = 50
SIZE = 32


def pdq_hashes(frame: Image.Image, *, dihedral: bool = True) -> tuple[list[bytes], int]:
    """The PDQ hash of an RGB frame (with ``dihedral``, of its 8 orientations; the frame
    as it is comes first) and its quality."""
    array = np.asarray(frame, dtype=np.uint8)
    if dihedral:
        vectors, quality = pdqhash.compute_dihedral(array)
    else:
        vector, quality = pdqhash.compute(array)
        vectors = [vector]
    return [np.packbits(np.asarray(v, dtype=np.uint8)).tobytes() for v in vectors], int(quality)
