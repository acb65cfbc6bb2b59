"""Which copy survives: The Stack v2's order, with a total tie-break so runs are deterministic.

permissive > no_license > non_permissive, then more stars, more forks, newer revision date, newer
visit date, then the smallest SWHID; copies of the same content (same SWHID) are then ordered by
their qualified SWHID (origin and path) and finally by the record key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterator

from codemill.drops import drop_reason
from codemill.records import FileRecord, LicenseType, record_key

_LICENSE_ORDER = {LicenseType.PERMISSIVE: 0, LicenseType.NO_LICENSE: 1, LicenseType.NON_PERMISSIVE: 2}


def _timestamp(value: str | None) -> float:
    """ISO-8601 -> POSIX seconds; missing or unreadable dates rank as the oldest."""
    if not value:
        return -math.inf
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return -math.inf
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def survivor_rank(record: FileRecord) -> tuple:
    """Sort key: the smallest key survives."""
    return (
        _LICENSE_ORDER.get(record.license_type, len(_LICENSE_ORDER)),
        -(record.stars or 0),
        -(record.forks or 0),
        -_timestamp(record.revision_date),
        -_timestamp(record.visit_date),
        record.swhid or "",
        record.qualified_swhid or "",
        record_key(record),
    )


@dataclass(frozen=True)
class DedupEntry:
    """What the survivor choice and the stats need of a record (never its content)."""

    key: str
    swhid: str
    qualified_swhid: str | None
    rank: tuple
    language: str | None
    license_type: str
    size_bytes: int
    shard: int = 0  # the input shard holding the record: its decision goes back there

    @classmethod
    def of(cls, record: FileRecord, shard: int = 0) -> "DedupEntry":
        return cls(
            record_key(record),
            record.swhid or "",  # every curated record has one
            record.qualified_swhid,
            survivor_rank(record),
            record.language,
            record.license_type,
            record.size_bytes,
            shard,
        )

    @property
    def citation(self) -> str:
        return self.qualified_swhid or self.swhid


@dataclass(frozen=True)
class Decision:
    """The dedup outcome for one record."""

    cluster: str
    drop_reason: str | None  # None: the record survives


def decide(entry: DedupEntry, survivor: DedupEntry, cluster: str) -> Decision:
    """The decision for one member of a cluster whose survivor is known."""
    if entry.key == survivor.key:
        return Decision(cluster, None)
    kind = "exact" if entry.swhid == survivor.swhid else "near"
    return Decision(cluster, drop_reason(f"{kind}_duplicate", survivor.citation))


def decide_cluster(cluster: str, entries) -> Iterator[tuple[DedupEntry, Decision]]:
    """A decision for every member. Two passes over `entries` (a re-iterable, as Beam's grouped
    values are) and nothing kept per member, so memory stays flat for huge clusters."""
    survivor = min(entries, key=lambda e: e.rank)
    for entry in entries:
        yield entry, decide(entry, survivor, cluster)
