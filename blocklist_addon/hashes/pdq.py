"""PDQ hashes of decoded frames, and the index that finds listed hashes near them.

Hashing uses ``pdqhash``, the Cython binding of Meta's C++ reference implementation (what
ThreatExchange's own PDQ hasher calls). Its dihedral variant gives, for the price of one,
the hashes of the 8 rotations and mirror images of a frame, so a mirrored or rotated copy
of a listed image (or one whose EXIF orientation was applied) is found too.

The index is faiss' ``IndexBinaryFlat``: a brute-force scan of packed 256-bit hashes with
hardware popcount, 2.7 ms a query at 2,000,000 hashes on one core here, and no memory
beyond the hashes themselves. ``bench/hashes.py`` compares it with a numpy popcount scan
(17x slower) and a numpy multi-index hash (2x faster, but 68 more bytes a hash and a
slower load); faiss' own ``IndexBinaryMultiHash`` took 40 s and 578 MB to build at
2,000,000 and 24 ms a query. A scan's cost grows with the queries: the 8 orientations of
an upload cost 8 scans (about 22 ms at 2,000,000 listed PDQ hashes), which is why
``dihedral`` can be turned off.
"""

from __future__ import annotations

import faiss
import numpy as np
import pdqhash
from PIL import Image

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


class PdqIndex:
    """Listed PDQ hashes, searched by Hamming distance. Safe to query from several threads."""

    def __init__(self, hashes: bytes | memoryview) -> None:
        self.count = len(hashes) // SIZE
        self._index = faiss.IndexBinaryFlat(8 * SIZE)
        if self.count:
            self._index.add(np.frombuffer(hashes, dtype=np.uint8).reshape(self.count, SIZE))

    def nearest(self, queries: list[bytes], threshold: int) -> tuple[int, int] | None:
        """(position, distance) of the listed hash closest to any of ``queries`` if it is
        within ``threshold``; ties go to the lowest position, so the answer is stable."""
        if not self.count or not queries:
            return None
        # One thread per query: the proxy and the scanner parallelize across uploads and
        # files, and OpenMP threads fighting them for the cores only add latency. The
        # setting belongs to the calling thread, so it is made here, in whichever thread.
        faiss.omp_set_num_threads(1)
        x = np.frombuffer(b"".join(queries), dtype=np.uint8).reshape(len(queries), SIZE)
        _, distances, positions = self._index.range_search(x, threshold + 1)  # radius: <
        if not len(positions):
            return None
        best = np.lexsort((positions, distances))[0]
        return int(positions[best]), int(distances[best])

    def __len__(self) -> int:
        return self.count
