"""A work unit's records, grouped by repository, held in memory up to a byte budget and spilled to
local disk beyond it.

A repository is finalized only once it was read whole (its trees, and so its SWHIDs, qualifiers and
opt-outs, are known at its end), so its records wait somewhere until then. Small repositories wait
in memory; once the budget is spent, further records are pickled to one anonymous temporary file
(unlinked at creation, so a killed run leaves nothing behind) and only their sort key and place in
the file stay in memory (~200 bytes a file). A 10 GB monorepo is therefore finalized from disk,
never refused.
"""

from __future__ import annotations

import os
import pickle
import sys
import tempfile
from dataclasses import dataclass, fields
from typing import IO, Iterator

from codemill.records import FileRecord, rebuild

_NAMES = tuple(f.name for f in fields(FileRecord))
_RECORD_OVERHEAD = 800  # bytes of a FileRecord besides its content (object, dict, short strings)


def record_bytes(record: FileRecord) -> int:
    """What a record costs in memory, roughly: its text plus a fixed overhead."""
    return _RECORD_OVERHEAD + (sys.getsizeof(record.content) if record.content is not None else 0)


@dataclass
class _Group:
    repo: str
    source_uri: str
    entries: list  # (sort key, record or None, offset, length): None when the record is on disk


class RecordStore:
    def __init__(self, budget_bytes: int, spill_dir: str | None = None) -> None:
        self.budget_bytes = budget_bytes
        self.spill_dir = spill_dir
        self.in_memory_bytes = 0
        self.peak_bytes = 0
        self.spilled_records = 0
        self.spilled_bytes = 0
        self.groups: dict[str, _Group] = {}
        self._file: IO[bytes] | None = None

    def declare(self, group: str, repo: str, source_uri: str) -> None:
        """Make sure a group exists, with or without records."""
        self.groups.setdefault(group, _Group(repo, source_uri, []))

    def add(self, group: str, record: FileRecord) -> None:
        entries = self.groups.setdefault(group, _Group(record.repo, record.source_uri, [])).entries
        key = (record.path, record.swhid or "")
        size = record_bytes(record)
        if self.in_memory_bytes + size <= self.budget_bytes:
            self.in_memory_bytes += size
            self.peak_bytes = max(self.peak_bytes, self.in_memory_bytes)
            entries.append((key, record, 0, 0))
            return
        blob = pickle.dumps(tuple([getattr(record, name) for name in _NAMES]), protocol=5)
        spill = self._spill_file()
        offset = spill.seek(0, os.SEEK_END)
        spill.write(blob)
        self.spilled_records += 1
        self.spilled_bytes += len(blob)
        entries.append((key, None, offset, len(blob)))

    def _spill_file(self) -> IO[bytes]:
        if self._file is None:
            try:
                self._file = tempfile.TemporaryFile(prefix="codemill-spill-", dir=self.spill_dir)
            except OSError as err:
                raise OSError(
                    err.errno,
                    f"cannot create a spill file in {self.spill_dir or tempfile.gettempdir()} "
                    f"({err.strerror or err}); give a writable --spill-dir or a larger "
                    "memory budget",
                ) from err
        return self._file

    def ordered_groups(self) -> list[str]:
        """Group keys in output order: by repository name, then source."""
        return sorted(self.groups, key=lambda g: (self.groups[g].repo, self.groups[g].source_uri))

    def pop(self, group: str) -> Iterator[FileRecord]:
        """The group's records sorted by (path, SWHID), ties in arrival order; memory is released
        as they are handed out."""
        found = self.groups.pop(group, None)
        if found is None:
            return
        entries = found.entries
        entries.sort(key=lambda entry: entry[0])
        if self._file is not None:
            self._file.flush()
        for i, (_, record, offset, length) in enumerate(entries):
            entries[i] = None  # the caller holds the record from here
            if record is None:
                values = pickle.loads(os.pread(self._file.fileno(), length, offset))  # type: ignore[union-attr]
                yield rebuild(FileRecord, _NAMES, values)
            else:
                self.in_memory_bytes -= record_bytes(record)
                yield record

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
