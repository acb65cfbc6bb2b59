"""Curation statistics: counts by language, licence type, filter, drop reason and PII type."""

from __future__ import annotations

from collections import Counter
from typing import Any

from codemill.drops import stats_key
from codemill.records import FileRecord


class StatsAccumulator:
    """Mergeable counters (a Beam CombineFn accumulator and a plain-Python one)."""

    def __init__(self) -> None:
        self.counters: dict[str, Counter] = {
            name: Counter()
            for name in (
                "totals",
                "kept_by_language",
                "kept_bytes_by_language",
                "by_license_type",
                "kept_by_license_type",
                "filters_fired",
                "drop_reasons",
                "pii_files_by_type",
                "by_source_kind",
                "license_sources",
            )
        }
        self.pii_total = 0

    def add(self, record: FileRecord) -> "StatsAccumulator":
        c = self.counters
        c["totals"]["files"] += 1
        c["totals"]["bytes"] += record.size_bytes
        c["by_source_kind"][record.source_kind] += 1
        c["by_license_type"][record.license_type] += 1
        for name in record.filters:
            c["filters_fired"][name] += 1
        for kind in record.pii_types:
            c["pii_files_by_type"][kind] += 1
        self.pii_total += record.pii_count
        if record.license_source:
            c["license_sources"][record.license_source.split(":", 1)[0].split("@", 1)[0]] += 1
        if record.kept:
            c["totals"]["kept_files"] += 1
            c["totals"]["kept_bytes"] += record.size_bytes
            c["kept_by_language"][record.language or "unknown"] += 1
            c["kept_bytes_by_language"][record.language or "unknown"] += record.size_bytes
            c["kept_by_license_type"][record.license_type] += 1
        else:
            c["totals"]["dropped_files"] += 1
            c["drop_reasons"][stats_key(record.drop_reason or "unknown")] += 1
        return self

    def merge(self, other: "StatsAccumulator") -> "StatsAccumulator":
        for name, counter in other.counters.items():
            self.counters[name].update(counter)
        self.pii_total += other.pii_total
        return self

    def to_json(self) -> dict:
        out: dict[str, Any] = {name: dict(sorted(counter.items())) for name, counter in self.counters.items()}
        out["pii_redactions_total"] = self.pii_total
        return out

    @classmethod
    def from_json(cls, data: dict) -> "StatsAccumulator":
        """The accumulator `to_json` wrote (a work unit's partial, kept for resume)."""
        acc = cls()
        for name in acc.counters:
            acc.counters[name].update(data.get(name, {}))
        acc.pii_total = data.get("pii_redactions_total", 0)
        return acc
