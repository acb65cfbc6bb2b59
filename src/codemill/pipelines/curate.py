"""The curation stage as Apache Beam PTransforms, and its driver.

    sources ─Read─> files ─BuildRecord─> records ──────────────┐
                 └─> summaries (origin, trees)                  ├─CoGroupByKey(output shard)─> shards
    records ─licence files─DetectLicense─> findings ───────────┘
    shards ─finalize_shard + write─> data/ (kept) · dropped/ · manifest/ (every file) · stats.json
    summaries ─> trees/          (with dedup: shards ─finalize_shard─> records ─Dedup─> the same tables)

Every output table is written as a fixed number of shards, rows assigned by a hash of their
repository and sorted inside a shard, so the output is byte-identical on any runner with any
number of workers.
"""

from __future__ import annotations

import functools
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
    WriteCuratedShards,
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
from codemill.shards import shard_of

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


def _license_text(keyed: tuple[str, FileRecord], num_shards: int) -> Iterator[tuple[str, tuple]]:
    key, record = keyed
    text_key = license_text_key(record)
    if text_key is not None:
        # The place's key carries the output shard along, so the finding joins its repository there.
        yield text_key, ((key, shard_of(record.repo, num_shards)), record.path, record.content)


def finalize_shard(joined: tuple[int, dict], config: CurationConfig) -> list[FileRecord]:
    """One output shard's join -> its finalized records, a repository at a time (in repo-key
    order, so a run's output does not depend on the order the join delivered them in)."""
    _, groups = joined
    records: dict[str, list[FileRecord]] = {}
    for key, record in groups["records"]:
        records.setdefault(key, []).append(record)
    findings: dict[str, list] = {}
    for key, finding in groups["findings"]:
        findings.setdefault(key, []).append(finding)
    summaries: dict[str, RepoSummary] = {}
    for key, summary in groups["summaries"]:
        summaries.setdefault(key, summary)
    finalized: list[FileRecord] = []
    for key in sorted(records):
        repo_findings = sorted(findings.get(key, ()), key=lambda f: f.path)
        finalized.extend(finalize_repository(records[key], repo_findings, summaries.get(key), config))
    return finalized


class Curate(beam.PTransform):
    """SourceSpecs -> each output shard's joined records and TreeRecords.

    Returns a dict {'shards': PCollection[(shard index, CoGroupByKey groups)], 'trees':
    PCollection[TreeRecord]} so the transform can sit inside a larger pipeline; `finalize_shard`
    turns a shard's groups into its finalized FileRecords (kept and dropped)."""

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
        n = self.config.num_shards
        if self.config.detect_licenses:
            findings = (
                records
                | "LicenseTexts" >> beam.FlatMap(_license_text, n)
                | "GroupLicenseTexts" >> beam.GroupByKey()
                | "DetectLicense" >> beam.ParDo(PooledDoFn(detect_license_group, (), self.processes, batch_size=1))
                | "LicenseProgress" >> beam.ParDo(ProgressBar(None, "licences (ScanCode)", " files", position=1))
                | "KeyFinding" >> beam.MapTuple(lambda place, finding: (place[1], (place[0], finding)))
            )
        else:
            findings = specs.pipeline | "NoLicenseDetection" >> beam.Create([])
        # One join per output shard, not per repository: the records then go from the join to their
        # shard's writer without a second shuffle of every file's content (a repository's files,
        # findings and summary all land in the shard of its name, as `WriteShards` would put them).
        shards = (
            {
                "records": records | "ShardRecord" >> beam.MapTuple(lambda key, r: (shard_of(r.repo, n), (key, r))),
                "findings": findings,
                "summaries": repo_summaries | "ShardSummary" >> beam.Map(
                    lambda s: (shard_of(s.repo, n), (s.repo_key, s))),
                "every_shard": specs.pipeline | "EveryShard" >> beam.Create([(i, None) for i in range(n)]),
            }
            | "JoinShard" >> beam.CoGroupByKey()
        )
        trees = repo_summaries | "Trees" >> beam.FlatMap(lambda s: s.trees)
        return {"shards": shards, "trees": trees}


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
    curated = (
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
        records = (
            curated["shards"]
            | "Finalize" >> beam.FlatMap(finalize_shard, config)
            | "Dedup" >> DedupStage(config.dedup, dedup_rounds, str(out_dir), processes, partitions)
        )
        {"records": records, "trees": curated["trees"]} | "Write" >> WriteCuration(str(out_dir), config.num_shards)
    else:
        curated | "Write" >> WriteCuratedShards(str(out_dir), config.num_shards, functools.partial(
            finalize_shard, config=config))
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
