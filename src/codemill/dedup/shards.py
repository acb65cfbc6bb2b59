"""Dedup's work on the input's shards (plain Python: it runs in local pool workers too).

The dedup stage never moves file contents through a shuffle: a shard is read where it lies three
times, each time for what the next step needs:

  scan_shard     kept records -> small entries (key, SWHID, survivor rank, shard) and, for near
                 dedup, MinHash signatures (one per distinct text of the shard)
  fetch_texts    only the texts of contents that are in a candidate pair (for verification)
  rewrite_shard  the shard with the cluster decisions applied, written to the same index of the
                 output (a shard is sized to fit in memory, see curation/plan.py)

`codemill dedup` keeps each shard's decisions in a file between the two (save_decisions), so a
run killed while it rewrites redoes only the shards it had not finished (resume_shard).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterator

import pyarrow as pa

from codemill.curation.stats import StatsAccumulator
from codemill.dedup.minhash import MinHashParams, sketch_batch
from codemill.dedup.ranking import Decision, DedupEntry
from codemill.jsonl import write_json
from codemill.records import FILE_RECORD_SCHEMA, MANIFEST_SCHEMA, FileRecord, records_from_table, records_to_table
from codemill.shards import parquet_file, row_sort_key, shard_name, write_table_atomic
from codemill.storage import StoragePath, location

READ_ROWS = 512  # rows per Arrow batch read: a few MB of content at a time


@dataclass(frozen=True)
class InputShard:
    index: int
    num_shards: int
    data: str  # path of the kept records' shard
    dropped: str  # path of the dropped records' shard


def participates(record: FileRecord) -> bool:
    """Only kept records with content take part; dropped ones pass through unchanged."""
    return record.kept and record.swhid is not None and record.content is not None


def _kept_records(shard: InputShard, columns: list[str] | None = None) -> Iterator[FileRecord]:
    for batch in parquet_file(shard.data).iter_batches(batch_size=READ_ROWS, columns=columns):
        yield from records_from_table(batch)


def scan_shard(shard: InputShard, params: MinHashParams | None, batch_size: int = 64) -> list[tuple]:
    """('entry', (SWHID, DedupEntry)) for every participating record, and with `params`
    ('sketch', (SWHID, signature or None)) once per distinct SWHID of the shard."""
    out: list[tuple] = []
    pending: list[tuple[str, str]] = []
    sketched: set[str] = set()
    for record in _kept_records(shard):
        if not participates(record):
            continue
        out.append(("entry", (record.swhid, DedupEntry.of(record, shard.index))))
        if params is not None and record.swhid not in sketched:
            sketched.add(record.swhid)  # type: ignore[arg-type]
            pending.append((record.swhid, record.content))  # type: ignore[arg-type]
            if len(pending) >= batch_size:
                out.extend(("sketch", s) for s in sketch_batch(pending, params))
                pending = []
    if pending:
        out.extend(("sketch", s) for s in sketch_batch(pending, params))  # type: ignore[arg-type]
    return out


def fetch_texts(shard: InputShard, wanted: set[str]) -> Iterator[tuple[str, str]]:
    """(SWHID, text) of the shard's kept contents that are in `wanted`, each once."""
    seen: set[str] = set()
    for batch in parquet_file(shard.data).iter_batches(batch_size=READ_ROWS, columns=["swhid", "content", "kept"]):
        columns = batch.to_pydict()
        for swhid, content, kept in zip(columns["swhid"], columns["content"], columns["kept"], strict=False):
            if kept and content is not None and swhid in wanted and swhid not in seen:
                seen.add(swhid)
                yield swhid, content


def rewrite_shard(shard: InputShard, decisions: dict[str, Decision], out_dir: str) -> StatsAccumulator:
    """Apply the decisions (by record key) to the shard's records and write the output shard of
    the same index: data (kept), dropped and manifest, sorted as the input was. Returns its stats."""
    from codemill.records import record_key

    records = list(_kept_records(shard))
    records += records_from_table(parquet_file(shard.dropped).read())
    updated = []
    for record in records:
        decision = decisions.get(record_key(record)) if participates(record) else None
        if decision is not None:
            record = replace(record, dup_cluster=decision.cluster)
            if decision.drop_reason is not None:
                record = record.drop(decision.drop_reason)
        updated.append(record)
    updated.sort(key=row_sort_key)
    name = shard_name(shard.index, shard.num_shards)
    for table, schema, rows in (
        ("data", FILE_RECORD_SCHEMA, [r for r in updated if r.kept]),
        ("dropped", FILE_RECORD_SCHEMA, [r for r in updated if not r.kept]),
        ("manifest", MANIFEST_SCHEMA, updated),
    ):
        write_table_atomic(location(out_dir) / table / name, records_to_table(rows, schema))
    stats = StatsAccumulator()
    for record in updated:
        stats.add(record)
    return stats


_DECISIONS = pa.schema([("key", pa.string()), ("cluster", pa.string()), ("drop_reason", pa.string())])


def save_decisions(index: int, decisions: list[tuple[str, Decision]], directory: str) -> int:
    """One shard's decisions, by record key, to `directory/<index>.parquet` (atomically)."""
    decisions = sorted(decisions, key=lambda pair: pair[0])
    table = pa.table(
        {
            "key": [k for k, _ in decisions],
            "cluster": [d.cluster for _, d in decisions],
            "drop_reason": [d.drop_reason for _, d in decisions],
        },
        schema=_DECISIONS,
    )
    write_table_atomic(location(directory) / f"{index:05d}.parquet", table)
    return index


def load_decisions(index: int, directory: str) -> dict[str, Decision]:
    columns = parquet_file(location(directory) / f"{index:05d}.parquet").read().to_pydict()
    return {
        key: Decision(cluster, reason)
        for key, cluster, reason in zip(columns["key"], columns["cluster"], columns["drop_reason"], strict=False)
    }


def shard_done(work_dir: str, index: int) -> StoragePath:
    return location(work_dir) / "shards" / f"{index:05d}.json"


def resume_shard(shard: InputShard, work_dir: str, out_dir: str) -> int:
    """Rewrite a shard from its saved decisions, unless an earlier run of the same plan did; its
    statistics go to its marker, written last."""
    marker = shard_done(work_dir, shard.index)
    if not marker.exists():
        stats = rewrite_shard(shard, load_decisions(shard.index, str(location(work_dir) / "decisions")), out_dir)
        write_json(marker, stats.to_json())
    return shard.index
