"""The stages' JSON reports as typed records, read back by the command line, the run, the
published card and report.html: stats.json of a curate or dedup output, dedup.json and
tokenize.json. A field the writer did not fill reads as its default (an older or partial report);
a misspelt field is an attribute error that the type check finds, not a silent 0."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, TypeVar

from codemill.storage import StoragePath, location

T = TypeVar("T")


def _known(cls: type[T], data: dict | None) -> T:
    """`cls` from the keys of `data` that it has fields for (the counters may hold more)."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in (data or {}).items() if k in names})


def _read(path: StoragePath) -> dict:
    try:
        return json.loads(location(path).read_text())
    except (OSError, ValueError):
        return {}


@dataclass(frozen=True)
class CurationTotals:
    files: int = 0
    bytes: int = 0
    kept_files: int = 0
    kept_bytes: int = 0
    dropped_files: int = 0


@dataclass(frozen=True)
class DedupTotals:
    files: int = 0
    clusters: int = 0
    removed_files: int = 0
    removed_exact: int = 0
    removed_near: int = 0
    removed_bytes: int = 0
    too_short_for_near_dedup: int = 0
    near_dedup_contents: int = 0
    candidate_pairs: int = 0
    verified_pairs: int = 0
    rejected_pairs: int = 0


@dataclass(frozen=True)
class CurationStats:
    """stats.json of a curate or dedup output."""

    totals: CurationTotals = CurationTotals()
    drop_reasons: dict[str, int] = field(default_factory=dict)
    kept_by_language: dict[str, int] = field(default_factory=dict)
    kept_by_license_type: dict[str, int] = field(default_factory=dict)
    pii_redactions_total: int = 0
    sources: int | None = None  # repositories read
    dedup: DedupTotals | None = None  # with dedup: what it removed

    @classmethod
    def from_json(cls, data: dict) -> CurationStats:
        stats = _known(cls, data)
        dedup = data.get("dedup")
        return dataclasses.replace(
            stats,
            totals=_known(CurationTotals, data.get("totals")),
            dedup=_known(DedupTotals, dedup) if dedup else None,
        )

    @classmethod
    def read(cls, folder: StoragePath) -> CurationStats:
        return cls.from_json(_read(location(folder) / "stats.json"))


@dataclass(frozen=True)
class DedupReport:
    """dedup.json: what dedup removed, its settings and the connected-components rounds."""

    totals: DedupTotals = DedupTotals()
    config: dict[str, Any] = field(default_factory=dict)
    connected_components: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, data: dict) -> DedupReport:
        return dataclasses.replace(_known(cls, data), totals=_known(DedupTotals, data.get("totals")))

    @classmethod
    def read(cls, folder: StoragePath) -> DedupReport | None:
        data = _read(location(folder) / "dedup.json")
        return cls.from_json(data) if data else None


@dataclass(frozen=True)
class TokenizeTotals:
    files_in: int = 0
    documents: int = 0
    tokens: int = 0
    fim_files: int = 0
    file_spans: int = 0
    split_file_documents: int = 0
    contaminated_files: int = 0
    files_outside_mixture: int = 0


@dataclass(frozen=True)
class TokenizeReport:
    """tokenize.json."""

    totals: TokenizeTotals = TokenizeTotals()
    tokens_by_component: dict[str, int] = field(default_factory=dict)
    contaminated_by_benchmark: dict[str, int] = field(default_factory=dict)
    shards: dict[str, dict] = field(default_factory=dict)  # component/part -> documents, tokens
    dtype: str = "?"
    input_read: str = ""
    tokenizer: str = ""

    @classmethod
    def from_json(cls, data: dict) -> TokenizeReport:
        return dataclasses.replace(_known(cls, data), totals=_known(TokenizeTotals, data.get("totals")))

    @classmethod
    def read(cls, folder: StoragePath) -> TokenizeReport:
        return cls.from_json(_read(location(folder) / "tokenize.json"))
