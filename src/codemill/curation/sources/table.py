"""Rows of {repo, path, content} in JSONL (optionally .gz/.zst) or Parquet: many repositories per table.

Optional columns: license (SPDX expression, recorded as declared), stars, forks, revision_date,
origin_url. A malformed row becomes a dropped record naming the table and the line; the other
rows are still read.
"""

from __future__ import annotations

import io
import json
from typing import Any, Iterator

from codemill.curation.sources.base import (
    RepoSummary,
    SourceItem,
    SourceSpec,
    TreeCollector,
    decompressing_reader,
    ingest_bytes,
    normalize_member_path,
    repo_key,
    unreadable,
    unsafe_path_reason,
)
from codemill.shards import parquet_file, shard_of
from codemill.storage import location, open_input

TABLE_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".ndjson", ".parquet")


def is_table(path: str) -> bool:
    return path.lower().endswith(TABLE_SUFFIXES)


def _jsonl_rows(uri: str) -> Iterator[tuple[int, dict[str, Any] | str]]:
    raw = open_input(location(uri))
    stream = decompressing_reader(raw, uri) or raw
    with raw:
        for line_number, line in enumerate(io.TextIOWrapper(stream, encoding="utf-8", errors="replace"), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                yield line_number, f"malformed_row:line {line_number}: {err.msg}"
                continue
            yield line_number, row if isinstance(row, dict) else f"malformed_row:line {line_number}: not an object"


def _parquet_rows(uri: str) -> Iterator[tuple[int, dict[str, Any] | str]]:
    parquet = parquet_file(uri)
    line_number = 0
    for batch in parquet.iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            line_number += 1
            yield line_number, row


def read_table(spec: SourceSpec) -> Iterator[SourceItem]:
    """The table's rows, or with the option part=(k, K) only those of the repositories whose name
    hashes to k of K: a large table is curated as K units (each reads the table, and skips the
    other parts' rows before any work), with every repository whole in one of them."""
    rows = _parquet_rows(spec.uri) if spec.uri.endswith(".parquet") else _jsonl_rows(spec.uri)
    part, parts = spec.option("part", (0, 1))
    collectors: dict[str, TreeCollector] = {}
    summaries: dict[str, RepoSummary] = {}
    for line_number, row in rows:
        if isinstance(row, str):
            if parts == 1 or shard_of("<table>", parts) == part:
                yield unreadable(spec, repo_key(spec.uri, "<table>"), "<table>", f"<row {line_number}>", row)
            continue
        repo, path, content = row.get("repo"), row.get("path"), row.get("content")
        if parts > 1 and shard_of(str(repo), parts) != part:
            continue
        if not isinstance(repo, str) or not isinstance(path, str) or not isinstance(content, (str, bytes)):
            missing = [k for k in ("repo", "path", "content") if not isinstance(row.get(k), (str, bytes))]
            yield unreadable(
                spec,
                repo_key(spec.uri, str(repo)),
                str(repo),
                str(path or f"<row {line_number}>"),
                f"malformed_row:line {line_number}: missing or non-text {', '.join(missing)}",
            )
            continue
        key = repo_key(spec.uri, repo)
        if key not in summaries:
            summaries[key] = RepoSummary(
                key,
                repo,
                spec.uri,
                spec.kind,
                origin_url=row.get("origin_url") or repo,
                stars=row.get("stars"),
                forks=row.get("forks"),
                revision_date=str(row["revision_date"]) if row.get("revision_date") else None,
            )
            collectors[key] = TreeCollector()
        reason = unsafe_path_reason(path)
        if reason:
            yield unreadable(spec, key, repo, path, reason)
            continue
        data = content.encode("utf-8", "surrogatepass") if isinstance(content, str) else content
        item = ingest_bytes(spec, key, repo, normalize_member_path(path), data)
        item.declared_license = row.get("license") or None
        yield collectors[key].add(item)
    for key in sorted(summaries):
        yield collectors[key].trees(summaries[key])
