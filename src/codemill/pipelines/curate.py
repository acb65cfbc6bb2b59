"""The curation stage as Apache Beam PTransforms, and its driver.

    sources ─plan_units─> work units (the repositories hashing to one output shard; a table alone)
    units ─CurateUnit (curation/unit.py: read, label, licences, finalize a repository at a time)─>
          fragments on OUT/_work (one sorted fragment per shard a unit's repositories belong to)
          + a small result per unit (the shards it wrote, its stats, the licence texts it met)
    (shard, units) ─MergeShard─> OUT/data · dropped · manifest · trees /part-i-of-n ; stats.json

No file content crosses a shuffle or a PCollection: a worker reads, curates and writes its unit,
and only results of a few kilobytes travel. Output shards are placed by a hash of the repository
and sorted inside (see outputs.SHARD_LAYOUT), and their number follows the estimated input size
(`shard_mb`), so the output is byte-identical on any runner with any number of workers.
With dedup, the curated output is written under OUT/_curated and deduplicated into OUT.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import apache_beam as beam

from codemill.curation.config import CurationConfig
from codemill.curation.plan import WorkUnit, plan_units
from codemill.curation.sources.base import RepoSummary, SourceFile, SourceSpec, spec_to_json
from codemill.curation.unit import (
    UnitResult,
    UnitSettings,
    curate_unit,
    merge_shard,
    merged_stats,
    read_license_cache,
    result_from_marker,
    unit_marker,
)
from codemill.curation.unit_progress import FilesBar
from codemill.jsonl import json_field, read_json
from codemill.pipelines.common import (
    ProgressBar,
    register,
    write_json,
)
from codemill.pipelines.driver import BeamDriver
from codemill.pipelines.outputs import (
    SUCCESS_MARKER,
    IncompleteOutputError,
    check_outputs,
    clear_outputs,
    write_success,
)
from codemill.pipelines.pooled import PooledDoFn
from codemill.records import FileRecord
from codemill.settings import stage_key
from codemill.storage import StoragePath, is_remote, location, resolved, rmtree, write_bytes

log = logging.getLogger(__name__)

WORK_DIR = "_work"  # fragments and markers of an unfinished run; removed when the stage finishes
PLAN_FILE = "plan.json"
LICENSE_CACHE = "license_cache.json"
STAGED = "_curated"  # with dedup: the curated output before deduplication


class CurateUnits(beam.PTransform):
    """WorkUnits -> UnitResults; every unit's fragments are written by the worker that curates it."""

    def __init__(
        self,
        settings: UnitSettings,
        total_units: int | None,
        processes: int = 1,
        redistribute: bool = True,
        unit_bar: bool = True,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.total_units = total_units
        self.unit_bar = unit_bar  # off where the driver shows a bar of files (a local work folder)
        self.processes = processes
        # A Reshuffle spreads the units over a cluster's workers; in one process it is a no-op cost.
        self.redistribute = redistribute

    def expand(self, units):
        if self.redistribute:
            units = units | "Spread" >> beam.Reshuffle()
        results = units | "CurateUnit" >> beam.ParDo(
            PooledDoFn(curate_unit, (self.settings,), self.processes, batch_size=1)
        )
        if not self.unit_bar:
            return results
        return results | "Progress" >> beam.ParDo(ProgressBar(self.total_units, "curate", " units"))


def _merge_shard(shard: int, units, settings) -> int:
    """A shard's fragments merged into the shard (units that wrote nothing to it are None)."""
    merge_shard(shard, [u for u in units if u is not None], settings)
    return shard


class MergeShards(beam.PTransform):
    """UnitResults -> every output shard put in place from its fragments; returns the shard indices."""

    def __init__(self, settings: UnitSettings) -> None:
        super().__init__()
        self.settings = settings

    def expand(self, results):
        settings = self.settings
        return (
            (
                results | "ShardOfFragment" >> beam.FlatMap(lambda r: ((shard, r.unit) for shard in r.shards)),
                results.pipeline | "EveryShard" >> beam.Create([(i, None) for i in range(settings.num_shards)]),
            )
            | "Fragments" >> beam.Flatten()
            | "GroupFragments" >> beam.GroupByKey()
            | "MergeShard" >> beam.MapTuple(lambda shard, units: _merge_shard(shard, units, settings))
        )


@dataclass
class CurationResult:
    out_dir: StoragePath
    stats: dict
    seconds: float

    @property
    def manifest_dir(self) -> StoragePath:
        return self.out_dir / "manifest"


def _finished_units(work: StoragePath) -> set[str]:
    """Names of the units with a marker (one listing: on object storage each `exists` is a request)."""
    return {marker.name.removesuffix(".json") for marker in (work / "units").glob("*.json")}


def _prepare(out_dir: StoragePath, key: str, units: list[WorkUnit], num_shards: int) -> str:
    """Resume the unfinished run of the same plan in out_dir, or clear out_dir for a fresh one.
    Returns what is reused, for the user."""
    work = out_dir / WORK_DIR
    plan_path = work / PLAN_FILE
    if json_field(plan_path, "key") == key:
        done_units = len(_finished_units(work) & {u.name for u in units})
        done_shards = len(list((work / "shards").glob("*.done")))
        (out_dir / "stats.json").unlink(missing_ok=True)
        return (
            f"resuming an unfinished run: {done_units} of {len(units)} units and {done_shards} of "
            f"{num_shards} shards already done are reused"
        )
    clear_outputs(out_dir)
    rmtree(work)
    work.mkdir(parents=True)
    write_json(plan_path, {"key": key, "units": len(units), "num_shards": num_shards})
    return ""


@dataclass(frozen=True)
class CurationPlan:
    specs: list[SourceSpec]
    num_shards: int
    units: list[WorkUnit]
    key: str  # equal keys: the same units would write the same fragments (so they may be reused)

    @property
    def estimated_bytes(self) -> int:
        return sum(u.estimated_bytes for u in self.units)


def plan_curation(specs: list[SourceSpec], config: CurationConfig) -> CurationPlan:
    num_shards, units = plan_units(specs, int(config.shard_mb * (1 << 20)), config.num_shards)
    # What does not change the output stays out of the key: a run killed for memory can be resumed
    # with a smaller budget.
    output_settings = dataclasses.replace(config, dedup=None, memory_budget_mb=1, spill_dir=None)
    key = stage_key("curate-units", [spec_to_json(s) for s in specs], output_settings, num_shards)
    return CurationPlan(specs, num_shards, units, key)


def _unit_settings(
    plan: CurationPlan, out_dir: StoragePath, config: CurationConfig, license_cache: StoragePath | None
) -> UnitSettings:
    """What every unit's worker is given; the licence detections known so far are written for them
    first, and the licence fast path's index is built here once."""
    work = out_dir / WORK_DIR
    seeds = work / LICENSE_CACHE
    _write_license_seeds(seeds, [license_cache, out_dir / LICENSE_CACHE], work)
    if config.detect_licenses and config.license_fast_path:
        from codemill.curation.license_index import license_index

        license_index()  # built here once per machine (~10 s), so the workers only read its cache
    return UnitSettings(
        dataclasses.replace(config, dedup=None),
        plan.num_shards,
        str(work),
        str(out_dir),
        config.memory_budget_mb << 20,
        config.spill_dir,
        str(seeds),
    )


def _curate(
    plan: CurationPlan,
    out_dir: StoragePath,
    config: CurationConfig,
    pipeline_args: list[str] | None,
    processes: int,
    license_cache: StoragePath | None,
) -> tuple[dict, float]:
    """Curate the planned units into out_dir (without dedup); resumes an unfinished run of the same plan."""
    out_dir.mkdir(parents=True, exist_ok=True)
    reused = _prepare(out_dir, plan.key, plan.units, plan.num_shards)
    print(
        f"codemill curate: {len(plan.units)} units, {plan.num_shards} output shards "
        f"(~{plan.estimated_bytes / 1e6:.0f} MB estimated){'; ' + reused if reused else ''}",
        file=sys.stderr,
    )
    write_json(out_dir / "sources.json", {"sources": [spec_to_json(s) for s in plan.specs]})
    work = out_dir / WORK_DIR
    settings = _unit_settings(plan, out_dir, config, license_cache)

    driver = BeamDriver.from_args(pipeline_args, processes)
    with contextlib.ExitStack() as stack:
        if driver.processes > 1 and config.detect_licenses:
            # The pool's workers share one ScanCode index (one load, forks that share its pages)
            # instead of loading ~1.4 GB each.
            from codemill.curation.license_service import ScancodeService

            service = stack.enter_context(ScancodeService(forks=driver.processes))
            settings = dataclasses.replace(settings, license_service=service.address)
        local_work = not is_remote(work)
        if local_work:  # a bar of files that moves while units run (curation/unit_progress.py)
            stack.enter_context(FilesBar(Path(str(work))))
        pipeline = driver.pipeline()
        total_units = len(plan.units) if driver.single_process else None
        (
            pipeline
            | "Units" >> beam.Create(plan.units)
            | "Curate"
            >> CurateUnits(
                settings,
                total_units,
                driver.processes,
                redistribute=not driver.single_process,
                unit_bar=not local_work,
            )
            | "Merge" >> MergeShards(settings)
        )
        seconds = driver.timed(pipeline)

    # Every unit's result is its marker (a few KB): read back here rather than carried by the runner.
    finished = _finished_units(work)
    missing = [u.name for u in plan.units if u.name not in finished]
    if missing:
        raise IncompleteOutputError(
            f"the pipeline finished but units {', '.join(missing[:4])} under {work} "
            "left no result; rerun the same command to finish them"
        )
    results = [result_from_marker(unit_marker(str(work), u.name)) for u in plan.units]
    write_json(out_dir / "stats.json", merged_stats(results).to_json())
    stats = check_outputs(out_dir, plan.num_shards)
    _write_license_cache(out_dir / LICENSE_CACHE, work / LICENSE_CACHE, results)
    stats["sources"] = len(plan.specs)
    stats["layout"] = {
        "units": len(plan.units),
        "num_shards": plan.num_shards,
        "estimated_bytes": plan.estimated_bytes,
        "files_spilled": sum(r.spilled_records for r in results),
    }
    write_json(out_dir / "stats.json", stats)
    return stats, seconds


def _write_license_seeds(seeds: StoragePath, caches: list[StoragePath | None], work: StoragePath) -> None:
    """One file of every known detection for the workers to load: a given cache, the last finished
    run's, and those of this plan's units already done."""
    known: dict[str, list] = {}
    for path in caches:
        if path is not None:
            known.update({key: [d.spdx, d.detector, d.score] for key, d in read_license_cache(location(path)).items()})
    for marker in sorted(str(found) for found in (work / "units").glob("*.json")):
        known.update(read_json(marker).get("licenses", {}))
    write_json(seeds, {"detections": known})


def _write_license_cache(path: StoragePath, seeds: StoragePath, results: list[UnitResult]) -> None:
    known = read_json(seeds).get("detections", {})
    for result in results:
        known.update(result.licenses)
    write_json(
        path,
        {
            "detections": dict(sorted(known.items())),
            "about": "licence texts already detected, keyed by the sha1 of the text with its whitespace "
            "collapsed: [SPDX expression, detector (scancode | index), index match score]; "
            "give it to another curation with --license-cache",
        },
    )


def run_curation(
    specs: list[SourceSpec],
    out_dir: StoragePath | str,
    config: CurationConfig = CurationConfig(),
    pipeline_args: list[str] | None = None,
    processes: int = 1,
    license_cache: StoragePath | str | None = None,
) -> CurationResult:
    """Run the curation pipeline (and the dedup stage after it when `config.dedup` is set).
    `processes` > 1 curates units in a local process pool; it applies only to the default
    in-process runner (see pipelines/pooled.py). A run killed at any point and started again with
    the same arguments redoes only the units and shards it had not finished."""
    out_dir = resolved(out_dir)
    license_cache = location(license_cache) if license_cache is not None else None
    plan = plan_curation(specs, config)
    if config.dedup is None:
        stats, seconds = _curate(plan, out_dir, config, pipeline_args, processes, license_cache)
        write_success(out_dir, "curate", seconds, plan.num_shards, sources=len(specs), plan=plan.key)
        rmtree(out_dir / WORK_DIR)
        return CurationResult(out_dir, stats, seconds)

    from codemill.pipelines.dedup import run_dedup

    (out_dir / SUCCESS_MARKER).unlink(missing_ok=True)  # finished only once the dedup is
    staged = out_dir / STAGED
    if json_field(staged / SUCCESS_MARKER, "plan") == plan.key:
        curate_seconds = 0.0
        print(f"codemill curate: reusing the finished curation under {staged}; deduplicating it", file=sys.stderr)
    else:
        previous = out_dir / LICENSE_CACHE  # a finished earlier run's detections, as without dedup
        _, curate_seconds = _curate(
            plan, staged, config, pipeline_args, processes, license_cache or (previous if previous.exists() else None)
        )
        write_success(staged, "curate", curate_seconds, plan.num_shards, sources=len(specs), plan=plan.key)
        rmtree(staged / WORK_DIR)
    deduped = run_dedup(staged, out_dir, config.dedup, pipeline_args, processes)
    write_bytes(out_dir / LICENSE_CACHE, (staged / LICENSE_CACHE).read_bytes())
    stats = dict(deduped.stats, sources=len(specs))
    write_json(out_dir / "stats.json", stats)
    seconds = curate_seconds + deduped.seconds
    write_success(out_dir, "curate", seconds, plan.num_shards, sources=len(specs), plan=plan.key)
    rmtree(staged)
    return CurationResult(out_dir, stats, seconds)


register(FileRecord, SourceFile, RepoSummary, WorkUnit)
