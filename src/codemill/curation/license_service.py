"""One process that loads ScanCode's matcher for every local pool worker, and detects in forks of it.

ScanCode's index costs ~1.1-1.4 GB in each process that loads it. The local pool's workers curate
units in parallel, so each would load its own. Instead they send the texts the fast path cannot
settle to this service (a `multiprocessing` manager server, spawned by the driver). On its first
text it loads the index, then forks as many detector processes as there are pool workers: the
forks share the index's pages copy-on-write. Measured here: three processes that each loaded the
index ~3.2 GB, a loaded process and two forks detecting ~1.4 GB (peak PSS of the tree), with both
forks detecting at full speed. The service also remembers every text it detected, so a text that
two workers meet is detected once.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import multiprocessing.pool
import os
import threading
from multiprocessing.managers import BaseManager

from codemill.curation.license import ScancodeDetector
from codemill.pipelines.pool_worker import exit_with_parent

_CHILD_DETECTOR: ScancodeDetector | None = None


def _detect_in_fork(text: str) -> str | None:
    global _CHILD_DETECTOR
    if _CHILD_DETECTOR is None:
        _CHILD_DETECTOR = ScancodeDetector()
    return _CHILD_DETECTOR.detect_text(text)


class SharedDetector:
    """Lives in the service process; every worker's proxy calls the same forks."""

    _lock = threading.Lock()
    _pool: multiprocessing.pool.Pool | None = None
    _known: dict[bytes, str | None] = {}  # by the text's sha1: a corpus may hold millions of licence texts

    def __init__(self, forks: int) -> None:
        self.forks = forks

    def detect_text(self, text: str) -> str | None:
        cls = SharedDetector
        key = hashlib.sha1(text.encode("utf-8", "surrogateescape")).digest()
        with cls._lock:
            if key in cls._known:
                return cls._known[key]
            if cls._pool is None:
                from licensedcode.cache import get_index

                get_index()  # loaded before forking, so the forks share it
                # Forking here is safe: the other threads of this server wait on the lock held here,
                # and the forks only ever run `_detect_in_fork`.
                cls._pool = multiprocessing.get_context("fork").Pool(self.forks)
        spdx = cls._pool.apply(_detect_in_fork, (text,))
        with cls._lock:
            cls._known[key] = spdx
        return spdx


class _ScancodeManager(BaseManager):
    pass


_ScancodeManager.register("Detector", SharedDetector)


class ScancodeService:
    """`with ScancodeService(forks) as service:` hand `service.address` to the workers; each calls
    `connect(address)` for a detector whose `detect_text` runs in the service's forks."""

    def __init__(self, forks: int) -> None:
        self.forks = max(1, forks)

    def __enter__(self) -> "ScancodeService":
        authkey = os.urandom(16)
        self.manager = _ScancodeManager(
            address=("127.0.0.1", 0), authkey=authkey, ctx=multiprocessing.get_context("spawn")
        )
        self.manager.start(initializer=exit_with_parent, initargs=(os.getpid(),))
        self.address = (self.manager.address, authkey, self.forks)
        return self

    def __exit__(self, *exc) -> None:
        self.manager.shutdown()


def connect(address: tuple) -> SharedDetector:
    """A proxy to the detector of the service at `address` (as `ScancodeService.address` gives it)."""
    location, authkey, forks = address
    manager = _ScancodeManager(address=location, authkey=authkey)
    manager.connect()
    return manager.Detector(forks)  # type: ignore[attr-defined]
