"""A constructed corpus with known duplicate structure, and pairwise precision/recall against the
brute-force Jaccard of the StarCoder2 shingle definition."""

from __future__ import annotations

import itertools
import random
import re

from codemill.curation.swhid import blob_id
from codemill.records import FileRecord

WORD = re.compile(r"\W+")


def reference_shingles(text: str, n: int = 5) -> frozenset:
    tokens = [t for t in WORD.split(text.lower()) if t]
    return frozenset(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def exact_jaccard(a: frozenset, b: frozenset) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


def _line(rng: random.Random, names: list[str]) -> str:
    a, b, c = rng.sample(names, 3)
    return rng.choice(
        [
            f"    {a} = {b}({c}, {rng.randrange(1000)})",
            f"    if {a} > {rng.randrange(100)}:\n        return {b}.{c}()",
            f"    for {a} in range({b}):\n        {c}.append({a} * {rng.randrange(50)})",
            f"    {a}.{b} += {c}[{rng.randrange(10)}]",
        ]
    )


def _edit_to(base_lines: list[str], target: float, rng: random.Random, names: list[str]) -> str:
    """Replace lines until the Jaccard with the base falls to about `target` (bisection on how many)."""
    base = reference_shingles("\n".join(base_lines))
    order = rng.sample(range(len(base_lines)), len(base_lines))
    fresh = [_line(rng, names) for _ in base_lines]

    def edited(k: int) -> str:
        lines = list(base_lines)
        for i in order[:k]:
            lines[i] = fresh[i]
        return "\n".join(lines)

    lo, hi = 0, len(base_lines)
    while lo < hi:
        mid = (lo + hi) // 2
        if exact_jaccard(base, reference_shingles(edited(mid))) > target:
            lo = mid + 1
        else:
            hi = mid
    return edited(lo)


def constructed_corpus(bases: int = 30, seed: int = 0) -> list[FileRecord]:
    """Per base document: an exact copy in another repository, copies edited to Jaccard ~0.9,
    ~0.78, ~0.72, ~0.66 and ~0.5 with the base, a copy with an identifier renamed everywhere, and a
    line-shuffled copy. Repositories are shuffled so files of a family sit in different places."""
    rng = random.Random(seed)
    texts: list[tuple[str, str]] = []
    for b in range(bases):
        names = [f"name{b}_{i}" for i in range(12)] + ["self", "data", "value", "result"]
        lines = [f"def function_{b}(data, value):"] + [_line(rng, names) for _ in range(60)]
        base = "\n".join(lines)
        family = [base, base]
        family += [_edit_to(lines, target, rng, names) for target in (0.9, 0.78, 0.72, 0.66, 0.5)]
        family.append(base.replace(names[0], "renamed_identifier"))
        shuffled = list(lines)
        rng.shuffle(shuffled)
        family.append("\n".join(shuffled))
        texts += [(f"family{b}", text) for text in family]
    rng.shuffle(texts)
    records = []
    for i, (family, text) in enumerate(texts):
        data = text.encode()
        records.append(
            FileRecord(
                swhid=f"swh:1:cnt:{blob_id(data).hex()}",
                path=f"{family}/file{i}.py",
                repo=f"repo{i % 7}",
                source_uri="constructed",
                content=text,
                size_bytes=len(data),
                language="Python",
            )
        )
    return records


def quality(records: list[FileRecord], clusters: dict[str, str], threshold: float) -> dict:
    """Near-dedup quality against the exact Jaccard of every pair of distinct contents.

    Document level (what dedup decides): a content truly has a near duplicate when another content
    reaches the threshold; it is predicted to have one when its cluster holds another content.
    Pair level: recall is the share of true pairs that end in one cluster; `cluster_pair_precision`
    is the share of same-cluster pairs that truly reach the threshold (clusters are transitive, so
    a chain A~B~C also pairs A with C: this is the stricter figure). `clusters` maps SWHID -> id."""
    texts = {r.swhid: r.content for r in records if r.content is not None}
    shingles = {swhid: reference_shingles(text) for swhid, text in texts.items()}
    true_pairs, predicted_pairs = set(), set()
    for a, b in itertools.combinations(sorted(texts), 2):
        if shingles[a] and shingles[b] and exact_jaccard(shingles[a], shingles[b]) >= threshold:
            true_pairs.add((a, b))
        if clusters.get(a) is not None and clusters.get(a) == clusters.get(b):
            predicted_pairs.add((a, b))
    true_docs = {d for pair in true_pairs for d in pair}
    predicted_docs = {d for pair in predicted_pairs for d in pair}

    def ratio(hits: int, total: int) -> float:
        return hits / total if total else 1.0

    return {
        "contents": len(texts),
        "true_pairs": len(true_pairs),
        "true_docs": len(true_docs),
        "precision": ratio(len(true_docs & predicted_docs), len(predicted_docs)),
        "recall": ratio(len(true_docs & predicted_docs), len(true_docs)),
        "pair_recall": ratio(len(true_pairs & predicted_pairs), len(true_pairs)),
        "cluster_pair_precision": ratio(len(true_pairs & predicted_pairs), len(predicted_pairs)),
    }
