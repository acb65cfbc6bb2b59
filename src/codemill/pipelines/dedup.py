"""The dedup stage as Apache Beam PTransforms, and its driver.

    records ─(kept, with a SWHID)─> entries (no content) ──────────────────────────┐
          └─> (SWHID, text) ─Sketch─> one signature per SWHID ─bands─> LSH buckets  │
               ─> candidate pairs ─Verify (Jaccard of shingle sets)─> edges         │
               ─> ConnectedComponents (large-star/small-star rounds) ─> labels ─────┤
    entries + labels ─> clusters ─survivor─> decisions ─join─> records (dup_cluster, drop_reason)

Exact dedup is the same path without the near part: a cluster is one content hash. Every step is
keyed, so the outcome does not depend on the runner, the workers or the bundle order.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterable, Iterator

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from codemill.dedup.components import bucket_pairs, large_star, small_star
from codemill.dedup.config import DedupConfig
from codemill.dedup.lsh import band_keys
from codemill.dedup.minhash import jaccard, shingle_sets, sketch_batch
from codemill.dedup.ranking import Decision, DedupEntry, decide_cluster
from codemill.dedup.stats import DedupStats, decision_events
from codemill.pipelines.common import (
    ProgressBar,
    StatsCombine,
    default_pipeline_options,
    is_single_process,
    read_records,
    register,
    tagged,
    write_json,
)
from codemill.pipelines.pooled import PooledDoFn
from codemill.records import FileRecord, record_key

log = logging.getLogger(__name__)

METRICS_NAMESPACE = "codemill.dedup"


def participates(record: FileRecord) -> bool:
    """Only kept records with content take part; dropped ones pass through unchanged."""
    return record.kept and record.swhid is not None and record.content is not None


def _bands(sketch: tuple[str, object], bands: int, rows: int) -> Iterator[tuple[bytes, str]]:
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
            yield WindowedValue((partition, entries), MIN_TIMESTAMP, [GlobalWindow()])
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
    for (u, _), u_set in zip(partners, sets[1:]):
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


def _undirected(edge: tuple) -> Iterator[tuple]:
    u, v = edge
    yield u, v
    yield v, u


def _large_star_step(grouped: tuple, round_index: int) -> Iterator[tuple]:
    """Emits each new edge (m, v) keyed by its larger end v, ready for the small-star grouping."""
    node, neighbours = grouped
    edges, changed = large_star(node, neighbours)
    counter = beam.metrics.Metrics.counter
    counter(METRICS_NAMESPACE, f"cc_round_{round_index:02d}_edges").inc(sum(1 for v in neighbours if v > node))
    counter(METRICS_NAMESPACE, f"cc_round_{round_index:02d}_changes").inc(changed)
    for smaller, larger in edges:
        yield larger, smaller


def _small_star_step(grouped: tuple, round_index: int) -> Iterator[tuple]:
    """Emits each new edge as a key, so one GroupByKey makes the round's edges distinct."""
    node, smaller = grouped
    edges, changed = small_star(node, smaller)
    beam.metrics.Metrics.counter(METRICS_NAMESPACE, f"cc_round_{round_index:02d}_changes").inc(changed)
    for edge in edges:
        yield edge, None


def _distinct_undirected(grouped: tuple) -> Iterator[tuple]:
    yield from _undirected(grouped[0])


class ConnectedComponents(beam.PTransform):
    """Edges (u < v) -> (node, label) for every node on an edge; the label is the smallest node
    of its component. `rounds` alternating large-star/small-star rounds are unrolled into the
    pipeline (Beam has no loops), three shuffles each: by node (large-star), by larger end
    (small-star), by edge (distinct). Each round's edges and changes are counted in the run's
    metrics and `convergence()` checks afterwards that the last round changed nothing."""

    def __init__(self, rounds: int) -> None:
        super().__init__()
        self.rounds = rounds

    def expand(self, edges):
        adjacency = edges | "Undirected" >> beam.FlatMap(_undirected)
        for r in range(self.rounds):
            distinct = (
                adjacency
                | f"ByNode{r}" >> beam.GroupByKey()
                | f"LargeStar{r}" >> beam.FlatMap(_large_star_step, r)
                | f"ByLargerEnd{r}" >> beam.GroupByKey()
                | f"SmallStar{r}" >> beam.FlatMap(_small_star_step, r)
                | f"ByEdge{r}" >> beam.GroupByKey()
            )
            if r + 1 < self.rounds:
                adjacency = distinct | f"Undirected{r}" >> beam.FlatMap(_distinct_undirected)
        return (
            distinct
            | "Labels" >> beam.FlatMap(lambda grouped: [(grouped[0][1], grouped[0][0]), (grouped[0][0], grouped[0][0])])
            | "Label" >> beam.CombinePerKey(min)
        )


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
        yield "decision", (entry.key, decision)
        for event in decision_events(entry, decision):
            yield "event", event
    if size > 1:
        yield "event", ("cluster", size)


def _apply(joined: tuple[str, dict]) -> Iterator[FileRecord]:
    _, groups = joined
    decisions = list(groups["decisions"])
    for record in groups["records"]:
        if decisions:
            decision: Decision = decisions[0]
            record = replace(record, dup_cluster=decision.cluster)
            if decision.drop_reason is not None:
                record = record.drop(decision.drop_reason)
        yield record


class Dedup(beam.PTransform):
    """FileRecords -> {'records': the same records with dup_cluster set and duplicates dropped,
    'stats': a one-element PCollection of the dedup statistics}."""

    def __init__(self, config: DedupConfig, rounds: int, processes: int = 1, lsh_partitions: int | None = None) -> None:
        """`lsh_partitions`: None groups by band key (memory per group = one bucket, streamed; for
        cluster runners); a number packs band keys into that many groups (the local runner)."""
        super().__init__()
        self.config = config
        self.rounds = rounds
        self.processes = processes
        self.lsh_partitions = lsh_partitions

    def expand(self, records):
        config = self.config
        active = records | "Participates" >> beam.Filter(participates)
        passive = records | "PassesThrough" >> beam.Filter(lambda r: not participates(r))
        entries = active | "Entries" >> beam.Map(lambda r: (r.swhid, DedupEntry.of(r)))
        events = []
        if config.mode == "near":
            labels, near_events = self._near_labels(active)
            events.append(near_events)
        else:
            labels = records.pipeline | "NoLabels" >> beam.Create([])
        decided = (
            {"entries": entries, "labels": labels}
            | "JoinLabels" >> beam.CoGroupByKey()
            | "Assign" >> beam.FlatMap(_assign)
            | "GroupClusters" >> beam.GroupByKey()
            | "Decide" >> beam.FlatMap(_decide)
        )
        decisions = decided | "Decisions" >> beam.FlatMap(tagged, "decision")
        events.append(decided | "DecisionEvents" >> beam.FlatMap(tagged, "event"))
        updated = (
            {"records": active | "KeyRecords" >> beam.Map(lambda r: (record_key(r), r)), "decisions": decisions}
            | "JoinDecisions" >> beam.CoGroupByKey()
            | "Apply" >> beam.FlatMap(_apply)
        )
        stats = (
            tuple(events) | "AllEvents" >> beam.Flatten()
            | "Stats" >> beam.CombineGlobally(StatsCombine(DedupStats))
        )
        return {"records": (updated, passive) | "Merge" >> beam.Flatten(), "stats": stats}

    def _near_labels(self, active):
        config = self.config
        bands, rows = config.bands_rows
        # Records are sketched where they are (copies of a text are sketched again: cheaper than
        # a shuffle of every text to drop them first) and the signatures made distinct per SWHID.
        contents = active | "Contents" >> beam.Map(lambda r: (r.swhid, r.content))
        sketches = (
            contents
            | "Batch" >> beam.BatchElements(min_batch_size=config.batch_size, max_batch_size=config.batch_size)
            | "Sketch" >> beam.ParDo(PooledDoFn(sketch_batch, (config.minhash,), self.processes, batch_size=1))
            | "SketchProgress" >> beam.ParDo(ProgressBar(None, "dedup: signatures", " files", position=2))
            | "DistinctSketches" >> beam.CombinePerKey(_any_one)
        )
        signed = sketches | "HasShingles" >> beam.Filter(lambda s: s[1] is not None)
        sketch_events = sketches | "SketchEvents" >> beam.Map(
            lambda s: ("too_short",) if s[1] is None else ("sketched",))
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
            edges, pair_events = pairs | "Verify" >> VerifiedPairs(contents, config)
        else:
            edges = pairs
            pair_events = pairs | "Unverified" >> beam.Map(lambda _: ("candidate", True))
        labels = edges | "Components" >> ConnectedComponents(self.rounds)
        events = (sketch_events, pair_events) | "NearEvents" >> beam.Flatten()
        return labels, events


register(DedupEntry, Decision)


class NotConvergedError(RuntimeError):
    """The connected components did not settle within the unrolled rounds."""


def convergence(result, rounds: int) -> dict:
    """Rounds and edges per round from a finished run's metrics; raises NotConvergedError when the
    last round still changed edges (the labels would be incomplete)."""
    edges, changes = [0] * rounds, [0] * rounds
    for counter in result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))["counters"]:
        name = counter.key.metric.name
        if name.startswith("cc_round_"):
            index = int(name.split("_")[2])
            target = edges if name.endswith("_edges") else changes
            target[index] += counter.committed or 0
    settled = next((r for r, c in enumerate(changes) if c == 0), None)
    report = {"rounds_unrolled": rounds, "converged_after_rounds": None if settled is None else settled + 1,
              "edges_per_round": edges, "changes_per_round": changes}
    if rounds and changes[-1] != 0:
        raise NotConvergedError(
            f"connected components still changed {changes[-1]} edges in round {rounds} of {rounds}; "
            f"rerun with a larger dedup cc_rounds (e.g. {2 * rounds}). Edges per round: {edges}")
    return report


DEDUP_REPORT = "dedup.json"


class DedupStage(beam.PTransform):
    """Dedup inside a larger pipeline: returns the records; the statistics go to
    out_dir/dedup.json (completed by `finish_dedup_report` once the run is over)."""

    def __init__(self, config: DedupConfig, rounds: int, out_dir: str, processes: int = 1,
                 lsh_partitions: int | None = None) -> None:
        super().__init__()
        self.dedup = Dedup(config, rounds, processes, lsh_partitions)
        self.out_dir = out_dir

    def expand(self, records):
        outputs = records | "Dedup" >> self.dedup
        report = Path(self.out_dir) / DEDUP_REPORT
        outputs["stats"] | "WriteDedupStats" >> beam.Map(lambda stats: write_json(report, stats))
        return outputs["records"]


def finish_dedup_report(out_dir: Path, result, config: DedupConfig, rounds: int) -> dict:
    """Adds the parameters and the connected-component rounds to dedup.json; returns the report."""
    path = Path(out_dir) / DEDUP_REPORT
    report = json.loads(path.read_text())
    bands, rows = config.bands_rows
    report["config"] = {**asdict(config), "bands": bands, "rows": rows}
    if config.mode == "near":
        report["connected_components"] = convergence(result, rounds)
        cc = report["connected_components"]
        log.info("connected components: %s rounds unrolled, settled after %s; edges per round %s",
                 rounds, cc["converged_after_rounds"], cc["edges_per_round"])
    write_json(path, report)
    return report


@dataclass
class DedupResult:
    out_dir: Path
    stats: dict
    report: dict
    seconds: float


def run_dedup(in_dir: Path, out_dir: Path, config: DedupConfig = DedupConfig(),
              pipeline_args: list[str] | None = None, processes: int = 1) -> DedupResult:
    """`codemill dedup IN OUT`: read a finished curation output, write the same layout (data,
    dropped, manifest, trees, stats.json, sources.json) plus dedup.json, with duplicates dropped."""
    from codemill.curation.stats import StatsAccumulator
    from codemill.pipelines.outputs import (
        RECORD_TABLES,
        SUCCESS_MARKER,
        WriteShards,
        check_outputs,
        clear_outputs,
        write_success,
    )
    from codemill.shards import shard_paths

    in_dir, out_dir = Path(in_dir).resolve(), Path(out_dir).resolve()
    if not (in_dir / SUCCESS_MARKER).exists():
        raise FileNotFoundError(f"{in_dir} is not a finished curation output (no {SUCCESS_MARKER}); "
                                "run `codemill curate` into it first")
    if in_dir == out_dir:
        raise ValueError("codemill dedup: IN and OUT must be different directories")
    num_shards = len(shard_paths(in_dir / "manifest"))
    num_files = sum(pq.ParquetFile(p).metadata.num_rows for p in shard_paths(in_dir / "manifest"))
    out_dir.mkdir(parents=True, exist_ok=True)
    clear_outputs(out_dir)
    # The sources and trees do not change: `codemill manifest verify OUT` re-reads the same sources.
    shutil.copytree(in_dir / "trees", out_dir / "trees")
    shutil.copy2(in_dir / "sources.json", out_dir / "sources.json")

    options, runner = default_pipeline_options(pipeline_args)
    local = is_single_process(options, runner)
    if not local:
        processes = 1
    rounds = config.rounds_for(num_files)
    started = time.monotonic()
    pipeline = beam.Pipeline(runner=runner, options=options)
    records = (
        (read_records(pipeline, in_dir, "data"), read_records(pipeline, in_dir, "dropped"))
        | "AllRecords" >> beam.Flatten()
        | "Dedup" >> DedupStage(config, rounds, str(out_dir), processes,
                                lsh_partitions=config.lsh_partitions_for(num_files) if local else None)
    )
    records | "WriteRecords" >> WriteShards(str(out_dir), RECORD_TABLES, num_shards)
    stats = records | "Stats" >> beam.CombineGlobally(StatsCombine(StatsAccumulator))
    stats | "WriteStats" >> beam.Map(lambda s: write_json(out_dir / "stats.json", s))
    result = pipeline.run()
    result.wait_until_finish()
    seconds = time.monotonic() - started
    stats = check_outputs(out_dir, num_shards)
    report = finish_dedup_report(out_dir, result, config, rounds)
    stats["dedup"] = report["totals"]
    write_json(out_dir / "stats.json", stats)
    write_success(out_dir, "dedup", seconds, num_shards, input=str(in_dir))
    return DedupResult(out_dir, stats, report, seconds)
