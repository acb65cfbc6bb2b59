"""Connected components by alternating large-star and small-star rounds (Kiveris et al., 2014,
"Connected Components in MapReduce and Beyond"), as per-node steps a Beam GroupByKey can drive.

Nodes are comparable ids (SWHID strings). Edges are (smaller, larger) tuples. Each step sees one
node and an iterable of its neighbours and streams over it at most twice, so no step holds a
node's whole neighbourhood in memory: a component of a billion nodes needs only a runner whose
grouped values are re-iterable (Dataflow, Flink and Spark page them from disk).

- large-star(u): m = min(u, N(u)); every neighbour v > u is re-linked to m.
- small-star(u), over the neighbours v < u: m = min(u, those); each of them and u is linked to m.
When a round changes no edge, every component is a star around its smallest node, which is the
component's label.
"""

from __future__ import annotations

from typing import Hashable, Iterable, Iterator

Edge = tuple[Hashable, Hashable]


def large_star(node, neighbours: Iterable) -> tuple[Iterator[Edge], int]:
    """(edges out, number of changed edges) for one node; `neighbours` must be re-iterable."""
    smallest = min(neighbours, default=node)
    smallest = min(smallest, node)
    changed = 0 if smallest == node else sum(1 for v in neighbours if v > node)
    return ((smallest, v) for v in neighbours if v > node), changed


def small_star(node, smaller_neighbours: Iterable) -> tuple[Iterator[Edge], int]:
    """(edges out, changed) for one node and its neighbours smaller than it. The neighbours may
    repeat (the large-star output is not made distinct, to save a shuffle per round): `changed` is
    then not an exact count but is zero exactly when nothing changes, and repeated edges out are
    removed by the caller's Distinct."""
    smallest = min(smaller_neighbours, default=node)
    if smallest == node:
        return iter(()), 0
    changed = sum(1 for v in smaller_neighbours if v != smallest)

    def edges() -> Iterator[Edge]:
        yield smallest, node
        for v in smaller_neighbours:
            if v != smallest:
                yield smallest, v

    return edges(), changed


def bucket_pairs(members: Iterable, sort_limit: int) -> Iterator[Edge]:
    """Candidate pairs of one LSH bucket, without the quadratic all-pairs.

    Buckets of up to `sort_limit` members are sorted: each member is paired with the smallest
    (a star) and with its predecessor (a chain), so a verified path survives even when the smallest
    member is a false positive. Larger buckets are streamed: star pairs only."""
    count, smallest = 0, None
    for member in members:
        count += 1
        smallest = member if smallest is None or member < smallest else smallest
        if count > sort_limit:
            break
    if count <= sort_limit:
        ordered = sorted(set(members))
        for i in range(1, len(ordered)):
            yield ordered[0], ordered[i]
            if i >= 2:
                yield ordered[i - 1], ordered[i]
        return
    smallest = min(members)
    for member in members:
        if member != smallest:
            yield smallest, member


def components_reference(edges: Iterable[Edge]) -> dict:
    """Union-find labels (node -> smallest node of its component): the reference for tests."""
    parent: dict = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for u, v in edges:
        ru, rv = find(u), find(v)
        if ru != rv:
            parent[max(ru, rv)] = min(ru, rv)
    return {node: find(node) for node in list(parent)}
