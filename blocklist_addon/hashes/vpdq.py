"""vPDQ videos matched as HMA matches them, and the feed's ``vpdq`` field read.

A video is the PDQ hash and quality of its sampled frames (``hashes.video`` makes them
from a file; a feed gives them for a listed video).

- The match (python-threatexchange ``extensions/vpdq``: ``vpdq_util.py``,
  ``vpdq_brute_matcher.match_VPDQ_hash_brute``, ``vpdq_index.VPDQIndex.query``; HMA
  matches videos with that index): both the query's frames and each listed video's are
  filtered by quality (a frame of quality under ``VPDQ_QUALITY_THRESHOLD`` = 50 is left
  out on both sides) and deduplicated (a hash equal to an earlier frame's is dropped:
  ``dedupe`` keeps the first of each distinct hash, consecutive or not). Two frames match
  within ``VPDQ_DISTANCE_THRESHOLD`` = 31 bits, inclusive (the brute matcher's ``<=``; the
  faiss index searches radius threshold + 1, which is the same; the C++ ``matchTwoHash``
  uses ``<`` and is the odd one out). ``query_match_percent`` is the share of the query's
  frames within the threshold of any frame of the listed video, ``compared_match_percent``
  the share of the listed video's frames within it of any query frame; a listed video
  matches when the first is at least ``VPDQ_QUERY_MATCH_THRESHOLD_PERCENT`` (80.0) and the
  second at least ``VPDQ_INDEX_MATCH_THRESHOLD_PERCENT`` (0.0: a clip cut out of a listed
  video matches however short; raise it to refuse only near-whole copies). Both are
  options here with those defaults.

The matcher is exact: every listed frame within the threshold of a query frame is found
through the PDQ index's tables (``pdqindex``: multi-index hashing, then each candidate
verified by its full distance; a scan when probing would not pay), and the two
percentages are counted from those pairs, so the answer is the brute-force rule's
(``tests/test_video.py`` checks it against a transcription of it).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from blocklist_addon.hashes.pdqindex import PdqIndex

__all__ = [
    "COMPARED_MATCH_PERCENT",
    "DISTANCE_THRESHOLD",
    "MAX_FEED_FRAMES",
    "QUALITY_THRESHOLD",
    "QUERY_MATCH_PERCENT",
    "VideoIndex",
    "VideoMatch",
    "parse_vpdq",
    "prepare",
]

#: python-threatexchange's vpdq_util defaults (see the module docstring).
DISTANCE_THRESHOLD = 31
QUALITY_THRESHOLD = 50
QUERY_MATCH_PERCENT = 80.0
COMPARED_MATCH_PERCENT = 0.0
SIZE = 32

#: Most frames one listed video may carry (a day of video at vPDQ's one a second).
MAX_FEED_FRAMES = 86_400
_HEX64 = re.compile(r"[0-9A-Fa-f]{64}")


@dataclass(frozen=True, slots=True)
class VideoMatch:
    """A listed video the query matches: its number in the listing and the two shares."""

    video: int
    query_percent: float  # of the query's frames, within the threshold of the video's
    compared_percent: float  # of the listed video's frames, within it of the query's
    distance: int  # the smallest distance between a matched pair


def parse_vpdq(value: object) -> tuple[tuple[bytes, int], ...] | None:
    """A feed's ``vpdq`` field as (PDQ hash, quality) frames in order, or None when it is
    malformed or empty (the record is then invalid; errors never quote it: hashes are
    confidential). Accepted, as HMA and the vpdq tools write it:

    - a list of HMA's compact features, ``"<64 hex>,<quality>,<timestamp>"`` each
      (``VpdqCompactFeature.__str__``), or of the vpdq CLI's lines
      ``"<frame>,<64 hex>,<quality>,<timestamp>"``;
    - that list as a JSON string (HMA's ``VideoVPDQSignal`` signal string: what a CSV
      column holds), or the older signal string, a JSON object of frame number to
      ``{"hash", "quality", "timestamp"}`` (``OLD_json_to_vpdq``);
    - a list of ``{"hash": hex, "quality": n}`` objects.

    Quality is an integer 0-100; timestamps, when given, are numbers >= 0 that never go
    back (vPDQ's frame order); at most MAX_FEED_FRAMES frames.
    """
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            return None
    if isinstance(value, dict):
        try:
            ordered = sorted(value.items(), key=lambda item: int(item[0]))
        except (TypeError, ValueError):
            return None
        value = [item for _, item in ordered]
    if not isinstance(value, list) or not 0 < len(value) <= MAX_FEED_FRAMES:
        return None
    frames = []
    last = 0.0
    for item in value:
        stamp: object = None
        if isinstance(item, str):
            parts = item.split(",")
            if len(parts) == 4:
                parts = parts[1:]
            if len(parts) != 3:
                return None
            text, quality_text, stamp = parts
            try:
                quality: object = int(quality_text)
                stamp = float(stamp)
            except ValueError:
                return None
        elif isinstance(item, dict):
            text, quality, stamp = item.get("hash"), item.get("quality"), item.get("timestamp")
        else:
            return None
        if not isinstance(text, str) or not _HEX64.fullmatch(text.strip()):
            return None
        if isinstance(quality, bool) or not isinstance(quality, int) or not 0 <= quality <= 100:
            return None
        if stamp is not None:
            if isinstance(stamp, bool) or not isinstance(stamp, int | float):
                return None
            if not (math.isfinite(stamp) and stamp >= last):
                return None
            last = float(stamp)
        frames.append((bytes.fromhex(text.strip()), quality))
    return tuple(frames)


# -- matching ------------------------------------------------------------------------------


def prepare(
    frames: Iterable[tuple[bytes, int]], quality_threshold: int = QUALITY_THRESHOLD
) -> list[bytes]:
    """HMA's ``prepare_vpdq_feature``: the hashes of frames of at least that quality, each
    distinct hash once, in order of first appearance."""
    seen: set[bytes] = set()
    kept = []
    for value, quality in frames:
        if len(value) != SIZE:
            raise ValueError("PDQ hashes must be 32 bytes each")
        if quality >= quality_threshold and value not in seen:
            seen.add(value)
            kept.append(value)
    return kept


class VideoIndex:
    """Listed videos (each a sequence of (PDQ hash, quality) frames, as vPDQ gives them),
    matched by HMA's rule. Immutable once built.

    What it holds is a set of arrays (``arrays()``): every listed video's prepared frames
    (quality at least the threshold, each distinct hash once a video) sorted by hash, the
    video each belongs to, each video's count of them and its entry in the snapshot, and
    a PDQ index over the frames. ``hashes.mapped`` writes them into the machine's shared
    index file, so that every process maps one copy (``from_arrays``)."""

    def __init__(
        self,
        videos: Iterable[Iterable[tuple[bytes, int]]],
        *,
        distance_threshold: int = DISTANCE_THRESHOLD,
        quality_threshold: int = QUALITY_THRESHOLD,
        query_match_percent: float = QUERY_MATCH_PERCENT,
        compared_match_percent: float = COMPARED_MATCH_PERCENT,
        bits: int | None = None,
    ) -> None:
        """``bits``: the index's chunk size, chosen from the number of frames unless given
        (tests, to reach both the probing and the scanning path)."""
        frames: list[bytes] = []
        qualities: list[int] = []
        numbers: list[int] = []
        count = 0
        for number, video in enumerate(videos):
            count = number + 1
            for value, quality in video:
                if len(value) != SIZE:
                    raise ValueError("PDQ hashes must be 32 bytes each")
                frames.append(value)
                qualities.append(quality)
                numbers.append(number)
        arrays = build_arrays(
            b"".join(frames),
            np.array(qualities, dtype=np.uint8),
            np.array(numbers, dtype=np.int64),
            np.arange(count, dtype=np.uint32),
            quality_threshold=quality_threshold,
            bits=bits,
        )
        self._attach(
            arrays,
            distance_threshold=distance_threshold,
            query_match_percent=query_match_percent,
            compared_match_percent=compared_match_percent,
        )

    @classmethod
    def from_arrays(
        cls,
        arrays: Mapping[str, np.ndarray],
        *,
        distance_threshold: int = DISTANCE_THRESHOLD,
        query_match_percent: float = QUERY_MATCH_PERCENT,
        compared_match_percent: float = COMPARED_MATCH_PERCENT,
    ) -> VideoIndex:
        """An index over arrays built earlier (``build_arrays``, ``arrays()``), e.g. mapped
        from the shared file; the match settings are this process's."""
        index = object.__new__(cls)
        index._attach(
            arrays,
            distance_threshold=distance_threshold,
            query_match_percent=query_match_percent,
            compared_match_percent=compared_match_percent,
        )
        return index

    def _attach(
        self,
        arrays: Mapping[str, np.ndarray],
        *,
        distance_threshold: int,
        query_match_percent: float,
        compared_match_percent: float,
    ) -> None:
        if not 0 <= distance_threshold <= 128:
            raise ValueError("distance_threshold must be between 0 and 128 bits (31 default)")
        if not (0 <= query_match_percent <= 100 and 0 <= compared_match_percent <= 100):
            raise ValueError("match percentages must be between 0 and 100")
        self.distance_threshold = distance_threshold
        self.query_match_percent = query_match_percent
        self.compared_match_percent = compared_match_percent
        self._settings = arrays["settings"]
        if self._settings.shape != (1,):
            raise ValueError("video index: bad settings")
        self.quality_threshold = int(self._settings[0])
        self.counts = arrays["counts"]  # frames of each video, prepared
        self.entries = arrays["entries"]  # each video's entry number in its snapshot
        self._owners = arrays["owners"]
        hashes = arrays["hashes"]
        if (
            len(self.entries) != len(self.counts)
            or len(hashes) != SIZE * len(self._owners)
            or int(self.counts.sum(dtype=np.int64)) != len(self._owners)
            or (len(self._owners) and int(self._owners.max()) >= len(self.counts))
        ):
            raise ValueError("video index: arrays do not agree")
        self.index = PdqIndex.from_arrays(
            hashes, {name: arrays[f"index_{name}"] for name in INDEX_ARRAYS}
        )

    def arrays(self) -> dict[str, np.ndarray]:
        """What ``from_arrays`` reads back."""
        return {
            "settings": self._settings,
            "hashes": self.index._hashes,
            "owners": self._owners,
            "counts": self.counts,
            "entries": self.entries,
            **{f"index_{name}": array for name, array in self.index.arrays().items()},
        }

    def __len__(self) -> int:
        return len(self.counts)

    def within(self, query: bytes) -> tuple[np.ndarray, np.ndarray]:
        """Positions of every listed frame within the threshold of ``query`` (sorted) and
        their distances."""
        _, positions, distances = self.pairs([query])
        return positions, distances

    def pairs(self, queries: list[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every (query number, listed position, distance) within the threshold, sorted by
        query then position: the index's range search, each candidate verified by its full
        distance."""
        return self.index.within(queries, self.distance_threshold)

    def matches(self, frames: Iterable[tuple[bytes, int]]) -> list[VideoMatch]:
        """Every listed video the query's frames match, best first (the higher query share,
        then the higher compared share, then the lower number)."""
        query = prepare(frames, self.quality_threshold)
        if not query or not len(self._owners):
            return []
        asked, positions, distances = self.pairs(query)
        videos = self._owners[positions]
        found = []
        for video in np.unique(videos).tolist():
            mine = videos == video
            query_percent = len(np.unique(asked[mine])) * 100 / len(query)
            compared_percent = len(np.unique(positions[mine])) * 100 / int(self.counts[video])
            if (
                query_percent >= self.query_match_percent
                and compared_percent >= self.compared_match_percent
            ):
                distance = int(distances[mine].min())
                found.append(VideoMatch(video, query_percent, compared_percent, distance))
        found.sort(key=lambda m: (-m.query_percent, -m.compared_percent, m.video))
        return found

    def match(self, frames: Iterable[tuple[bytes, int]]) -> VideoMatch | None:
        """The best listed video the query's frames match, or None."""
        found = self.matches(frames)
        return found[0] if found else None


#: The PDQ index's arrays, kept as ``index_<name>`` among a video index's.
INDEX_ARRAYS = ("params", "meta", "blob", "hot", "hot_hashes")


def build_arrays(
    frames: bytes | memoryview,
    qualities: np.ndarray,
    numbers: np.ndarray,
    entries: np.ndarray,
    *,
    quality_threshold: int = QUALITY_THRESHOLD,
    bits: int | None = None,
) -> dict[str, np.ndarray]:
    """A video index's arrays from listed frames end to end: 32-byte hashes, their
    qualities and video numbers (never decreasing, below ``len(entries)``), and each
    video's entry number. HMA's preparation, vectorized: frames under
    ``quality_threshold`` are left out and a hash repeated within a video counted once;
    the frames are then sorted by hash (the PDQ index reads the sorted order as a table)."""
    rows = np.frombuffer(frames, dtype=np.uint8).reshape(-1, SIZE)
    numbers = np.asarray(numbers, dtype=np.int64)
    if len(qualities) != len(rows) or len(numbers) != len(rows):
        raise ValueError("frames, qualities and video numbers do not agree")
    if len(numbers) and (bool((numbers[1:] < numbers[:-1]).any()) or numbers[-1] >= len(entries)):
        raise ValueError("frames must be grouped by video, in order")
    keep = np.asarray(qualities) >= quality_threshold
    rows, numbers = rows[keep], numbers[keep]
    words = rows.view(">u8").reshape(-1, 4).astype(np.uint64)
    order = np.lexsort((numbers, words[:, 3], words[:, 2], words[:, 1], words[:, 0]))
    rows, numbers, words = rows[order], numbers[order], words[order]
    distinct = np.ones(len(rows), dtype=bool)
    distinct[1:] = (numbers[1:] != numbers[:-1]) | (words[1:] != words[:-1]).any(axis=1)
    rows, numbers = rows[distinct], numbers[distinct]
    hashes = np.ascontiguousarray(rows).reshape(-1)
    index = PdqIndex(hashes, bits=bits)
    return {
        "settings": np.array([quality_threshold], dtype=np.uint32),
        "hashes": hashes,
        "owners": numbers.astype(np.uint32),
        "counts": np.bincount(numbers, minlength=len(entries)).astype(np.uint32),
        "entries": np.asarray(entries, dtype=np.uint32),
        **{f"index_{name}": array for name, array in index.arrays().items()},
    }


def snapshot_arrays(
    video: tuple[memoryview, memoryview, np.ndarray] | None,
) -> dict[str, np.ndarray] | None:
    """The video index's arrays of a snapshot's vpdq sections (``HashSnapshot.video()``:
    frames, qualities, each frame's entry), the entries numbered as videos in their
    order; None when it has no video."""
    if video is None or not len(video[2]):
        return None
    frames, qualities, owners = video
    entries, numbers = np.unique(np.asarray(owners), return_inverse=True)
    return build_arrays(
        frames, np.frombuffer(qualities, dtype=np.uint8), numbers, entries.astype(np.uint32)
    )
