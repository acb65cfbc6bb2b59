"""Parquet shards shared by every stage: stable shard assignment, atomic writes, reading back.

Rows go to a shard by a hash of a stable key and are sorted inside it before writing, so a stage's
output is byte-identical whatever the runner, the number of workers or the bundle order.
"""

from __future__ import annotations

import hashlib
import re
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from codemill.errors import MissingInputError
from codemill.storage import StoragePath, location, parquet_source, staged


def shard_of(key: str, num_shards: int) -> int:
    return int.from_bytes(hashlib.sha1(key.encode("utf-8", "surrogateescape")).digest()[:8], "big") % num_shards


# The order of rows inside every shard of every stage output.
ROW_ORDER = ("repo", "source_uri", "path", "swhid")


def row_sort_key(row) -> tuple:
    """`ROW_ORDER` of a record or tree row; a missing SWHID sorts first."""
    return (row.repo, row.source_uri, row.path, getattr(row, "swhid", None) or "")


def shard_name(index: int, num_shards: int) -> str:
    return f"part-{index:05d}-of-{num_shards:05d}.parquet"


_SHARD_NAME = re.compile(r"part-(\d{5})-of-(\d{5})\.parquet$")


def parse_shard_name(path: str) -> tuple[int, int] | None:
    """(index, num_shards) of a path ending in a `shard_name`, else None."""
    found = _SHARD_NAME.search(str(path))
    return (int(found.group(1)), int(found.group(2))) if found else None


ROW_GROUP_BYTES = 8 << 20


def row_group_rows(table: pa.Table, target_bytes: int = ROW_GROUP_BYTES) -> int:
    """Rows per Parquet row group so a group holds about `target_bytes` in memory. A reader
    decompresses a whole group at a time: groups of ~8 MB let a stage stream a 60 MB shard of file
    contents (its first rows arrive after one group, not the whole shard) while tables of small
    rows (manifests, traces) still get large groups."""
    if table.num_rows == 0:
        return 1
    return max(16, min(table.num_rows, int(table.num_rows * target_bytes / max(1, table.nbytes))))


def write_table_atomic(path: StoragePath, table: pa.Table) -> None:
    """Write whole or not at all (storage.staged): a crash never leaves a half-written shard that
    looks complete."""
    with staged(path) as tmp:
        if table.num_rows == 0:
            # No row group at all: pyarrow would write one of 0 rows, which `datasets` refuses
            # ("BatchSize must be greater than 0"); a file with the schema and no row group loads.
            pq.ParquetWriter(tmp, table.schema, compression="zstd", write_statistics=True).close()
            return
        pq.write_table(table, tmp, compression="zstd", write_statistics=True, row_group_size=row_group_rows(table))


def parquet_file(path: str | StoragePath) -> pq.ParquetFile:
    """A Parquet file on any storage, read lazily (row groups on demand)."""
    return pq.ParquetFile(parquet_source(location(path)))


def shard_paths(directory: StoragePath) -> list[StoragePath]:
    return sorted(location(directory).glob("part-*.parquet"))


def read_table(directory: StoragePath, columns: list[str] | None = None) -> pa.Table:
    paths = shard_paths(directory)
    if not paths:
        raise MissingInputError(f"no Parquet shards (part-*.parquet) in {directory}")
    return pa.concat_tables(parquet_file(p).read(columns=columns) for p in paths)


def iter_rows(directory: StoragePath, columns: list[str] | None = None, batch_size: int = 1024) -> Iterator[dict]:
    for path in shard_paths(directory):
        for batch in parquet_file(path).iter_batches(batch_size=batch_size, columns=columns):
            yield from batch.to_pylist()
