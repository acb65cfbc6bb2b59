"""The record that flows between stages: one `FileRecord` per input file, one Arrow schema.

Every stage reads and writes Parquet with `FILE_RECORD_SCHEMA`; the dataclass is the in-memory
form used by the plain-Python cores and the Beam layer. Dropped records keep flowing (with
`kept=False` and a `drop_reason`) so the provenance manifest accounts for every input file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Literal

import pyarrow as pa


class LicenseType:
    PERMISSIVE = "permissive"
    NO_LICENSE = "no_license"
    NON_PERMISSIVE = "non_permissive"


LanguageType = Literal["programming", "data", "markup", "prose"]  # go-enry's types


@dataclass
class FileRecord:
    # Identity and provenance.
    swhid: str | None  # swh:1:cnt of the ORIGINAL bytes; None only if the bytes were unreadable
    path: str  # path inside the repository, '/'-separated, no leading slash
    repo: str  # repository (origin) name
    origin_url: str | None = None
    origin_swhid: str | None = None  # snp > rev > dir SWHID of the tree the file came from
    qualified_swhid: str | None = None  # swhid;origin=...;visit=...;anchor=...;path=...
    source_uri: str = ""  # where the file was read from (directory, archive, table, export)
    source_kind: str = ""
    size_bytes: int = 0
    # Content (None when the file was dropped before decoding).
    content: str | None = None
    encoding: str | None = None
    stored_sha1_git: str | None = None  # sha1_git of content.encode('utf-8'): what we store
    # Labels.
    language: str | None = None
    language_type: LanguageType | None = None
    is_vendor: bool = False
    is_generated: bool = False
    parse_error_ratio: float | None = None
    license_spdx: str | None = None
    license_type: str = LicenseType.NO_LICENSE
    license_source: str | None = None  # e.g. "scancode:LICENSE" or "declared:package-metadata"
    # Repository metadata where known.
    stars: int | None = None
    forks: int | None = None
    revision_date: str | None = None  # ISO-8601
    visit_date: str | None = None
    # Curation outcome.
    filters: list[str] = field(default_factory=list)
    pii_types: list[str] = field(default_factory=list)
    pii_count: int = 0
    dup_cluster: str | None = None
    kept: bool = True
    drop_reason: str | None = None

    def drop(self, reason: str) -> "FileRecord":
        """Mark dropped; the first reason wins so the manifest names the earliest cause."""
        if self.kept:
            self.kept = False
            self.drop_reason = reason
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> "FileRecord":
        return cls(**{k: row[k] for k in _FIELD_NAMES if k in row})


_ARROW_TYPES: dict[str, pa.DataType] = {
    "swhid": pa.string(),
    "path": pa.string(),
    "repo": pa.string(),
    "origin_url": pa.string(),
    "origin_swhid": pa.string(),
    "qualified_swhid": pa.string(),
    "source_uri": pa.string(),
    "source_kind": pa.string(),
    "size_bytes": pa.int64(),
    "content": pa.large_string(),
    "encoding": pa.string(),
    "stored_sha1_git": pa.string(),
    "language": pa.string(),
    "language_type": pa.string(),
    "is_vendor": pa.bool_(),
    "is_generated": pa.bool_(),
    "parse_error_ratio": pa.float64(),
    "license_spdx": pa.string(),
    "license_type": pa.string(),
    "license_source": pa.string(),
    "stars": pa.int64(),
    "forks": pa.int64(),
    "revision_date": pa.string(),
    "visit_date": pa.string(),
    "filters": pa.list_(pa.string()),
    "pii_types": pa.list_(pa.string()),
    "pii_count": pa.int64(),
    "dup_cluster": pa.string(),
    "kept": pa.bool_(),
    "drop_reason": pa.string(),
}
_FIELD_NAMES = [f.name for f in dataclasses.fields(FileRecord)]
assert _FIELD_NAMES == list(_ARROW_TYPES), "FileRecord fields and Arrow schema must match"


def rebuild(record_type: type, names: Iterable[str], values: Iterable[Any]):
    """A dataclass instance from its field names and values, without __init__ (frozen ones too):
    for data that was one already (a shuffle's field tuple, a table's columns), where __init__
    and its defaults would only cost time."""
    record: Any = object.__new__(record_type)
    record.__dict__.update(zip(names, values, strict=False))
    return record


def records_from_table(table: pa.Table) -> Iterator[FileRecord]:
    """FileRecords from an Arrow table of FILE_RECORD_SCHEMA columns, converted a column at a time.
    Row dicts first (Beam's ReadFromParquet) then `from_dict` cost ~0.9 s per 16,000 records of
    200 MB against ~0.4 s here (cProfile, inside the tokenize pipeline). A table missing columns
    (an older or partial output) gets the dataclass defaults for them."""
    columns = table.to_pydict()
    names = [name for name in _FIELD_NAMES if name in columns]
    rows = zip(*(columns[name] for name in names), strict=False)
    if len(names) < len(_FIELD_NAMES):
        for values in rows:
            yield FileRecord(**dict(zip(names, values, strict=False)))
    else:
        for values in rows:
            yield rebuild(FileRecord, names, values)


FILE_RECORD_SCHEMA = pa.schema([pa.field(name, typ) for name, typ in _ARROW_TYPES.items()])

# The provenance manifest: every column but the content itself.
MANIFEST_SCHEMA = pa.schema([f for f in FILE_RECORD_SCHEMA if f.name != "content"])


@dataclass(frozen=True)
class TreeRecord:
    """One directory (tree) of a source, with its swh:1:dir SWHID."""

    swhid: str
    repo: str
    path: str  # '' for the root
    source_uri: str


TREE_SCHEMA = pa.schema(
    [("swhid", pa.string()), ("repo", pa.string()), ("path", pa.string()), ("source_uri", pa.string())]
)


def record_key(record: Any) -> str:
    """A record's unique key: where it was read from, its repository and path."""
    return f"{record.source_uri}#{record.repo}#{record.path}"


def records_to_table(records: Iterable[Any], schema: pa.Schema = FILE_RECORD_SCHEMA) -> pa.Table:
    """Any objects with the schema's names as attributes (FileRecord, TreeRecord) -> Arrow table."""
    names = schema.names
    columns: dict[str, list] = {name: [] for name in names}
    for record in records:
        for name in names:
            columns[name].append(getattr(record, name))
    return pa.table(columns, schema=schema)
