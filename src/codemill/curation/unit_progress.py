"""Files curated so far, across the processes that curate the units, for the main `curate` bar.

A unit runs in a pool process (or on a cluster worker) and may take minutes, so a bar of finished
units stands still while the work goes on. Each unit writes how many files it has read to
`<work>/progress/<unit>.json` every second or so; the driver sums those files into a bar of files
that moves as they are read. Only for a local work folder: on object storage every write would
be a request, and there the bar counts finished units instead."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from codemill.storage import StoragePath, is_remote

PROGRESS_DIR = "progress"
WRITE_EVERY = 1.0  # seconds between a unit's writes


class UnitProgress:
    """A unit's count of files read, written whole (a temporary name, then a rename)."""

    def __init__(self, work_dir: StoragePath | str, unit: str) -> None:
        local = not is_remote(work_dir) and not is_remote(str(work_dir))
        self.path = Path(str(work_dir)) / PROGRESS_DIR / f"{unit}.json" if local else None
        self.files = 0
        self.written_at = 0.0

    def add(self, files: int = 1) -> None:
        self.files += files
        if self.path is not None and time.monotonic() - self.written_at >= WRITE_EVERY:
            self.write()

    def write(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"files": self.files}))
        os.replace(tmp, self.path)
        self.written_at = time.monotonic()


def files_read(work_dir: Path) -> int:
    """The files every unit has reported so far."""
    return _files_read(work_dir)[0]


def _files_read(work_dir: Path) -> tuple[int, int]:
    """(files reported, progress files read)."""
    total = reports = 0
    for path in (work_dir / PROGRESS_DIR).glob("*.json"):
        reports += 1
        try:
            total += int(json.loads(path.read_text())["files"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a unit's file between its writes: counted at the next poll
    return total, reports


class FilesBar:
    """A bar of the files read by every unit, polled from their progress files by a thread."""

    def __init__(self, work_dir: Path, poll: float = 1.0) -> None:
        self.work_dir, self.poll = work_dir, poll
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="codemill-curate-progress", daemon=True)

    def __enter__(self) -> FilesBar:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()

    def _run(self) -> None:
        from codemill.progress import bar

        progress = bar(desc="curate", unit=" files", mininterval=2.0, leave=False)
        try:
            wait = self.poll
            while True:
                finished = self.done.wait(wait)
                files, reports = _files_read(self.work_dir)
                progress.update(files - progress.n)
                if finished:
                    return
                # A corpus of thousands of units: poll less often, so the driver reads ~1,000 small
                # files a second at most, whatever the number of units.
                wait = max(self.poll, reports / 1000)
        finally:
            progress.close()
