"""Matching files against a hash list: exact hashes of the bytes, PDQ of the pixels.

    from blocklist_addon import HashList
    hl = HashList.from_entries([{"id": "42", "md5": "...", "pdq": "..."}])  # or HashList.load()
    hl.match_bytes(upload)  # -> HashMatch(list_name, entry_id, kind, distance) or None

``check(data)`` says more: the match, the image format (or the video container), and why
the pixels could not be checked when they could not (the exact hashes always are). A video
(``video.sniff_video``) is matched by vPDQ against the list's videos when it has some
(``check_video``: decoded in this process; the proxy decodes in its workers,
``guards/images``, and calls ``match_video``). A match never carries the
listed hash or the file's: only the entry's opaque id, the kind of hash that matched and
the Hamming distance (0 for exact hashes).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from blocklist_addon.hashes.decoder import FrameHashes, pdq_frames
from blocklist_addon.hashes.images import Limits, sniff
from blocklist_addon.hashes.kinds import (
    EXACT_KINDS,
    KINDS,
    NAMESPACE,
    SIZES,
    exact_digests,
)
from blocklist_addon.hashes.pdq import DEFAULT_THRESHOLD, MIN_QUALITY, PdqIndex
from blocklist_addon.hashes.records import HashRecord, record_of
from blocklist_addon.hashes.snapshot import HashSnapshot
from blocklist_addon.hashes.video import VideoLimits, hash_video, sniff_video
from blocklist_addon.hashes.vpdq import (
    COMPARED_MATCH_PERCENT,
    QUERY_MATCH_PERCENT,
    VideoIndex,
    snapshot_arrays,
)

__all__ = ["Check", "HashEntry", "HashList", "HashMatch"]

DEFAULT_LIST = "default"


@dataclass(frozen=True, slots=True)
class HashMatch:
    """Why a file is refused: names and numbers only, never a hash."""

    list_name: str
    entry_id: str
    kind: str  # md5, sha1, sha256, pdq or vpdq
    distance: int  # Hamming distance of a PDQ match (a vpdq match's closest frames); 0 exact
    category: str | None = None  # the hotline's category of the entry, when its feed gave one


@dataclass(frozen=True, slots=True)
class Check:
    """The outcome of checking one file."""

    match: HashMatch | None
    image: str | None = None  # the image format its bytes name, None for other files
    unchecked: str | None = None  # why its pixels were not checked (Uncheckable.reason)
    video: str | None = None  # the video container its bytes name (video.sniff_video)


@dataclass(frozen=True, slots=True)
class HashEntry:
    """One list entry as a feed gives it: hex hashes of one image (or video) and an
    optional id; ``vpdq``: a video's frames as a feed's vpdq field holds them."""

    id: str | None = None
    md5: str | None = None
    sha1: str | None = None
    sha256: str | None = None
    pdq: str | None = None
    list_name: str = DEFAULT_LIST
    vpdq: object = None
    category: str | None = None


class _Exact:
    """Sorted fixed-size hashes, found by binary search in place (the snapshot's bytes, which
    may be a file shared by every process: nothing is copied)."""

    def __init__(self, hashes: memoryview, owners: memoryview, size: int) -> None:
        self.data = hashes
        self.sorted = np.frombuffer(hashes, dtype=f"S{size}")
        self.owners = owners
        self.size = size

    def __len__(self) -> int:
        return len(self.owners)

    def find(self, value: bytes) -> int | None:
        if len(value) != self.size:
            return None
        i = int(self.sorted.searchsorted(np.bytes_(value)))
        if i < len(self.owners) and self.data[i * self.size : (i + 1) * self.size] == value:
            return self.owners[i]
        return None


class HashList:
    """A compiled hash list, loaded for matching. Thread-safe: nothing changes after load."""

    def __init__(
        self,
        snapshot: HashSnapshot,
        *,
        threshold: int = DEFAULT_THRESHOLD,
        min_quality: int = MIN_QUALITY,
        dihedral: bool = True,
        limits: Limits | None = None,
        index: PdqIndex | None = None,
        video_arrays: Mapping[str, np.ndarray] | None = None,
        video_limits: VideoLimits | None = None,
        video_query_percent: float = QUERY_MATCH_PERCENT,
        video_compared_percent: float = COMPARED_MATCH_PERCENT,
    ) -> None:
        """``index``: the PDQ index over ``snapshot``'s PDQ section, built earlier (mapped
        from a file: ``hashes.mapped``); built here when not given. ``video_arrays``: the
        listed videos' index the same way (``vpdq.snapshot_arrays``, mapped; empty when
        the list has no video), matched by HMA's rule with the two percentages, frames
        within ``threshold``."""
        if not 0 <= threshold <= 128:
            raise ValueError("threshold must be between 0 and 128 bits (31 is the default)")
        self.threshold = threshold
        self.min_quality = min_quality
        self.dihedral = dihedral
        self.limits = limits or Limits()
        self.checksum = snapshot.checksum
        self.meta = snapshot.meta
        self._exact = {}
        for kind in EXACT_KINDS:
            hashes, owners = snapshot.section(kind)
            if len(owners):
                self._exact[kind] = _Exact(hashes, owners, SIZES[kind])
        hashes, owners = snapshot.section("pdq")
        if index is not None and len(index) != len(owners):
            raise ValueError("the PDQ index does not match the snapshot")
        self._pdq = index if index is not None else PdqIndex(hashes)
        self._pdq_owners = owners
        self._count = len(snapshot)
        self.video_limits = video_limits or VideoLimits()
        if video_arrays is None:
            video_arrays = snapshot_arrays(snapshot.video())
        self._videos = (
            VideoIndex.from_arrays(
                video_arrays,
                distance_threshold=threshold,
                query_match_percent=video_query_percent,
                compared_match_percent=video_compared_percent,
            )
            if video_arrays
            else None
        )
        # Entries are read from the snapshot in place: its bytes are kept anyway (the index
        # compares the listed PDQ hashes where the snapshot holds them).
        self._snapshot = snapshot

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def from_entries(
        cls, entries: Iterable[HashEntry | Mapping[str, object]], **settings: object
    ) -> HashList:
        """Compile entries (HashEntry or mappings with ``id`` and hex ``md5``, ``sha1``,
        ``sha256``, ``pdq``, and ``vpdq`` frames as feeds give them); ValueError names the
        position of a malformed one."""

        def records() -> Iterable[tuple[str, HashRecord]]:
            for number, entry in enumerate(entries, 1):
                if isinstance(entry, HashEntry):
                    fields: Mapping[str, object] = {
                        "id": entry.id,
                        "vpdq": entry.vpdq,
                        "category": entry.category,
                        **{kind: getattr(entry, kind) for kind in KINDS},
                    }
                    name = entry.list_name
                else:
                    fields, name = entry, str(entry.get("list", DEFAULT_LIST))
                record = record_of(fields)
                if record is None:
                    raise ValueError(f"entry {number}: no hash, or a malformed one")
                yield name, record

        return cls(HashSnapshot.build(records()), **settings)  # type: ignore[arg-type]

    @classmethod
    def from_bytes(cls, data: bytes, **settings: object) -> HashList:
        return cls(HashSnapshot.from_bytes(data), **settings)  # type: ignore[arg-type]

    @classmethod
    def mapped(
        cls, snapshot: HashSnapshot, directory: os.PathLike[str] | str, **settings: object
    ) -> tuple[HashList, str | None]:
        """``snapshot`` with its index mapped from a file in ``directory`` that every
        process on the machine shares (``hashes.mapped``: written by the first process to
        load this version), and a note for the log when something went wrong: a file that
        failed its checks (replaced), or a directory that cannot be used (the index is then
        built in this process's memory)."""
        from blocklist_addon.hashes import mapped

        try:
            shared, index, videos, note = mapped.load(snapshot, directory)
        except (OSError, mapped.MappedError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            note = f"cannot share the index in {directory} ({reason}); built in memory"
            return cls(snapshot, **settings), note  # type: ignore[arg-type]
        return cls(shared, index=index, video_arrays=videos, **settings), note  # type: ignore[arg-type]

    @classmethod
    def load(cls, store_url: str | None = None, **settings: object) -> HashList:
        """The active hash list of a store (the data dir's embedded store by default). From
        async code, ``await HashList.aload(store_url)`` instead."""
        return asyncio.run(cls.aload(store_url, **settings))

    @classmethod
    async def aload(cls, store_url: str | None = None, **settings: object) -> HashList:
        from blocklist_addon.lists.store import StoreError, open_store

        store = open_store(store_url, namespace=NAMESPACE)
        try:
            pair = await store.load_active()
        finally:
            await store.close()
        if pair is None:
            raise StoreError(
                f"no hash list is active in {store.url}: run blocklist-sync with a "
                "hashes-jsonl or hashes-csv feed first"
            )
        return cls.from_bytes(pair[1], **settings)

    # -- matching --------------------------------------------------------------------------

    @property
    def kinds(self) -> frozenset[str]:
        """The kinds this list holds hashes of: only those are computed for a file."""
        kinds = set(self._exact)
        if len(self._pdq):
            kinds.add("pdq")
        if self._videos is not None:
            kinds.add("vpdq")
        return frozenset(kinds)

    def match_bytes(self, data: bytes) -> HashMatch | None:
        """The entry ``data`` matches (exactly, or an image by PDQ), or None."""
        return self.check(data).match

    def check(self, data: bytes) -> Check:
        """Exact hashes first (cheap, and they hold for any file); then, for an image, the
        PDQ hashes of its frames; for a video, its vPDQ (``check_video``)."""
        match = self.match_exact_bytes(data)
        if match is not None:
            return Check(match, sniff(data), video=sniff_video(data))
        if (container := sniff_video(data)) is not None:
            return self._check_video(data, container)
        return self.check_pixels(data)

    def check_video(self, data: bytes) -> Check:
        """Exact hashes, then the vPDQ of a video (``video.hash_video`` under
        ``video_limits``, in this process) against the listed videos: a match of kind
        ``vpdq``, or why the video could not be wholly checked (``unchecked``; the frames
        decoded until then are still matched). A list without videos decodes nothing."""
        match = self.match_exact_bytes(data)
        container = sniff_video(data)
        if match is not None or container is None:
            return Check(match, sniff(data), video=container)
        return self._check_video(data, container)

    def _check_video(self, data: bytes, container: str) -> Check:
        if self._videos is None:
            return Check(None, video=container)
        hashed = hash_video(data, self.video_limits)
        match = self.match_video(hashed.frames)
        return Check(match, None, None if match is not None else hashed.unchecked, container)

    def match_exact_bytes(self, data: bytes) -> HashMatch | None:
        """The entry whose exact hash ``data`` has, or None."""
        return self.match_exact(exact_digests(data, self._exact))

    def check_pixels(self, data: bytes) -> Check:
        """The PDQ hashes of an image's frames against the list (no exact hashes), decoded
        in this process (the proxy decodes in worker processes: ``decoder.DecoderPool``)."""
        image = sniff(data)
        if image is None or not len(self._pdq):
            return Check(None, image)
        hashed, reason = pdq_frames(data, self.limits, self.dihedral)
        match = self.match_frames(hashed)
        return Check(match, image, None if match is not None else reason)

    def match_frames(self, hashed: list[FrameHashes]) -> HashMatch | None:
        """The first frame's match among PDQ hashes computed elsewhere (a worker process)."""
        for hashes, quality in hashed:
            if (match := self.match_pdq(hashes, quality)) is not None:
                return match
        return None

    def match_video(self, frames: Iterable[tuple[bytes, int]]) -> HashMatch | None:
        """The listed video a video's (PDQ hash, quality) frames match by HMA's rule (the
        best: the higher shares, then the earlier entry), its distance the closest pair's;
        None when none does (or the list has no videos)."""
        if self._videos is None:
            return None
        found = self._videos.match(frames)
        if found is None:
            return None
        return self._match(int(self._videos.entries[found.video]), "vpdq", found.distance)

    def match_exact(self, digests: Mapping[str, bytes]) -> HashMatch | None:
        for kind, digest in digests.items():
            table = self._exact.get(kind)
            if table is not None and (number := table.find(digest)) is not None:
                return self._match(number, kind, 0)
        return None

    def match_pdq(self, hashes: list[bytes], quality: int) -> HashMatch | None:
        """The closest listed PDQ hash within the threshold of any of ``hashes`` (one
        frame's orientations); a low-quality frame must match exactly."""
        threshold = self.threshold if quality >= self.min_quality else 0
        found = self._pdq.nearest(hashes, threshold)
        if found is None:
            return None
        position, distance = found
        return self._match(self._pdq_owners[position], "pdq", distance)

    def _match(self, number: int, kind: str, distance: int) -> HashMatch:
        name, entry_id = self._snapshot.entry(number)
        return HashMatch(name, entry_id, kind, distance, self._snapshot.category(number))

    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        return f"<HashList entries={self._count} checksum={self.checksum[:16]}>"
