"""Connected components of the dedup graph, one small pipeline per round until a round changes nothing.

    OUT/_work/cc/round-00000/part-*.parquet   the verified edges (u < v), written by the dedup's first pipeline
    round r -> r+1: large-star (group by node), small-star (group by larger end), distinct (group by edge)
    OUT/_work/cc/round-0000N/_ROUND.json       written last: the round's edges and changed edges

Beam has no loops. Unrolling a fixed number of rounds into one pipeline would make rounds with
nothing left to do cost three shuffles each, make a round too few an error, and grow the graph on
a task-based cluster engine to tens of thousands of tasks for a few files. So the driver runs one
round at a time over edges kept on the output's storage and stops at the
first round that changed no edge (large-star/small-star converges in O(log n) rounds; Kiveris et
al. 2014). A round's marker is written after its edges are whole, so a killed run resumes at the
first round without one. Any runner runs the rounds.
"""

from __future__ import annotations

import sys
from typing import Iterable, Iterator

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics.metric import MetricsFilter

from codemill.dedup.components import large_star, small_star
from codemill.errors import CodemillError
from codemill.jsonl import read_json, write_json
from codemill.shards import parquet_file, shard_name, shard_of, shard_paths, write_table_atomic
from codemill.storage import StoragePath, location, rmtree

EDGE_SCHEMA = pa.schema([("u", pa.string()), ("v", pa.string())])
ROUND_MARKER = "_ROUND.json"
NAMESPACE = "codemill.dedup.cc"


class NotConvergedError(CodemillError, RuntimeError):
    """The components still changed after the most rounds allowed (names the setting)."""


def round_dir(cc_dir: StoragePath, index: int) -> StoragePath:
    return location(cc_dir) / f"round-{index:05d}"


def _write_part(keyed: tuple[int, Iterable], directory: str, parts: int) -> int:
    index, edges = keyed
    rows = sorted({edge for edge in edges if edge is not None})
    table = pa.table({"u": [u for u, _ in rows], "v": [v for _, v in rows]}, schema=EDGE_SCHEMA)
    write_table_atomic(location(directory) / shard_name(index, parts), table)
    return index


class WriteEdges(beam.PTransform):
    """Edges (u < v) -> `parts` sorted, distinct Parquet parts (by a hash of u), empty ones included."""

    def __init__(self, directory: StoragePath, parts: int) -> None:
        super().__init__()
        self.directory, self.parts = str(directory), parts

    def expand(self, edges):
        parts = self.parts
        keyed = edges | "KeyPart" >> beam.Map(lambda edge: (shard_of(edge[0], parts), edge))
        every = edges.pipeline | "EveryPart" >> beam.Create([(i, None) for i in range(parts)])
        return (
            (keyed, every)
            | "Parts" >> beam.Flatten()
            | "GroupPart" >> beam.GroupByKey()
            | "WritePart" >> beam.Map(_write_part, self.directory, parts)
        )


def read_edges(path: str) -> Iterator[tuple[str, str]]:
    for batch in parquet_file(path).iter_batches(batch_size=65536):
        columns = batch.to_pydict()
        yield from zip(columns["u"], columns["v"], strict=False)


def edges_of(pipeline, directory: StoragePath, label: str = "Edges"):
    """The edges of a round's parts, a part per element."""
    paths = [str(p) for p in shard_paths(directory)]
    return (
        pipeline
        | f"{label}Parts" >> beam.Create(paths)
        | f"{label}Spread" >> beam.Reshuffle()
        | f"{label}Read" >> beam.FlatMap(read_edges)
    )


def _undirected(edge: tuple) -> Iterator[tuple]:
    u, v = edge
    yield u, v
    yield v, u


def _large_star_step(grouped: tuple) -> Iterator[tuple]:
    """Each new edge (m, v) keyed by its larger end v, ready for the small-star grouping."""
    node, neighbours = grouped
    edges, changed = large_star(node, neighbours)
    beam.metrics.Metrics.counter(NAMESPACE, "edges").inc(sum(1 for v in neighbours if v > node))
    beam.metrics.Metrics.counter(NAMESPACE, "changes").inc(changed)
    for smaller, larger in edges:
        yield larger, smaller


def _small_star_step(grouped: tuple) -> Iterator[tuple]:
    node, smaller = grouped
    edges, changed = small_star(node, smaller)
    beam.metrics.Metrics.counter(NAMESPACE, "changes").inc(changed)
    yield from edges


def _round(source: StoragePath, target: StoragePath, parts: int, pipeline_args: list[str] | None) -> dict:
    from codemill.pipelines.driver import BeamDriver

    driver = BeamDriver.from_args(pipeline_args)
    pipeline = driver.pipeline()
    (
        edges_of(pipeline, source)
        | "Undirected" >> beam.FlatMap(_undirected)
        | "ByNode" >> beam.GroupByKey()
        | "LargeStar" >> beam.FlatMap(_large_star_step)
        | "ByLargerEnd" >> beam.GroupByKey()
        | "SmallStar" >> beam.FlatMap(_small_star_step)
        | "Write" >> WriteEdges(target, parts)
    )
    result = driver.run(pipeline)
    counts = {
        c.key.metric.name: c.committed or 0
        for c in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]
    }
    return {"edges": int(counts.get("edges", 0)), "changes": int(counts.get("changes", 0))}


def connected_components(cc_dir: StoragePath, parts: int, pipeline_args: list[str] | None, max_rounds: int) -> dict:
    """Run rounds over `cc_dir/round-00000` until one changes nothing; resumes after the last
    round with a marker. Returns the report (rounds, edges and changes per round, the final round's
    folder, whose edges give every node its label: the smallest node of its component)."""
    edges, changes = [], []
    index = 0
    while True:
        target = round_dir(cc_dir, index + 1)
        marker = target / ROUND_MARKER
        if marker.exists():
            done = read_json(marker)
        else:
            rmtree(target)  # a killed earlier attempt's parts
            done = _round(round_dir(cc_dir, index), target, parts, pipeline_args)
            write_json(marker, done)
        edges.append(done["edges"])
        changes.append(done["changes"])
        index += 1
        print(
            f"codemill dedup: connected components round {index}: {done['edges']} edges, {done['changes']} changed",
            file=sys.stderr,
        )
        if done["changes"] == 0:
            break
        if index >= max_rounds:
            raise NotConvergedError(
                f"connected components still changed {done['changes']} edges after {index} rounds; rerun with a "
                f"larger dedup cc_rounds (e.g. {2 * index}; it caps the rounds). Edges per round: {edges}"
            )
    return {
        "rounds": index,
        "edges_per_round": edges,
        "changes_per_round": changes,
        "final": str(round_dir(cc_dir, index)),
    }


def _labels_of(edge: tuple) -> Iterator[tuple]:
    """After convergence every edge is (label, node): both ends get the smaller as their label."""
    u, v = edge
    yield v, u
    yield u, u


def labels(pipeline, final: StoragePath):
    """(node, label) for every node on an edge of the converged graph."""
    return (
        edges_of(pipeline, final, "Final") | "Labels" >> beam.FlatMap(_labels_of) | "Label" >> beam.CombinePerKey(min)
    )
