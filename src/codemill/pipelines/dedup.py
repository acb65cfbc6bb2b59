"""`codemill dedup IN OUT`: the dedup stage's driver. Its steps (the verified edges, the connected
components a round at a time, the decisions, each rewritten shard) each resume on their own; the
transforms and the dataflow are in pipelines/dedup_transforms.py."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import asdict, dataclass

import apache_beam as beam

from codemill.curation.stats import StatsAccumulator
from codemill.dedup.config import DedupConfig
from codemill.dedup.shards import (
    InputShard,
    resume_shard,
    shard_done,
)
from codemill.dedup.stats import DedupStats
from codemill.errors import UserError
from codemill.jsonl import json_field, read_json
from codemill.pipelines.common import (
    ProgressBar,
    StatsCombine,
    write_json,
)
from codemill.pipelines.components import (
    ROUND_MARKER,
    NotConvergedError,  # noqa: F401 (the command line catches it from here)
    connected_components,
    round_dir,
)
from codemill.pipelines.dedup_transforms import CandidateEdges, DecideClusters
from codemill.pipelines.driver import BeamDriver, require_finished
from codemill.pipelines.outputs import (
    SUCCESS_MARKER,
    IncompleteOutputError,
    InputLayoutError,
    check_outputs,
    clear_outputs,
    write_success,
)
from codemill.settings import stage_key
from codemill.shards import parquet_file, shard_paths
from codemill.storage import StoragePath, copy_file, copy_tree, location, resolved, rmtree

log = logging.getLogger(__name__)


DEDUP_REPORT = "dedup.json"
DECIDED = "decided.json"  # in WORK_DIR: every decision is saved
WORK_DIR = "_work"  # an unfinished run's edges, component rounds, decisions and rewritten-shard markers


def _stats_pipeline(driver: BeamDriver, shards: list[InputShard], transform: beam.PTransform, target: StoragePath):
    """Run `transform` over the shards; its stats events, folded, go to `target` (written last)."""
    pipeline = driver.pipeline()
    (
        pipeline
        | "InputShards" >> beam.Create(shards)
        | "Work" >> transform
        | "Stats" >> beam.CombineGlobally(StatsCombine(DedupStats))
        | "WriteStats" >> beam.Map(lambda stats: write_json(target, stats))
    )
    driver.run(pipeline)
    if not location(target).exists():
        raise IncompleteOutputError(f"the dedup pipeline finished without writing {target}; rerun the same command")


def _decisions_and_report(
    work: StoragePath, shards: list[InputShard], config: DedupConfig, driver: BeamDriver, pipeline_args, num_files: int
) -> dict:
    """Edges, components and decisions, each step resumable; returns the dedup report."""
    cc_report = None
    parts = max(1, len(shards))
    if config.mode == "near":
        edge_stats = work / "edge-stats.json"
        if not edge_stats.exists():
            lsh = config.lsh_partitions_for(num_files) if driver.single_process else None
            edges = CandidateEdges(config, round_dir(work / "cc", 0), parts, driver.processes, lsh)
            _stats_pipeline(driver, shards, edges, edge_stats)
        cc_report = connected_components(work / "cc", parts, pipeline_args, config.rounds_for(num_files))
    decision_stats = work / "decision-stats.json"
    if not decision_stats.exists():
        final = location(cc_report["final"]) if cc_report else None
        decide = DecideClusters(config, str(work / "decisions"), final, driver.processes)
        _stats_pipeline(driver, shards, decide, decision_stats)
    stats = DedupStats.from_json(read_json(decision_stats))
    if config.mode == "near":
        stats.merge(DedupStats.from_json(read_json(work / "edge-stats.json")))
    report = stats.to_json()
    bands, rows = config.bands_rows
    report["config"] = {**asdict(config), "bands": bands, "rows": rows}
    if cc_report is not None:
        report["connected_components"] = {
            key: cc_report[key] for key in ("rounds", "edges_per_round", "changes_per_round")
        }
        log.info(
            "connected components: settled after %d rounds; edges per round %s",
            cc_report["rounds"],
            cc_report["edges_per_round"],
        )
    return report


def input_shards(in_dir: StoragePath) -> list[InputShard]:
    """The shards of a finished curation (or dedup) output, each by its index."""
    from codemill.shards import parse_shard_name

    tables = {name: shard_paths(location(in_dir) / name) for name in ("data", "dropped", "manifest")}
    n = len(tables["manifest"])
    for name, paths in tables.items():
        if len(paths) != n or any(parse_shard_name(str(p)) != (i, n) for i, p in enumerate(paths)):
            raise InputLayoutError(
                f"{in_dir}/{name}: expected shards part-00000-of-{n:05d} ... part-{n - 1:05d}-of-{n:05d}, "
                f"found {[p.name for p in paths][:4]}; rerun the stage that wrote {in_dir}"
            )
    return [InputShard(i, n, str(tables["data"][i]), str(tables["dropped"][i])) for i in range(n)]


@dataclass
class DedupResult:
    out_dir: StoragePath
    stats: dict
    report: dict
    seconds: float


def _prepare(in_dir: StoragePath, out_dir: StoragePath, key: str, num_shards: int) -> None:
    """Resume the unfinished run of the same key in out_dir (saying what is reused), or set up a
    fresh one: outputs cleared, the unchanged sources and trees copied, the plan written last."""
    work = out_dir / WORK_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    if json_field(work / "plan.json", "key") == key:
        done = len(list((work / "shards").glob("*.json")))
        rounds = len(list((work / "cc").glob(f"round-*/{ROUND_MARKER}")))
        steps = [
            name
            for name, done_ in (
                ("the verified edges", (work / "edge-stats.json").exists()),
                (f"{rounds} component rounds", rounds > 0),
                ("the decisions", (work / DECIDED).exists()),
            )
            if done_
        ]
        print(
            f"codemill dedup: resuming an unfinished run: {', '.join(steps + [''])}{done} of {num_shards} "
            "rewritten shards are reused",
            file=sys.stderr,
        )
        return
    clear_outputs(out_dir)
    rmtree(work)
    work.mkdir(parents=True)
    # The sources and trees do not change: `codemill manifest verify OUT` re-reads the same sources.
    copy_tree(in_dir / "trees", out_dir / "trees")
    copy_file(in_dir / "sources.json", out_dir / "sources.json")
    write_json(work / "plan.json", {"key": key})  # last: the set-up is complete


def _rewrite_shards(driver: BeamDriver, shards: list[InputShard], work: StoragePath, out_dir: StoragePath) -> None:
    """Each shard rewritten from its decisions, a shard at a time; finished shards are kept."""
    finished = {p.name for p in (work / "shards").glob("*.json")}  # one listing, not a request per shard
    pending = [shard for shard in shards if shard_done(str(work), shard.index).name not in finished]
    if not pending:
        return
    pipeline = driver.pipeline()
    (
        pipeline
        | "PendingShards" >> beam.Create(pending)
        | "Spread" >> beam.Reshuffle()
        | "Rewrite" >> beam.Map(resume_shard, str(work), str(out_dir))
        | "RewriteProgress" >> beam.ParDo(ProgressBar(len(pending), "dedup: shards written", " shards"))
    )
    driver.run(pipeline)


def run_dedup(
    in_dir: StoragePath | str,
    out_dir: StoragePath | str,
    config: DedupConfig = DedupConfig(),
    pipeline_args: list[str] | None = None,
    processes: int = 1,
) -> DedupResult:
    """`codemill dedup IN OUT`: read a finished curation output, write the same layout (data,
    dropped, manifest, trees, stats.json, sources.json) plus dedup.json, with duplicates dropped.
    A run killed at any point and started again with the same arguments redoes only what it had
    not finished: the edges, each component round, the decisions, each rewritten shard."""
    in_dir, out_dir = resolved(in_dir), resolved(out_dir)
    require_finished(in_dir, "curation", "run `codemill curate` into it first")
    if in_dir == out_dir:
        raise UserError(f"IN and OUT are the same folder ({in_dir}); give OUT another folder")
    shards = input_shards(in_dir)
    num_files = sum(parquet_file(p).metadata.num_rows for p in shard_paths(in_dir / "manifest"))
    key = stage_key("dedup", (in_dir / SUCCESS_MARKER).read_text(), str(in_dir), config)
    _prepare(in_dir, out_dir, key, len(shards))
    work = out_dir / WORK_DIR
    driver = BeamDriver.from_args(pipeline_args, processes)
    started = time.monotonic()
    if not (work / DECIDED).exists():  # every cluster's decisions, saved per shard
        report = _decisions_and_report(work, shards, config, driver, pipeline_args, num_files)
        write_json(out_dir / DEDUP_REPORT, report)
        write_json(work / DECIDED, {})
    report = read_json(out_dir / DEDUP_REPORT)
    _rewrite_shards(driver, shards, work, out_dir)
    seconds = time.monotonic() - started
    totals = StatsAccumulator()
    for index in range(len(shards)):
        totals.merge(StatsAccumulator.from_json(read_json(shard_done(str(work), index))))
    write_json(out_dir / "stats.json", totals.to_json())
    stats = check_outputs(out_dir, len(shards))
    stats["dedup"] = report["totals"]
    write_json(out_dir / "stats.json", stats)
    write_success(out_dir, "dedup", seconds, len(shards), input=str(in_dir))
    rmtree(work)
    return DedupResult(out_dir, stats, report, seconds)
