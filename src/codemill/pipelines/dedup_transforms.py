"""The dedup stage's Beam PTransforms (its driver: pipelines/dedup.py).

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
from typing import Any, Iterable, Iterator

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from codemill.dedup.components import bucket_pairs
from codemill.dedup.config import DedupConfig
from codemill.dedup.lsh import band_keys
from codemill.dedup.minhash import jaccard, shingle_sets
from codemill.dedup.ranking import Decision, DedupEntry, decide_cluster
from codemill.dedup.shards import (
    InputShard,
    fetch_texts,
    save_decisions,
    scan_shard,
)
from codemill.dedup.stats import Candidate, Cluster, Sketched, decision_events
from codemill.pipelines.common import (
    register,
    tagged,
)
from codemill.pipelines.components import (
    NotConvergedError,  # noqa: F401 (the command line catches it from here)
    WriteEdges,
)
from codemill.pipelines.components import labels as component_labels
from codemill.pipelines.pooled import PooledDoFn
from codemill.storage import StoragePath

log = logging.getLogger(__name__)

METRICS_NAMESPACE = "codemill.dedup"


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
    and 25 band keys per document would be most of a dedup run's elements. A partition group then
    holds ~`entries per partition` band entries."""

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
        yield ("event", Candidate(ok))
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
        yield "event", Cluster(size)


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
        sketch_events = sketches | "SketchEvents" >> beam.Map(lambda s: Sketched(has_shingles=s[1] is not None))
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
            pair_events = pairs | "Unverified" >> beam.Map(lambda _: Candidate(True))
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
