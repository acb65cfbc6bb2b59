"""Dataset publication: the kept records of a curation (or dedup) output as a Hugging Face dataset
folder, with its provenance manifest beside it.

    DIR/dataset/data/train-00000-of-0000N.parquet   the records (content, SWHIDs, licence, language, ...)
    DIR/dataset/README.md                           the dataset card (YAML header + the numbers)
    DIR/dataset/manifest/part-*.parquet             every input file with its SWHID and verdict
    DIR/dataset/stats.json, dedup.json              the curation's own counts

`datasets.load_dataset("parquet", data_dir="DIR/dataset/data")` (or `load_dataset("DIR/dataset")`,
which reads the card's `configs:`) loads it. Rows are written in the curation's shard order, so the
folder is byte-identical for an identical curation output.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from codemill.errors import UserError
from codemill.jsonl import read_json
from codemill.pipelines.reports import CurationStats, DedupReport
from codemill.pipelines.run_config import PublishConfig
from codemill.shards import ROW_GROUP_BYTES, parquet_file, shard_paths
from codemill.storage import StoragePath, copy_file, copy_tree, resolved, rmtree, staged

# The columns a dataset user needs; the curation's internal ones (filters fired, stored hashes) stay
# in the curation output.
COLUMNS = (
    "content",
    "repo",
    "path",
    "language",
    "language_type",
    "license_spdx",
    "license_type",
    "license_source",
    "swhid",
    "qualified_swhid",
    "origin_url",
    "origin_swhid",
    "size_bytes",
    "is_vendor",
    "is_generated",
    "pii_types",
    "pii_count",
    "dup_cluster",
)


class PublishError(UserError):
    """Nothing to publish, or an input that is not a finished curation output."""


@dataclass
class Published:
    dataset_dir: StoragePath
    rows: int
    shards: int
    languages: Counter
    licenses: Counter
    license_types: Counter


def _selected(table, config: PublishConfig):
    return table.filter(pc.equal(table["license_type"], "permissive")) if config.permissive_only else table


def _batches(paths: list[StoragePath], config: PublishConfig) -> Iterator[pa.RecordBatch]:
    for path in paths:
        for batch in parquet_file(path).iter_batches(batch_size=1024, columns=list(COLUMNS)):
            batch = _selected(batch, config)
            if batch.num_rows:
                yield batch


def _write_parts(
    folder: StoragePath, batches: Iterator[pa.RecordBatch], schema: pa.Schema, rows_per_part: int, count: int
) -> None:
    """Rows streamed into `count` parts of `rows_per_part` rows, in row groups of ~8 MB; each part
    appears whole when it is finished."""
    pending: list[pa.RecordBatch] = []
    pending_bytes = part_rows = index = 0
    with contextlib.ExitStack() as part:
        writer = None

        def flush() -> None:
            nonlocal pending, pending_bytes
            if pending:
                assert writer is not None  # opened by the loop before it adds a batch
                writer.write_table(pa.Table.from_batches(pending, schema))
            pending, pending_bytes = [], 0

        for batch in batches:
            while batch.num_rows:
                if writer is None:
                    local = part.enter_context(staged(folder / f"train-{index:05d}-of-{count:05d}.parquet"))
                    writer = pq.ParquetWriter(local, schema, compression="zstd", write_statistics=True)
                take = batch.slice(0, rows_per_part - part_rows)
                batch = batch.slice(take.num_rows)
                pending.append(take)
                pending_bytes += take.nbytes
                part_rows += take.num_rows
                if pending_bytes >= ROW_GROUP_BYTES:
                    flush()
                if part_rows == rows_per_part:
                    flush()
                    writer.close()
                    part.close()  # publishes the part
                    writer, part_rows, index = None, 0, index + 1
        if writer is not None:
            flush()
            writer.close()


def publish_dataset(
    curated: StoragePath | str, out_dir: StoragePath | str, config: PublishConfig = PublishConfig()
) -> Published:
    """Streams: the counts come from three small columns first (so each part's name can say how
    many parts there are), then the rows flow into the parts a batch at a time."""
    curated, out_dir = resolved(curated), resolved(out_dir)
    if not (curated / "_SUCCESS.json").exists():
        raise PublishError(f"{curated} is not a finished curation output (no _SUCCESS.json)")
    dataset = out_dir / "dataset"
    rmtree(dataset)
    paths = shard_paths(curated / "data")
    languages: Counter = Counter()
    licenses: Counter = Counter()
    license_types: Counter = Counter()
    for path in paths:
        counted = _selected(parquet_file(path).read(columns=["language", "license_spdx", "license_type"]), config)
        languages.update(counted["language"].to_pylist())
        licenses.update(counted["license_spdx"].to_pylist())
        license_types.update(counted["license_type"].to_pylist())
    rows = sum(license_types.values())
    if not rows:
        raise PublishError(
            f"no records to publish from {curated / 'data'}"
            + (" (publish.permissive_only: no permissive records)" if config.permissive_only else "")
        )
    count = max(1, -(-rows // config.rows_per_shard))
    schema = pa.schema([parquet_file(paths[0]).schema_arrow.field(name) for name in COLUMNS])
    _write_parts(dataset / "data", _batches(paths, config), schema, config.rows_per_shard, count)
    copy_tree(curated / "manifest", dataset / "manifest")
    for name in ("stats.json", "dedup.json"):
        if (curated / name).exists():
            copy_file(curated / name, dataset / name)
    stats = CurationStats.from_json(read_json(curated / "stats.json"))
    dedup = DedupReport.read(curated)
    (dataset / "README.md").write_text(_card(config, rows, count, languages, licenses, license_types, stats, dedup))
    return Published(dataset, rows, count, languages, licenses, license_types)


def _rows(counter: Counter, total: int, limit: int = 25) -> str:
    lines = ["| value | files | share |", "|---|---|---|"]
    for value, n in counter.most_common(limit):
        lines.append(f"| {value if value is not None else '(none)'} | {n:,} | {n / max(1, total):.1%} |")
    if len(counter) > limit:
        rest = sum(n for _, n in counter.most_common()[limit:])
        lines.append(f"| ({len(counter) - limit} more) | {rest:,} | {rest / max(1, total):.1%} |")
    return "\n".join(lines)


_PROVENANCE = """## Provenance: verify the SWHID manifest

`manifest/` lists every input file, kept or not, with its SWHID and the verdict. Recompute the
SWHIDs from the original sources:

```
codemill manifest verify CURATION_OUTPUT_DIR
```

or for one file, `git hash-object FILE` equals the hex digest of its `swh:1:cnt:` SWHID (Software
Heritage content identifiers are git blob hashes). The `content` column holds the text as stored
(after PII redaction): `git hash-object` of it, written as UTF-8, equals the manifest's
`stored_sha1_git` for that file.
"""


def _spdx_ids(licenses: Counter) -> list[str]:
    """The licence ids named in the SPDX expressions (AND, OR, WITH and brackets taken apart)."""
    ids: set[str] = set()
    for value in licenses:
        text = (value or "").replace("(", " ").replace(")", " ")
        for operator in (" AND ", " OR ", " WITH "):
            text = text.replace(operator, "|")
        ids.update(part.strip() for part in text.split("|") if part.strip())
    return sorted(ids)


def _dedup_text(dedup: DedupReport | None) -> str:
    if not dedup:
        return "No deduplication was applied."
    d_totals, d_config = dedup.totals, dedup.config
    return (
        f"{d_config.get('mode', '?')} dedup (MinHash {d_config.get('num_perm', '?')} permutations, "
        f"{d_config.get('ngram', '?')}-gram shingles, Jaccard >= {d_config.get('threshold', '?')}): "
        f"{d_totals.removed_exact:,} exact and {d_totals.removed_near:,} near "
        f"duplicates removed ({d_totals.removed_bytes / 1e6:.1f} MB)."
    )


def _card_header(config: PublishConfig, spdx_ids: list[str]) -> str:
    import yaml

    header = {
        "pretty_name": config.name,
        "license": "other",
        "license_details": "Each row carries the licence of its file (license_spdx, license_type); see below.",
        "tags": ["code", "software-heritage", "swhid", "codemill"] + [f"spdx:{s}" for s in spdx_ids[:50]],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "data/*.parquet"}]}],
    }
    return f"---\n{yaml.safe_dump(header, sort_keys=False).strip()}\n---"


def _card(
    config: PublishConfig,
    rows: int,
    shards: int,
    languages: Counter,
    licenses: Counter,
    license_types: Counter,
    stats: CurationStats,
    dedup: DedupReport | None,
) -> str:
    """The dataset card (README.md): Hugging Face's YAML header, then the curation in prose and tables."""
    totals = stats.totals
    drops = stats.drop_reasons
    drop_lines = "\n".join(f"| {reason} | {n:,} |" for reason, n in sorted(drops.items(), key=lambda kv: -kv[1]))
    return f"""{_card_header(config, _spdx_ids(licenses))}

# {config.name}

Source code curated by codemill from {"?" if stats.sources is None else stats.sources} repositories:
{rows:,} files in {shards} Parquet shard(s){" (permissive licences only)" if config.permissive_only else ""}.
Every row names its file's Software Heritage ID (`swhid`, the `swh:1:cnt` of the original bytes),
a qualified SWHID with origin and path (`qualified_swhid`), its repository, language and licence.

```python
from datasets import load_dataset
ds = load_dataset("parquet", data_dir="data", split="train")
```

## Licences

Licences were detected from licence files with ScanCode (files inherit the licences found on their
path) or taken from declared package metadata; `license_source` says which decided. Types:

{_rows(license_types, rows)}

SPDX expressions:

{_rows(licenses, rows)}

## Languages

{_rows(languages, rows)}

## Filtering and deduplication

{totals.files:,} files ({totals.bytes / 1e6:.1f} MB) were read; {totals.kept_files:,}
were kept ({totals.kept_bytes / 1e6:.1f} MB). Removed, by reason (StarCoder2's filters
and thresholds, binary and oversized files):

| reason | files |
|---|---|
{drop_lines}

{_dedup_text(dedup)}

PII: emails, IP addresses, keys and passwords were replaced by placeholders
(`<EMAIL>`, `<IP_ADDRESS>`, `<KEY>`, `<PASSWORD>`): {stats.pii_redactions_total:,} replacements.

{_PROVENANCE}"""
