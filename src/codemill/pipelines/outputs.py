"""Stage outputs shared by every stage: sorted Parquet shards per table, the stats file, the
finished marker, and the check that refuses to mark an incomplete output finished.

Every output table is written as a fixed number of shards, rows assigned by a hash of their
repository and sorted by repository inside a shard, so the output is byte-identical on any runner
with any number of workers, and a repository's files sit together in one shard: the tokenize stage
reads such an input shard by shard, a repository at a time, without a shuffle (`SHARD_LAYOUT`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import apache_beam as beam

from codemill.errors import CodemillError, UserError
from codemill.jsonl import read_json, write_json
from codemill.records import (
    FILE_RECORD_SCHEMA,
    MANIFEST_SCHEMA,
    records_to_table,
)
from codemill.shards import ROW_ORDER, parquet_file, row_sort_key, shard_name, shard_of, write_table_atomic
from codemill.storage import StoragePath, location, rmtree

OUTPUT_TABLES = ("data", "dropped", "manifest", "trees")
SUCCESS_MARKER = "_SUCCESS.json"


# What a stage's finished marker says about its shards; `repo_layout_shards` reads it back.
SHARD_LAYOUT = {"shard_key": "repo", "order": list(ROW_ORDER)}


# (table, schema, which rows): the record tables written from one grouping of the records.
RECORD_TABLES = (
    ("data", FILE_RECORD_SCHEMA, "kept"),
    ("dropped", FILE_RECORD_SCHEMA, "dropped"),
    ("manifest", MANIFEST_SCHEMA, "all"),
)


def _selected(rows: list, which: str) -> list:
    if which == "kept":
        return [r for r in rows if r.kept]
    if which == "dropped":
        return [r for r in rows if not r.kept]
    return rows


@dataclass(frozen=True)
class ShardWriter:
    """Writes one shard of each table from the rows grouped under that shard's index."""

    out_dir: str
    tables: tuple
    num_shards: int

    def __call__(self, keyed: tuple[int, Iterable]) -> list[str]:
        index, rows = keyed
        rows = sorted((row for row in rows if row is not None), key=row_sort_key)
        written = []
        for table, schema, which in self.tables:
            path = location(self.out_dir) / table / shard_name(index, self.num_shards)
            write_table_atomic(path, records_to_table(_selected(rows, which), schema))
            written.append(str(path))
        return written


class WriteShards(beam.PTransform):
    """Write a PCollection as exactly `num_shards` sorted Parquet shards per table (empty ones
    included), grouping the rows once for all the tables written from them."""

    def __init__(self, out_dir: str, tables: tuple, num_shards: int) -> None:
        super().__init__()
        self.writer = ShardWriter(out_dir, tables, num_shards)

    def expand(self, pcoll):
        n = self.writer.num_shards
        name = self.writer.tables[0][0]

        def key_of(row) -> tuple[int, object]:
            return shard_of(row.repo, n), row

        keyed = pcoll | f"Key{name}" >> beam.Map(key_of)
        empty = pcoll.pipeline | f"Empty{name}" >> beam.Create([(i, None) for i in range(n)])
        return (
            (keyed, empty)
            | f"Flatten{name}" >> beam.Flatten()
            | f"Group{name}" >> beam.GroupByKey()
            | f"Write{name}" >> beam.Map(self.writer)
        )


class InputLayoutError(UserError):
    """An input shard that does not hold what its stage's marker promised (names the shard)."""


class IncompleteOutputError(CodemillError, RuntimeError):
    """The runner reported success but the stage's output is not all there."""


def check_outputs(out_dir: StoragePath, num_shards: int) -> dict:
    """Refuse to mark the stage finished unless every shard was written and the manifest holds
    one row per counted input file. (Seen: Beam's DaskRunner returns successfully without
    running steps whose outputs nothing consumes, such as our shard writers.)"""
    missing = [
        f"{table}/{shard_name(i, num_shards)}"
        for table in OUTPUT_TABLES
        for i in range(num_shards)
        if not (out_dir / table / shard_name(i, num_shards)).exists()
    ]
    stats_path = out_dir / "stats.json"
    if missing or not stats_path.exists():
        what = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        raise IncompleteOutputError(
            f"the pipeline finished but its output under {out_dir} is incomplete (missing: {what or 'stats.json'}); "
            "the runner skipped the write steps. "
            "Use the default local runner or a portable runner (Flink, Spark, Dataflow)."
        )
    stats = read_json(stats_path)
    rows = sum(
        parquet_file(out_dir / "manifest" / shard_name(i, num_shards)).metadata.num_rows for i in range(num_shards)
    )
    expected = stats.get("totals", {}).get("files", 0)
    if rows != expected:
        raise IncompleteOutputError(f"manifest under {out_dir} holds {rows} rows but {expected} files were curated")
    return stats


def write_success(out_dir: StoragePath, stage: str, seconds: float, num_shards: int, **details) -> None:
    """The finished marker, written last; it records the shard layout for the next stage."""
    write_json(
        location(out_dir) / SUCCESS_MARKER,
        {"stage": stage, "seconds": round(seconds, 2), **details, "layout": dict(SHARD_LAYOUT, num_shards=num_shards)},
    )


def repo_layout_shards(stage_dir: StoragePath) -> int | None:
    """The number of data shards when a finished stage output declares `SHARD_LAYOUT` (placed and
    sorted by repository), else None (an output of an older codemill: read it with a shuffle)."""
    marker = location(stage_dir) / SUCCESS_MARKER
    try:
        layout = read_json(marker).get("layout") or {}
    except (OSError, ValueError):
        return None
    if {k: layout.get(k) for k in SHARD_LAYOUT} != SHARD_LAYOUT or not isinstance(layout.get("num_shards"), int):
        return None
    return layout["num_shards"]


def clear_outputs(out_dir: StoragePath) -> None:
    """A previous run's output must not mix with this one's; the finished marker goes first."""
    (out_dir / SUCCESS_MARKER).unlink(missing_ok=True)
    for name in OUTPUT_TABLES:
        rmtree(out_dir / name)
    for name in ("stats.json", "dedup.json"):
        (out_dir / name).unlink(missing_ok=True)
