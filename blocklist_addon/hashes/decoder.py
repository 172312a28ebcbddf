"""Untrusted images decoded in worker processes, never in the proxy's own.

Pillow's codecs, libheif and libavif are native code with a long history of memory-safety
bugs; a hostile upload that crashes one must not take the proxy (and every connection it
holds) down with it, nor leave it hung. So the decoding and PDQ hashing of an upload's
frames run in a pool of worker processes (DESIGN "Image hash lists"), each under limits of
its own: an address-space limit (``RLIMIT_AS``: a bomb the size checks missed fails with
MemoryError, not the machine's OOM killer), and a CPU budget per task (``RLIMIT_CPU`` set
to what the worker has used so far plus the budget: a decoder spinning past it is killed by
SIGXCPU). A worker that dies (a crash, a kill, the CPU limit) breaks the pool: that task is
reported unchecked (``decoder-crashed``), the pool is made anew for the next one, and the
count of restarts is kept for the metrics. Workers are also recycled after a number of tasks.

The parent keeps the index and matches what comes back: a worker sees only the upload's
bytes, never the list.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from blocklist_addon.hashes.images import Limits, Uncheckable, frames

__all__ = ["DecoderPool", "FrameHashes", "pdq_frames"]

#: PDQ hashes of one frame (its orientations) and the frame's quality.
FrameHashes = tuple[list[bytes], int]
#: Address space a worker may use (decoded frames are bounded by max_pixels far below it).
MEMORY = 2 << 30
#: Tasks a worker runs before it is replaced (bounds what a leak in a codec can cost).
TASKS_PER_WORKER = 200


def pdq_frames(data: bytes, limits: Limits, dihedral: bool) -> tuple[list[FrameHashes], str | None]:
    """Runs in a worker: the PDQ hashes of the frames of ``data`` and, when not every frame
    could be read, why (an Uncheckable reason)."""
    from blocklist_addon.hashes.pdq import pdq_hashes

    hashed: list[FrameHashes] = []
    try:
        for frame in frames(data, limits):
            hashed.append(pdq_hashes(frame, dihedral=dihedral))
    except Uncheckable as exc:
        return hashed, exc.reason
    except MemoryError:
        return hashed, "too-large"
    return hashed, None


def _start_worker(memory: int) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = memory if hard == resource.RLIM_INFINITY else min(memory, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _run(work: Callable[..., Any], cpu_seconds: float, *args: Any) -> Any:
    """One task under a CPU budget of its own, counted from what the worker used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = usage.ru_utime + usage.ru_stime
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = int(used + cpu_seconds) + 1
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
    return work(*args)


class DecoderPool:
    """Worker processes that run ``work`` (``pdq_frames`` by default) on untrusted bytes."""

    def __init__(
        self,
        workers: int | None = None,
        *,
        memory: int = MEMORY,
        work: Callable[..., Any] = pdq_frames,
    ) -> None:
        self.workers = workers or os.cpu_count() or 1
        self.memory = memory
        self.work = work
        self.restarts = 0  # pools made anew after a worker died
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                # forkserver: workers start from a clean process, not a fork of the proxy
                # with its threads, event loop and open connections.
                self._pool = ProcessPoolExecutor(
                    self.workers,
                    mp_context=multiprocessing.get_context("forkserver"),
                    initializer=_start_worker,
                    initargs=(self.memory,),
                    max_tasks_per_child=TASKS_PER_WORKER,
                )
            return self._pool

    def run(self, *args: Any, cpu_seconds: float, timeout: float) -> Any:
        """``work(*args)`` in a worker, waiting at most ``timeout`` seconds. Raises
        Uncheckable: ``decoder-crashed`` when the worker died (the pool is made anew),
        ``too-slow`` when it did not answer in time."""
        pool = self._executor()
        try:
            future = pool.submit(_run, self.work, cpu_seconds, *args)
            return future.result(timeout)
        except BrokenProcessPool:
            self._replace(pool)
            raise Uncheckable("decoder-crashed") from None
        except TimeoutError:
            raise Uncheckable("too-slow") from None

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is broken:
                self._pool = None
                self.restarts += 1
        broken.shutdown(wait=False, cancel_futures=True)

    def warm(self) -> None:
        """Start the workers now, not on the first upload (a worker takes ~0.5 s to start)."""
        pool = self._executor()
        for future in [pool.submit(os.getpid) for _ in range(self.workers)]:
            future.result(60)

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
