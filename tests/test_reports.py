"""The typed reports read every total their stage writes, so no reader depends on a key spelling."""

from __future__ import annotations

import dataclasses

from codemill.curation.stats import StatsAccumulator
from codemill.dedup.stats import DedupStats
from codemill.pipelines.reports import CurationStats, DedupReport, DedupTotals, TokenizeReport, TokenizeTotals
from codemill.records import FileRecord
from codemill.tokenize.stats import TokenizeStats


def _fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _record(kept: bool) -> FileRecord:
    record = FileRecord(swhid="swh:1:cnt:00", path="a.py", repo="org/r", content="x = 1\n", size_bytes=6)
    return record if kept else record.drop("filter:long_lines")


def test_curation_stats_read_back_every_total() -> None:
    acc = StatsAccumulator().add(_record(True)).add(_record(False))
    written = acc.to_json()
    stats = CurationStats.from_json({**written, "sources": 1})
    assert set(written["totals"]) <= {f.name for f in dataclasses.fields(stats.totals)}
    assert (stats.totals.files, stats.totals.kept_files, stats.totals.dropped_files) == (2, 1, 1)
    assert stats.drop_reasons == {"filter:long_lines": 1} and stats.sources == 1 and stats.dedup is None


def test_dedup_and_tokenize_reports_read_back_every_total() -> None:
    """Every named event counted, and every total read back by the typed report."""
    from codemill.dedup.stats import Candidate, Cluster, FileSeen, Removed, Sketched
    from codemill.tokenize.stats import Contaminated, DocumentMade, FileIn, OutsideMixture, ShardWritten

    dedup = DedupStats()
    for event in [FileSeen(), Sketched(True), Sketched(False), Candidate(True), Candidate(False), Cluster(2)]:
        dedup.add(event)
    dedup.add(Removed("near", "Python", "permissive", 10))
    dedup.add(Removed("exact", "Python", "permissive", 5))
    written = dedup.to_json()
    assert set(written["totals"]) <= _fields(DedupTotals)
    report = DedupReport.from_json(written)
    assert (report.totals.removed_near, report.totals.removed_exact, report.totals.removed_bytes) == (1, 1, 15)
    assert (report.totals.near_dedup_contents, report.totals.too_short_for_near_dedup) == (1, 1)
    assert (report.totals.verified_pairs, report.totals.rejected_pairs, report.totals.clusters) == (1, 1, 1)

    tokens = TokenizeStats()
    for event in [FileIn(), Contaminated("humaneval"), OutsideMixture()]:
        tokens.add(event)
    tokens.add(DocumentMade("python", 100, 1, 2, True))
    tokens.add(ShardWritten("python/part-00000-of-00001", 1, 100))
    written = tokens.to_json()
    assert set(written["totals"]) <= _fields(TokenizeTotals)
    read = TokenizeReport.from_json(written)
    assert read.totals.tokens == 100 and read.tokens_by_component == {"python": 100}
    assert read.totals.files_outside_mixture == 1 and read.totals.split_file_documents == 1
    assert read.contaminated_by_benchmark == {"humaneval": 1} and read.shards


def test_an_unnamed_event_is_refused() -> None:
    import pytest

    with pytest.raises(TypeError, match="unknown dedup stats event"):
        DedupStats().add(("removed", "near", "Python", "permissive", 10))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unknown tokenize stats event"):
        TokenizeStats().add(("file", True))  # type: ignore[arg-type]
