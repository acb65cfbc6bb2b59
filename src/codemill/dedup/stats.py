"""Dedup statistics: clusters, cluster sizes, and what was removed per language and licence type.

The Beam layer turns what it sees into small events and folds them with `DedupStats`, a mergeable
accumulator; the driver adds the connected-component figures (rounds, edges per round) it reads
from the run's metrics.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable, NamedTuple

from codemill.dedup.ranking import Decision, DedupEntry
from codemill.drops import reason_kind


class FileSeen(NamedTuple):
    """A record that took part in dedup (every one, kept or not)."""


class Sketched(NamedTuple):
    """A distinct content sketched for near dedup; without shingles it takes part in exact dedup only."""

    has_shingles: bool


class Candidate(NamedTuple):
    """A candidate pair from the LSH buckets, and whether its shingle sets reached the threshold."""

    verified: bool


class Cluster(NamedTuple):
    """A cluster of two or more records."""

    size: int


class Removed(NamedTuple):
    """A record dropped as a duplicate."""

    how: str  # exact | near
    language: str
    license_type: str
    size_bytes: int


DedupEvent = FileSeen | Sketched | Candidate | Cluster | Removed


def size_bin(size: int) -> str:
    """Cluster-size histogram bins: 2, 3-4, 5-8, 9-16, ..."""
    if size <= 2:
        return str(size)
    upper = 1 << (size - 1).bit_length()
    return f"{upper // 2 + 1}-{upper}"


def decision_events(entry: DedupEntry, decision: Decision) -> Iterable[DedupEvent]:
    yield FileSeen()
    if decision.drop_reason is not None:
        how = reason_kind(decision.drop_reason).removesuffix("_duplicate")  # exact | near
        yield Removed(how, entry.language or "unknown", entry.license_type, entry.size_bytes)


class DedupStats:
    def __init__(self) -> None:
        self.totals: Counter = Counter()
        self.cluster_sizes: Counter = Counter()
        self.removed: dict[str, Counter] = {
            name: Counter()
            for name in ("files_by_language", "bytes_by_language", "files_by_license_type", "bytes_by_license_type")
        }

    def add(self, event: DedupEvent) -> "DedupStats":
        match event:
            case FileSeen():
                self.totals["files"] += 1
            case Sketched(has_shingles=True):
                self.totals["near_dedup_contents"] += 1
            case Sketched(has_shingles=False):
                self.totals["too_short_for_near_dedup"] += 1
            case Candidate(verified=verified):
                self.totals["candidate_pairs"] += 1
                self.totals["verified_pairs" if verified else "rejected_pairs"] += 1
            case Cluster(size=size):
                self.totals["clusters"] += 1
                self.cluster_sizes[size_bin(size)] += 1
            case Removed(how=how, language=language, license_type=license_type, size_bytes=size):
                self.totals[f"removed_{how}"] += 1
                self.totals["removed_files"] += 1
                self.totals["removed_bytes"] += size
                self.removed["files_by_language"][language] += 1
                self.removed["bytes_by_language"][language] += size
                self.removed["files_by_license_type"][license_type] += 1
                self.removed["bytes_by_license_type"][license_type] += size
            case _:
                raise TypeError(f"unknown dedup stats event {event!r}")
        return self

    def merge(self, other: "DedupStats") -> "DedupStats":
        self.totals.update(other.totals)
        self.cluster_sizes.update(other.cluster_sizes)
        for name, counter in other.removed.items():
            self.removed[name].update(counter)
        return self

    @classmethod
    def from_json(cls, data: dict) -> "DedupStats":
        """The accumulator back from `to_json` (to merge the parts a run wrote at different steps)."""
        stats = cls()
        stats.totals.update(data.get("totals", {}))
        stats.cluster_sizes.update(data.get("cluster_size_histogram", {}))
        for name, counter in data.get("removed", {}).items():
            stats.removed[name].update(counter)
        return stats

    def to_json(self) -> dict:
        def by_bin(item):
            return int(item[0].split("-")[0])

        return {
            "totals": dict(sorted(self.totals.items())),
            "cluster_size_histogram": dict(sorted(self.cluster_sizes.items(), key=by_bin)),
            "removed": {name: dict(sorted(c.items())) for name, c in self.removed.items()},
        }
