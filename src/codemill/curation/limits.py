"""The caps every source reader applies while reading (a `curate:` setting). Apart from the
readers, so that a config is read without importing them (pyarrow, swh.model)."""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1 << 20


@dataclass(frozen=True)
class IngestLimits:
    """Caps applied while reading; StarCoder2 skipped blobs >= 10 MiB."""

    max_file_bytes: int = 10 * MiB  # files of this size or more are skipped (hashed, not stored)
    max_archive_bytes: int = 4096 * MiB  # total uncompressed bytes read from one archive
    max_compression_ratio: float = 200.0  # zip member uncompressed/compressed above this: a bomb
    max_members: int = 1_000_000  # members per archive
