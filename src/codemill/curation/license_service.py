"""One process that holds ScanCode's matcher for every local pool worker.

ScanCode's index costs ~1.4 GB in each process that loads it. The local pool's workers curate
units in parallel, so each would load its own; instead they send the texts the fast path cannot
settle to this one process (a `multiprocessing` manager server, spawned by the driver), which
loads the index on its first text and detects one text at a time.
"""

from __future__ import annotations

import multiprocessing
import os
from multiprocessing.managers import BaseManager

from codemill.curation.license import ScancodeDetector


class _ScancodeManager(BaseManager):
    pass


_ScancodeManager.register("Detector", ScancodeDetector)


class ScancodeService:
    """`with ScancodeService() as service:` hand `service.address` to the workers; each calls
    `connect(address)` for a detector whose `detect_text` runs in the service."""

    def __enter__(self) -> "ScancodeService":
        authkey = os.urandom(16)
        self.manager = _ScancodeManager(address=("127.0.0.1", 0), authkey=authkey,
                                        ctx=multiprocessing.get_context("spawn"))
        self.manager.start()
        self.address = (self.manager.address, authkey)
        return self

    def __exit__(self, *exc) -> None:
        self.manager.shutdown()


def connect(address: tuple) -> ScancodeDetector:
    """A proxy to a detector in the service at `address` (as `ScancodeService.address` gives it)."""
    location, authkey = address
    manager = _ScancodeManager(address=location, authkey=authkey)
    manager.connect()
    return manager.Detector()  # type: ignore[attr-defined]
