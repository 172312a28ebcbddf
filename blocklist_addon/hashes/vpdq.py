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

import itertools
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from blocklist_addon.hashes.pdqindex import PdqIndex, layout, radii

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
    matched by HMA's rule. Immutable once built."""

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
        if not 0 <= distance_threshold <= 128:
            raise ValueError("distance_threshold must be between 0 and 128 bits (31 default)")
        if not (0 <= query_match_percent <= 100 and 0 <= compared_match_percent <= 100):
            raise ValueError("match percentages must be between 0 and 100")
        self.distance_threshold = distance_threshold
        self.quality_threshold = quality_threshold
        self.query_match_percent = query_match_percent
        self.compared_match_percent = compared_match_percent
        owners: list[int] = []
        chunks: list[bytes] = []
        counts: list[int] = []
        for number, frames in enumerate(videos):
            kept = prepare(frames, quality_threshold)
            counts.append(len(kept))
            chunks += kept
            owners += [number] * len(kept)
        self.counts = np.array(counts, dtype=np.int64)  # frames of each video, prepared
        self._owners = np.array(owners, dtype=np.int64)
        self._hashes = b"".join(chunks)
        self._rows = np.frombuffer(self._hashes, dtype=np.uint8).reshape(-1, SIZE)
        self.index = PdqIndex(self._hashes, bits=bits)
        arrays = self.index.arrays()
        self._bits = int(arrays["bits"][0])
        self._dirs = arrays["dirs"]
        self._ids = arrays["ids"]
        self._hot = arrays["hot"].astype(np.int64)
        self._layout = np.array(layout(self._bits), dtype=np.int64)
        self._plan = self._probe_plan()

    def __len__(self) -> int:
        return len(self.counts)

    def _probe_plan(self) -> np.ndarray | None:
        """(table, xor mask) pairs to probe at the distance threshold, as the index does
        (pigeonhole over its chunks); None when a scan is cheaper."""
        threshold, bits = self.distance_threshold, self._bits
        chosen = radii(len(self._layout), threshold)
        probes = sum(sum(math.comb(bits, k) for k in range(r + 1)) for r in chosen)
        expected = probes * (1 + self._ids.shape[1] / (1 << bits)) + len(self._hot)
        if expected >= 0.25 * len(self._rows):
            return None
        pairs = []
        for table, radius in enumerate(chosen):
            for k in range(radius + 1):
                for flips in itertools.combinations(range(bits), k):
                    pairs.append((table, sum(1 << i for i in flips)))
        return np.array(pairs, dtype=np.int64).reshape(-1, 2)

    def within(self, query: bytes) -> tuple[np.ndarray, np.ndarray]:
        """Positions of every listed frame within the threshold of ``query`` (sorted) and
        their distances."""
        _, positions, distances = self.pairs([query])
        return positions, distances

    def pairs(self, queries: list[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every (query number, listed position, distance) within the threshold, sorted by
        query then position: the index's candidates of a batch of queries at once, each
        verified by its full distance."""
        joined = np.frombuffer(b"".join(queries), dtype=np.uint8)
        if len(joined) != SIZE * len(queries):
            raise ValueError("PDQ hashes must be 32 bytes each")
        empty = np.zeros(0, dtype=np.int64)
        if not len(self._rows) or not queries:
            return empty, empty, empty
        query_rows = joined.reshape(-1, SIZE)
        # batches bound the candidate pairs held at once (~1M: 32 MB of xor)
        per = len(self._rows) if self._plan is None else len(self._plan) * 4 + len(self._hot)
        batch = max(1, (1 << 20) // max(1, per))
        found = [self._batch(query_rows, start, batch) for start in range(0, len(queries), batch)]
        return tuple(np.concatenate(part) for part in zip(*found, strict=True))  # type: ignore[return-value]

    def _batch(
        self, query_rows: np.ndarray, start: int, batch: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows_q = query_rows[start : start + batch]
        count = len(rows_q)
        if self._plan is None:
            listed = np.tile(np.arange(len(self._rows), dtype=np.int64), count)
            asked = np.repeat(np.arange(count, dtype=np.int64), len(self._rows))
        else:
            words = rows_q.view(">u8").reshape(count, 4)
            tables = self._plan[:, 0]
            word = self._layout[tables, 0]
            shift = self._layout[tables, 1].astype(np.uint64)
            mask = np.uint64((1 << self._bits) - 1)
            values = ((words[:, word] >> shift) & mask).astype(np.int64) ^ self._plan[:, 1]
            all_tables = np.broadcast_to(tables, values.shape).reshape(-1)
            values = values.reshape(-1)
            lo = self._dirs[all_tables, values].astype(np.int64)
            sizes = self._dirs[all_tables, values + 1].astype(np.int64) - lo
            total = int(sizes.sum())
            starts = np.repeat(lo - (np.cumsum(sizes) - sizes), sizes)
            columns = starts + np.arange(total, dtype=np.int64)
            # a frame found in several tables is verified each time: cheaper than making
            # the candidates unique first (few are near)
            probed = self._ids[np.repeat(all_tables, sizes), columns].astype(np.int64)
            owner = np.repeat(np.arange(count, dtype=np.int64), len(tables))
            listed = np.concatenate([probed, np.tile(self._hot, count)])
            asked = np.concatenate(
                [np.repeat(owner, sizes), np.repeat(np.arange(count), len(self._hot))]
            )
        distances = np.bitwise_count(self._rows[listed] ^ rows_q[asked]).sum(axis=1)
        near = distances <= self.distance_threshold
        keys, first = np.unique(asked[near] * len(self._rows) + listed[near], return_index=True)
        return (
            keys // len(self._rows) + start,
            keys % len(self._rows),
            distances[near][first].astype(np.int64),
        )

    def matches(self, frames: Iterable[tuple[bytes, int]]) -> list[VideoMatch]:
        """Every listed video the query's frames match, best first (the higher query share,
        then the higher compared share, then the lower number)."""
        query = prepare(frames, self.quality_threshold)
        if not query or not len(self._rows):
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
