"""The dedup stage as Apache Beam PTransforms, and its driver.

    input shards ─scan (kept records)─> entries (key, SWHID, rank, shard; no content) ─────────┐
                 └─> one MinHash signature per distinct SWHID ─bands─> LSH buckets              │
                      ─> candidate pairs ─texts of their members, read again from the shards─   │
                      ─Verify (Jaccard of shingle sets)─> edges                                  │
                      ─> OUT/_work/cc: connected components, a pipeline per round ─> labels ────┤
    entries + labels ─> clusters ─survivor─> decisions ─by shard─> each input shard rewritten
                                                                   to the same output shard

Exact dedup is the same path without the near part: a cluster is one content hash. File contents
cross no shuffle except the texts that verify a candidate pair (dedup/shards.py reads the shards).
Every step is keyed, so the outcome does not depend on the runner, the workers or the bundle order.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Iterator

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from codemill.curation.stats import StatsAccumulator
from codemill.dedup.components import bucket_pairs
from codemill.dedup.config import DedupConfig
from codemill.dedup.lsh import band_keys
from codemill.dedup.minhash import jaccard, shingle_sets
from codemill.dedup.ranking import Decision, DedupEntry, decide_cluster
from codemill.dedup.shards import (
    InputShard,
    fetch_texts,
    resume_shard,
    save_decisions,
    scan_shard,
    shard_done,
)
from codemill.dedup.stats import DedupStats, decision_events
from codemill.jsonl import json_field, read_json
from codemill.pipelines.common import (
    ProgressBar,
    StatsCombine,
    default_pipeline_options,
    is_single_process,
    register,
    tagged,
    write_json,
)
from codemill.pipelines.components import (
    ROUND_MARKER,
    NotConvergedError,  # noqa: F401 (the command line catches it from here)
    WriteEdges,
    connected_components,
    round_dir,
)
from codemill.pipelines.components import labels as component_labels
from codemill.pipelines.pooled import PooledDoFn
from codemill.settings import stage_key
from codemill.shards import parquet_file, shard_paths
from codemill.storage import StoragePath, copy_file, copy_tree, location, resolved, rmtree

log = logging.getLogger(__name__)

METRICS_NAMESPACE = "codemill.dedup"


def _bands(sketch: tuple[str, Any], bands: int, rows: int) -> Iterator[tuple[bytes, str]]:
    swhid, signature = sketch
    for key in band_keys(signature, bands, rows):
        yield key, swhid


def _any_one(values: Iterable):
    """Combiner for values known to be equal (the signatures of one SWHID's copies)."""
    return next(iter(values))


class PackedBands(beam.DoFn):
    """Band keys packed per partition of the key space: one element per partition and bundle
    instead of one per (document, band). The in-process runner pays ~10 us per element and stage,
    and 25 band keys per document are most of a dedup run's elements; packing cut that (see
    ARCHITECTURE.md). A partition group then holds ~`entries per partition` band entries."""

    def __init__(self, bands: int, rows: int, partitions: int) -> None:
        self.bands, self.rows, self.partitions = bands, rows, partitions

    def start_bundle(self) -> None:
        self.packed: dict[int, list] = {}

    def process(self, sketch):
        swhid, signature = sketch
        for key in band_keys(signature, self.bands, self.rows):
            partition = int.from_bytes(key[-8:], "big") % self.partitions
            self.packed.setdefault(partition, []).append((key, swhid))

    def finish_bundle(self):
        for partition, entries in self.packed.items():
            yield WindowedValue((partition, entries), MIN_TIMESTAMP, (GlobalWindow(),))
        self.packed = {}


def _packed_bucket_pairs(grouped: tuple[int, Iterable[list]], sort_limit: int) -> Iterator[tuple]:
    buckets: dict[bytes, list] = {}
    for entries in grouped[1]:
        for key, swhid in entries:
            buckets.setdefault(key, []).append(swhid)
    for members in buckets.values():
        if len(members) > 1:
            yield from bucket_pairs(members, sort_limit)


def _roles(pair: tuple[str, str]) -> Iterator[tuple[str, tuple[str, str]]]:
    u, v = pair
    yield u, ("ship_to", v)
    yield v, ("needs_own", u)


def _ship_texts(joined: tuple[str, dict]) -> Iterator[tuple[str, tuple]]:
    """Group of one content with its roles in the candidate pairs: ships its text to each partner
    that checks it, and to itself once if it checks partners. Contents in no pair go no further,
    so the second join carries only texts that take part in a pair."""
    node, groups = joined
    text = next(iter(groups["content"]), None)
    if text is None:
        return
    needs_own = False
    for role, other in groups["roles"]:
        if role == "ship_to":
            yield other, (node, text)
        else:
            needs_own = True
    if needs_own:
        yield node, (None, text)


def _verify(grouped: tuple[str, Iterable[tuple]], config: DedupConfig) -> Iterator[tuple]:
    """Content v with its own text (partner None) and its partners' texts: yields ('edge', (u, v))
    for every pair whose shingle-set Jaccard reaches the threshold and ('event', ...) for the stats."""
    v, shipped = grouped
    own, partners = None, []
    for partner, text in shipped:
        if partner is None:
            own = text
        else:
            partners.append((partner, text))
    if own is None or not partners:
        return
    partners.sort()
    sets = shingle_sets([own] + [text for _, text in partners], config.ngram)
    for (u, _), u_set in zip(partners, sets[1:], strict=False):
        ok = jaccard(sets[0], u_set) >= config.threshold
        beam.metrics.Metrics.counter(METRICS_NAMESPACE, "verified_pairs" if ok else "rejected_pairs").inc()
        yield ("event", ("candidate", ok))
        if ok:
            yield ("edge", (u, v))


class VerifiedPairs(beam.PTransform):
    """Candidate pairs (u < v) -> pairs whose shingle sets reach the threshold, plus stats events.
    One join brings each text to its roles in the pairs; a second grouping brings each pair's
    first text to the second one's group, where every text is shingled once per group. `contents`
    may hold several copies of a text (the first is used)."""

    def __init__(self, contents, config: DedupConfig) -> None:
        super().__init__()
        self.contents = contents
        self.config = config

    def expand(self, pairs):
        checked = (
            {"content": self.contents, "roles": pairs | "Roles" >> beam.FlatMap(_roles)}
            | "JoinTexts" >> beam.CoGroupByKey()
            | "ShipTexts" >> beam.FlatMap(_ship_texts)
            | "GroupPairs" >> beam.GroupByKey()
            | "Jaccard" >> beam.FlatMap(_verify, self.config)
        )
        edges = checked | "Edges" >> beam.FlatMap(tagged, "edge")
        events = checked | "Events" >> beam.FlatMap(tagged, "event")
        return edges, events


def _assign(joined: tuple[str, dict]) -> Iterator[tuple[str, DedupEntry]]:
    swhid, groups = joined
    labels = list(groups["labels"])
    label = labels[0] if labels else swhid
    for entry in groups["entries"]:
        yield label, entry


def _decide(grouped: tuple[str, Iterable[DedupEntry]]) -> Iterator[tuple]:
    """One cluster -> ('decision', (key, Decision)) per member and ('event', ...) for the stats."""
    cluster, entries = grouped
    size = 0
    for entry, decision in decide_cluster(cluster, entries):
        size += 1
        yield "decision", (entry.shard, (entry.key, decision))
        for event in decision_events(entry, decision):
            yield "event", event
    if size > 1:
        yield "event", ("cluster", size)


class FetchTexts(beam.DoFn):
    """An input shard -> (SWHID, text) of its contents that are in a candidate pair."""

    def process(self, shard: InputShard, wanted: list[str]) -> Iterator[tuple[str, str]]:
        yield from fetch_texts(shard, set(wanted))


class CandidateEdges(beam.PTransform):
    """Input shards -> the verified near-duplicate edges (u < v), written as the components' round 0
    under `edges_dir`. Returns the stats events (contents sketched, candidate pairs checked). Only
    signatures, band keys and pairs cross the shuffles; texts travel only to verify a pair."""

    def __init__(
        self,
        config: DedupConfig,
        edges_dir: StoragePath,
        parts: int,
        processes: int = 1,
        lsh_partitions: int | None = None,
    ) -> None:
        """`lsh_partitions`: None groups by band key (memory per group = one bucket, streamed; for
        cluster runners); a number packs band keys into that many groups (the local runner)."""
        super().__init__()
        self.config, self.edges_dir, self.parts = config, edges_dir, parts
        self.processes, self.lsh_partitions = processes, lsh_partitions

    def expand(self, shards):
        config = self.config
        bands, rows = config.bands_rows
        scanned = shards | "Scan" >> beam.ParDo(
            PooledDoFn(scan_shard, (config.minhash, config.batch_size), self.processes, batch_size=1)
        )
        # Each shard sketches its distinct texts where it lies; copies in other shards are sketched
        # again (cheaper than a shuffle of every text to drop them first), then made distinct.
        sketches = (
            scanned | "Sketches" >> beam.FlatMap(tagged, "sketch") | "DistinctSketches" >> beam.CombinePerKey(_any_one)
        )
        signed = sketches | "HasShingles" >> beam.Filter(lambda s: s[1] is not None)
        sketch_events = sketches | "SketchEvents" >> beam.Map(
            lambda s: ("too_short",) if s[1] is None else ("sketched",)
        )
        if self.lsh_partitions is None:
            pairs = (
                signed
                | "BandKeys" >> beam.FlatMap(_bands, bands, rows)
                | "Buckets" >> beam.GroupByKey()
                | "BucketPairs" >> beam.FlatMap(lambda b: bucket_pairs(b[1], config.bucket_sort_limit))
            )
        else:
            pairs = (
                signed
                | "PackedBandKeys" >> beam.ParDo(PackedBands(bands, rows, self.lsh_partitions))
                | "Partitions" >> beam.GroupByKey()
                | "PartitionPairs" >> beam.FlatMap(_packed_bucket_pairs, config.bucket_sort_limit)
            )
        pairs = pairs | "DistinctPairs" >> beam.Distinct()
        if config.verify:
            # Only the texts of contents in a candidate pair are read again, from their shards.
            wanted = pairs | "PairMembers" >> beam.FlatMap(lambda pair: pair) | "DistinctMembers" >> beam.Distinct()
            contents = shards | "FetchTexts" >> beam.ParDo(FetchTexts(), beam.pvalue.AsList(wanted))
            edges, pair_events = pairs | "Verify" >> VerifiedPairs(contents, config)
        else:
            edges = pairs
            pair_events = pairs | "Unverified" >> beam.Map(lambda _: ("candidate", True))
        edges | "WriteEdges" >> WriteEdges(self.edges_dir, self.parts)
        return (sketch_events, pair_events) | "NearEvents" >> beam.Flatten()


class DecideClusters(beam.PTransform):
    """Input shards (+ the converged components, for near dedup) -> each shard's decisions saved
    under `decisions_dir`. Returns the stats events (files, clusters, what was removed)."""

    def __init__(
        self, config: DedupConfig, decisions_dir: str, components: StoragePath | None, processes: int = 1
    ) -> None:
        super().__init__()
        self.config, self.decisions_dir, self.components, self.processes = config, decisions_dir, components, processes

    def expand(self, shards):
        entries = (
            shards
            | "ScanEntries"
            >> beam.ParDo(PooledDoFn(scan_shard, (None, self.config.batch_size), self.processes, batch_size=1))
            | "Entries" >> beam.FlatMap(tagged, "entry")
        )
        if self.components is not None:
            clusters = component_labels(shards.pipeline, self.components)
        else:
            clusters = shards.pipeline | "NoLabels" >> beam.Create([])
        decided = (
            {"entries": entries, "labels": clusters}
            | "JoinLabels" >> beam.CoGroupByKey()
            | "Assign" >> beam.FlatMap(_assign)
            | "GroupClusters" >> beam.GroupByKey()
            | "Decide" >> beam.FlatMap(_decide)
        )
        decisions = decided | "Decisions" >> beam.FlatMap(tagged, "decision")
        # Each shard's decisions go back to it: the shard is rewritten where it is read.
        directory = self.decisions_dir
        (
            {"shard": shards | "KeyShard" >> beam.Map(lambda shard: (shard.index, shard)), "decisions": decisions}
            | "JoinDecisions" >> beam.CoGroupByKey()
            | "SaveDecisions"
            >> beam.MapTuple(lambda index, groups: save_decisions(index, list(groups["decisions"]), directory))
        )
        return decided | "DecisionEvents" >> beam.FlatMap(tagged, "event")


register(DedupEntry, Decision)
DEDUP_REPORT = "dedup.json"
WORK_DIR = "_work"  # an unfinished run's edges, component rounds, decisions and rewritten-shard markers


def _stats_pipeline(pipeline_args, shards: list[InputShard], transform: beam.PTransform, target: StoragePath):
    """Run `transform` over the shards; its stats events, folded, go to `target` (written last)."""
    options, runner = default_pipeline_options(pipeline_args)
    pipeline = beam.Pipeline(runner=runner, options=options)
    (
        pipeline
        | "InputShards" >> beam.Create(shards)
        | "Work" >> transform
        | "Stats" >> beam.CombineGlobally(StatsCombine(DedupStats))
        | "WriteStats" >> beam.Map(lambda stats: write_json(target, stats))
    )
    pipeline.run().wait_until_finish()
    if not location(target).exists():
        from codemill.pipelines.outputs import IncompleteOutputError

        raise IncompleteOutputError(f"the dedup pipeline finished without writing {target}; rerun the same command")


def _decisions_and_report(
    work: StoragePath, shards: list[InputShard], config: DedupConfig, pipeline_args, processes: int, num_files: int
) -> dict:
    """Edges, components and decisions, each step resumable; returns the dedup report."""
    options, runner = default_pipeline_options(pipeline_args)
    local = is_single_process(options, runner)
    processes = processes if local else 1
    cc_report = None
    parts = max(1, len(shards))
    if config.mode == "near":
        edge_stats = work / "edge-stats.json"
        if not edge_stats.exists():
            lsh = config.lsh_partitions_for(num_files) if local else None
            _stats_pipeline(
                pipeline_args,
                shards,
                CandidateEdges(config, round_dir(work / "cc", 0), parts, processes, lsh),
                edge_stats,
            )
        cc_report = connected_components(work / "cc", parts, pipeline_args, config.rounds_for(num_files))
    decision_stats = work / "decision-stats.json"
    if not decision_stats.exists():
        final = location(cc_report["final"]) if cc_report else None
        _stats_pipeline(
            pipeline_args, shards, DecideClusters(config, str(work / "decisions"), final, processes), decision_stats
        )
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
            raise ValueError(
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
    from codemill.pipelines.outputs import SUCCESS_MARKER, check_outputs, clear_outputs, write_success

    in_dir, out_dir = resolved(in_dir), resolved(out_dir)
    if not (in_dir / SUCCESS_MARKER).exists():
        raise FileNotFoundError(
            f"{in_dir} is not a finished curation output (no {SUCCESS_MARKER}); run `codemill curate` into it first"
        )
    if in_dir == out_dir:
        raise ValueError("codemill dedup: IN and OUT must be different directories")
    shards = input_shards(in_dir)
    num_shards = len(shards)
    num_files = sum(parquet_file(p).metadata.num_rows for p in shard_paths(in_dir / "manifest"))
    key = stage_key("dedup", (in_dir / SUCCESS_MARKER).read_text(), str(in_dir), config)
    work = out_dir / WORK_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    decided = work / "decided.json"
    if json_field(work / "plan.json", "key") == key:
        done = len(list((work / "shards").glob("*.json")))
        rounds = len(list((work / "cc").glob(f"round-*/{ROUND_MARKER}")))
        steps = [
            name
            for name, done_ in (
                ("the verified edges", (work / "edge-stats.json").exists()),
                (f"{rounds} component rounds", rounds > 0),
                ("the decisions", decided.exists()),
            )
            if done_
        ]
        print(
            f"codemill dedup: resuming an unfinished run: {', '.join(steps + [''])}{done} of {num_shards} "
            "rewritten shards are reused",
            file=sys.stderr,
        )
    else:
        clear_outputs(out_dir)
        rmtree(work)
        work.mkdir(parents=True)
        # The sources and trees do not change: `codemill manifest verify OUT` re-reads the same sources.
        copy_tree(in_dir / "trees", out_dir / "trees")
        copy_file(in_dir / "sources.json", out_dir / "sources.json")
        write_json(work / "plan.json", {"key": key})  # last: the set-up is complete

    options, runner = default_pipeline_options(pipeline_args)
    started = time.monotonic()
    # 1. Every cluster's decisions, saved per shard: the verified edges, the connected components
    #    (a round at a time, until one changes nothing) and the decisions each resume on their own.
    if not decided.exists():
        write_json(
            out_dir / DEDUP_REPORT, _decisions_and_report(work, shards, config, pipeline_args, processes, num_files)
        )
        write_json(decided, {})
    report = read_json(out_dir / DEDUP_REPORT)
    # 2. Each shard rewritten from its decisions, a shard at a time; finished shards are kept.
    finished = {p.name for p in (work / "shards").glob("*.json")}  # one listing, not a request per shard
    pending = [shard for shard in shards if shard_done(str(work), shard.index).name not in finished]
    if pending:
        pipeline = beam.Pipeline(runner=runner, options=options)
        (
            pipeline
            | "PendingShards" >> beam.Create(pending)
            | "Spread" >> beam.Reshuffle()
            | "Rewrite" >> beam.Map(resume_shard, str(work), str(out_dir))
            | "RewriteProgress" >> beam.ParDo(ProgressBar(len(pending), "dedup: shards written", " shards"))
        )
        pipeline.run().wait_until_finish()
    seconds = time.monotonic() - started
    totals = StatsAccumulator()
    for index in range(num_shards):
        totals.merge(StatsAccumulator.from_json(read_json(shard_done(str(work), index))))
    write_json(out_dir / "stats.json", totals.to_json())
    stats = check_outputs(out_dir, num_shards)
    stats["dedup"] = report["totals"]
    write_json(out_dir / "stats.json", stats)
    write_success(out_dir, "dedup", seconds, num_shards, input=str(in_dir))
    rmtree(work)
    return DedupResult(out_dir, stats, report, seconds)
