"""The plain-Python core of curation: SourceFile -> FileRecord, then the per-repository join.

`build_record` does everything that needs only the file (SWHID, decoding, language, filters, PII);
`finalize_repository` does what needs the whole repository (origin and qualified SWHIDs, licences
inherited along the path, opt-out by origin or tree). The Beam layer (pipelines/curate.py) runs
the first per file and the second per repository group.
"""

from __future__ import annotations

from typing import Iterable, Iterator

from swh.model.swhids import ObjectType

from codemill.curation.config import CurationConfig
from codemill.curation.filters import apply_filters
from codemill.curation.language import detect_language, parse_error_ratio
from codemill.curation.license import LicenseFinding, ScancodeDetector, decide_license, is_license_file, normalize_spdx
from codemill.curation.pii import redact
from codemill.curation.sources.archive import ARCHIVE_ERROR_PATH
from codemill.curation.sources.base import RepoSummary, SourceFile
from codemill.curation.swhid import MODE_GITLINK, blob_id, qualified_swhid, swhid_of
from codemill.curation.text import decode
from codemill.drops import drop_reason
from codemill.records import FileRecord


def file_swhid(item: SourceFile) -> str | None:
    if item.sha1_git is None:
        return None
    kind = ObjectType.REVISION if item.mode == MODE_GITLINK else ObjectType.CONTENT
    return swhid_of(kind, item.sha1_git)


def build_record(item: SourceFile, config: CurationConfig) -> FileRecord:
    record = FileRecord(
        swhid=file_swhid(item),
        path=item.path,
        repo=item.repo,
        source_uri=item.source_uri,
        source_kind=item.source_kind,
        size_bytes=item.size,
        license_spdx=item.declared_license,  # provisional: finalize_repository decides
    )
    if item.drop_reason:
        return record.drop(item.drop_reason)
    optout = config.optout.match(repo=item.repo, swhid=record.swhid)
    if optout:
        return record.drop(drop_reason("opted_out", optout))
    assert item.data is not None
    decoded = decode(item.data, config.min_text_coherence)
    if decoded.text is None:
        return record.drop(decoded.reason or "undecodable")
    text = decoded.text
    record.encoding = decoded.encoding
    info = detect_language(item.path, item.data)
    record.language, record.language_type = info.language, info.language_type
    record.is_vendor, record.is_generated = info.is_vendor, info.is_generated
    if "syntax_errors" in config.filters.enabled:
        record.parse_error_ratio = parse_error_ratio(info.language, item.data, config.max_parse_check_bytes)
    record.filters = apply_filters(text, info.language, config.filters, record.parse_error_ratio)
    if record.filters:
        record.drop(drop_reason("filter", record.filters[0]))
    if config.redact_pii:
        redaction = redact(text)
        text = redaction.text
        record.pii_types = sorted(redaction.counts)
        record.pii_count = redaction.total
    record.content = text
    record.stored_sha1_git = blob_id(text.encode("utf-8", "surrogateescape")).hex()
    return record


def build_keyed_record(item: SourceFile, config: CurationConfig) -> list[tuple[str, FileRecord]]:
    """build_record keyed by repository, as the pipeline's per-file step (run in pool workers,
    so this module must not import Beam)."""
    return [(item.repo_key, build_record(item, config))]


def license_text_key(record: FileRecord) -> str | None:
    """The key under which a licence file's text is detected (its stored hash), or None for
    files that are not licence files. Equal texts share a key, so each is detected once."""
    if record.content is None or not is_license_file(record.path):
        return None
    return record.stored_sha1_git


def license_findings(
    text: str, places: Iterable[tuple[str, str]], detector: ScancodeDetector
) -> Iterator[tuple[str, LicenseFinding]]:
    """Detect one licence text and say so for every (repo_key, path) that holds it."""
    spdx = detector.detect_text(text)
    for key, path in places:
        directory = path.rsplit("/", 1)[0] if "/" in path else ""
        yield key, LicenseFinding(directory=directory, path=path, spdx=spdx)


_DETECTOR: ScancodeDetector | None = None  # one per process: ScanCode's index is ~1 GB


def detect_license_group(grouped: tuple[str, Iterable[tuple[str, str, str]]]) -> list:
    """(text key, [(repo_key, path, text), ...]) -> [(repo_key, LicenseFinding)] for each place.

    Licence files are grouped by text first, so each distinct text is detected once per run
    (copies of a licence are common: 244 distinct texts among 326 licence files of the default
    corpus). ScanCode's index loads once per process, on first use."""
    global _DETECTOR
    if _DETECTOR is None:
        _DETECTOR = ScancodeDetector()
    _, places = grouped
    places = sorted(places)
    return list(license_findings(places[0][2], ((key, path) for key, path, _ in places), _DETECTOR))


def _trees_on_path(path: str, trees: dict[str, str]) -> tuple[str, ...]:
    parts = path.split("/")[:-1]
    prefixes = [""] + ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return tuple(trees[p] for p in prefixes if p in trees)


def finalize_repository(
    records: Iterable[FileRecord],
    findings: list[LicenseFinding],
    summary: RepoSummary | None,
    config: CurationConfig,
) -> Iterator[FileRecord]:
    trees = {tree.path: tree.swhid for tree in summary.trees} if summary else {}
    for record in records:
        if summary is not None:
            record.origin_url = summary.origin_url
            record.origin_swhid = summary.origin_swhid
            record.revision_date = summary.revision_date
            record.visit_date = summary.visit_date
            record.stars, record.forks = summary.stars, summary.forks
            if record.swhid and record.path != ARCHIVE_ERROR_PATH:
                record.qualified_swhid = qualified_swhid(
                    record.swhid,
                    origin=summary.origin_url,
                    visit=summary.snapshot_swhid,
                    anchor=summary.anchor,
                    path=record.path,
                )
        per_file = normalize_spdx(record.license_spdx) if record.license_spdx else None
        declared = per_file or (summary.declared_license if summary else None)
        declared_source = "declared:table" if per_file else (summary.declared_license_source if summary else None)
        decision = decide_license(record.path, findings, declared, declared_source)
        record.license_spdx, record.license_type, record.license_source = (
            decision.spdx,
            decision.license_type,
            decision.source,
        )
        if config.optout:
            optout = config.optout.match(
                repo=record.repo,
                swhid=record.swhid,
                origin_url=record.origin_url,
                origin_swhids=(summary.snapshot_swhid, summary.revision_swhid) + _trees_on_path(record.path, trees)
                if summary
                else (),
            )
            if optout:
                record.drop(drop_reason("opted_out", optout))
                record.content = None
        yield record
