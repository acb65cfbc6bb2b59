"""The curation stage as Apache Beam PTransforms, and its driver.

    sources ─Read─> files ─BuildRecord─> records ──────────────┐
                 └─> summaries (origin, trees)                  ├─CoGroupByKey(repo)─Finalize─> records
    records ─licence files─DetectLicense─> findings ───────────┘
    records ─> data/ (kept) · dropped/ · manifest/ (every file) · trees/ · stats.json

Every output table is written as a fixed number of shards, rows assigned by a hash of
(repository, path) and sorted inside a shard, so the output is byte-identical on any runner
with any number of workers.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import apache_beam as beam

from codemill.curation.config import CurationConfig
from codemill.curation.process import (
    build_keyed_record,
    detect_license_group,
    finalize_repository,
    license_text_key,
)
from codemill.curation.sources import read_source
from codemill.curation.sources.base import (
    RepoSummary,
    SourceFile,
    SourceSpec,
    spec_to_json,
)
from codemill.pipelines.common import (
    ProgressBar,
    default_pipeline_options,
    is_single_process,
    register,
    write_json,
)
from codemill.pipelines.outputs import (  # noqa: F401 (re-exported: the stage's public names)
    OUTPUT_TABLES,
    RECORD_TABLES,
    SUCCESS_MARKER,
    IncompleteOutputError,
    WriteCuration,
    WriteShards,
    check_outputs,
    clear_outputs,
    write_success,
)
from codemill.pipelines.pooled import PooledDoFn
from codemill.records import (
    FileRecord,
)

log = logging.getLogger(__name__)

class ReadSource(beam.DoFn):
    """One SourceSpec -> its SourceFiles, then its RepoSummary, in one output.

    One output split by type downstream, rather than tagged outputs: Beam's DaskRunner routes
    tagged outputs into the main output (seen with apache-beam 2.77)."""

    def process(self, spec: SourceSpec) -> Iterator:
        count = 0
        for item in read_source(spec):
            if isinstance(item, RepoSummary):
                if item.error:
                    log.warning("%s: %s", item.source_uri, item.error)
                yield item
            else:
                count += 1
                yield item
        beam.metrics.Metrics.counter("curate", "files_read").inc(count)


def _license_text(keyed: tuple[str, FileRecord]) -> Iterator[tuple[str, tuple[str, str, str]]]:
    key, record = keyed
    text_key = license_text_key(record)
    if text_key is not None:
        yield text_key, (key, record.path, record.content)


def _finalize(joined: tuple[str, dict], config: CurationConfig) -> Iterator[FileRecord]:
    _, groups = joined
    summaries = list(groups["summaries"])
    findings = sorted(groups["findings"], key=lambda f: f.path)
    records = (record for record in groups["records"])
    yield from finalize_repository(records, findings, summaries[0] if summaries else None, config)


class Curate(beam.PTransform):
    """SourceSpecs -> finalized FileRecords (kept and dropped) and TreeRecords.

    Returns a dict {'records': PCollection[FileRecord], 'trees': PCollection[TreeRecord]} so the
    transform can sit inside a larger pipeline."""

    def __init__(self, config: CurationConfig, total_files: int | None = None, processes: int = 1,
                 redistribute: bool = True) -> None:
        super().__init__()
        self.config = config
        self.total_files = total_files
        self.processes = processes
        # A Reshuffle spreads the files of one large source over a cluster's workers; in one
        # process (with or without the local pool) it only costs a pass of all content through a
        # shuffle, so the local default skips it.
        self.redistribute = redistribute

    def expand(self, specs):
        items = specs | "Read" >> beam.ParDo(ReadSource())
        files = items | "Files" >> beam.Filter(lambda item: isinstance(item, SourceFile))
        repo_summaries = items | "Summaries" >> beam.Filter(lambda item: isinstance(item, RepoSummary))
        if self.redistribute:
            files = files | "Redistribute" >> beam.Reshuffle()
        records = (
            files
            | "BuildRecord" >> beam.ParDo(PooledDoFn(build_keyed_record, (self.config,), self.processes))
            | "Progress" >> beam.ParDo(ProgressBar(self.total_files, "curate", " files"))
        )
        if self.config.detect_licenses:
            findings = (
                records
                | "LicenseTexts" >> beam.FlatMap(_license_text)
                | "GroupLicenseTexts" >> beam.GroupByKey()
                | "DetectLicense" >> beam.ParDo(PooledDoFn(detect_license_group, (), self.processes, batch_size=1))
                | "LicenseProgress" >> beam.ParDo(ProgressBar(None, "licences (ScanCode)", " files", position=1))
            )
        else:
            findings = specs.pipeline | "NoLicenseDetection" >> beam.Create([])
        summaries = repo_summaries | "KeySummary" >> beam.Map(lambda s: (s.repo_key, s))
        final = (
            {"records": records, "findings": findings, "summaries": summaries}
            | "JoinRepository" >> beam.CoGroupByKey()
            | "Finalize" >> beam.FlatMap(_finalize, self.config)
        )
        trees = repo_summaries | "Trees" >> beam.FlatMap(lambda s: s.trees)
        return {"records": final, "trees": trees}


@dataclass
class CurationResult:
    out_dir: Path
    stats: dict
    seconds: float

    @property
    def manifest_dir(self) -> Path:
        return self.out_dir / "manifest"


def run_curation(
    specs: list[SourceSpec],
    out_dir: Path,
    config: CurationConfig = CurationConfig(),
    pipeline_args: list[str] | None = None,
    processes: int = 1,
) -> CurationResult:
    """Run the curation pipeline. `processes` > 1 fans the per-file work out to a local process
    pool; it applies only to the default in-process runner (see pipelines/pooled.py)."""
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    clear_outputs(out_dir)
    write_json(out_dir / "sources.json", {"sources": [spec_to_json(s) for s in specs]})

    options, runner = default_pipeline_options(pipeline_args)
    # Each worker process draws its own bar; the corpus total is only right for a single one.
    single_process = is_single_process(options, runner)
    planned_files = sum(len(s.option("files", ())) for s in specs) or None
    total = planned_files if single_process else None
    if runner is None:
        processes = 1  # a cluster runner: each SDK worker already owns a core
    started = time.monotonic()
    pipeline = beam.Pipeline(runner=runner, options=options)
    outputs = (
        pipeline
        | "Sources" >> beam.Create(specs)
        | "Curate" >> Curate(config, total, processes, redistribute=not single_process)
    )
    dedup_rounds = 0
    if config.dedup is not None:
        from codemill.pipelines.dedup import DedupStage

        # Without a file list (git, archives, exports) the size is unknown: plan for a large corpus.
        dedup_rounds = config.dedup.rounds_for(planned_files or 10**9)
        partitions = config.dedup.lsh_partitions_for(planned_files) if single_process and planned_files else None
        records = outputs["records"] | "Dedup" >> DedupStage(config.dedup, dedup_rounds, str(out_dir), processes,
                                                              partitions)
        outputs = {"records": records, "trees": outputs["trees"]}
    outputs | "Write" >> WriteCuration(str(out_dir), config.num_shards)
    result = pipeline.run()
    result.wait_until_finish()
    seconds = time.monotonic() - started
    stats = check_outputs(out_dir, config.num_shards)
    stats["sources"] = len(specs)
    if config.dedup is not None:
        from codemill.pipelines.dedup import finish_dedup_report

        stats["dedup"] = finish_dedup_report(out_dir, result, config.dedup, dedup_rounds)["totals"]
    write_json(out_dir / "stats.json", stats)
    write_success(out_dir, "curate", seconds, config.num_shards, sources=len(specs))
    return CurationResult(out_dir, stats, seconds)


register(FileRecord, SourceFile, RepoSummary)
