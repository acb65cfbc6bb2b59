"""Dedup cores without Beam: shingles, signatures, LSH parameters, buckets, components, ranking."""

from __future__ import annotations

import random
import re
from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codemill.dedup.components import (
    bucket_pairs,
    components_reference,
    large_star,
    small_star,
)
from codemill.dedup.config import DedupConfig
from codemill.dedup.lsh import band_keys, optimal_bands_rows
from codemill.dedup.minhash import (
    has_shingles,
    jaccard,
    shingle_hashes,
    shingle_sets,
    signatures,
)
from codemill.dedup.ranking import DedupEntry, decide_cluster, survivor_rank
from codemill.records import FileRecord

WORD = re.compile(r"\W+")


def reference_shingles(text: str, n: int = 5) -> set[tuple[str, ...]]:
    """The StarCoder2-style definition, in plain Python: n-grams of \\W-split lowercased tokens."""
    tokens = [t for t in WORD.split(text.lower()) if t]
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


texts = st.lists(st.sampled_from(list("ab_ 1.\n(é)ßİ\u00a0\u2028日本Ω") + ["def", " x", "\udc80"]), max_size=120).map(
    "".join
)


@settings(max_examples=300, deadline=None)
@given(st.lists(texts, min_size=1, max_size=6))
def test_shingles_match_the_python_definition(batch: list[str]) -> None:
    sets = shingle_sets(batch)
    hashes, docs = shingle_hashes(batch)
    for i, text in enumerate(batch):
        reference = reference_shingles(text)
        assert len(sets[i]) == len(reference), text  # one distinct hash per distinct shingle
        tokens = [t for t in WORD.split(text.lower()) if t]
        assert (docs == i).sum() == max(0, len(tokens) - 4)  # every occurrence, in text order


@settings(max_examples=100, deadline=None)
@given(st.lists(texts, min_size=2, max_size=5))
def test_signatures_do_not_depend_on_the_batch(batch: list[str]) -> None:
    together = signatures(batch)
    for i, text in enumerate(batch):
        assert np.array_equal(together[i], signatures([text])[0])


def test_shingle_hash_depends_on_order_not_position() -> None:
    a = shingle_sets(["one two three four five six"])[0]
    b = shingle_sets(["zero one two three four five six"])[0]
    c = shingle_sets(["six five four three two one"])[0]
    assert set(a) <= set(b) and len(b) == 3
    assert not set(a) & set(c)


def _edited(words: list[str], fraction: float, rng: random.Random) -> list[str]:
    out = list(words)
    for i in rng.sample(range(len(out)), int(len(out) * fraction)):
        out[i] = f"w{rng.randrange(10**9)}"
    return out


def test_signature_estimates_jaccard_within_its_error() -> None:
    rng = random.Random(7)
    base = [f"t{rng.randrange(5000)}" for _ in range(3000)]
    errors = []
    for fraction in (0.0, 0.01, 0.03, 0.06, 0.1, 0.2):
        other = " ".join(_edited(base, fraction, rng))
        sets = shingle_sets([" ".join(base), other])
        true = jaccard(*sets)
        sigs = signatures([" ".join(base), other])
        estimate = float((sigs[0] == sigs[1]).mean())
        errors.append(abs(estimate - true))
        # 4 standard errors of a 256-permutation estimate
        assert abs(estimate - true) <= 4 * np.sqrt(max(true * (1 - true), 1e-3) / 256) + 1e-9, (
            fraction,
            true,
            estimate,
        )
    assert np.mean(errors) < 0.03


def test_short_and_empty_texts_have_no_shingles() -> None:
    sigs = signatures(["", "one two three four", "one two three four five", "...!!!"])
    assert has_shingles(sigs).tolist() == [False, False, True, False]


def test_optimal_bands_rows_reproduces_starcoder2() -> None:
    assert optimal_bands_rows(0.7, 250) == (25, 10)
    assert optimal_bands_rows(0.7, 256) == (25, 10)
    assert DedupConfig().bands_rows == (25, 10)
    bands, rows = optimal_bands_rows(0.85, 256)
    assert bands * rows <= 256 and rows > 10  # a higher threshold wants longer bands


def test_band_keys_agree_exactly_when_the_band_agrees() -> None:
    sig = np.arange(256, dtype=np.uint32)
    other = sig.copy()
    other[15] += 1  # band 1 of 25 x 10
    keys, other_keys = band_keys(sig, 25, 10), band_keys(other, 25, 10)
    assert [a == b for a, b in zip(keys, other_keys, strict=True)] == [i != 1 for i in range(25)]


@pytest.mark.parametrize(
    "bad",
    [dict(mode="fuzzy"), dict(threshold=1.0), dict(bands=30, rows=10), dict(bands=5), dict(ngram=0), dict(cc_rounds=0)],
)
def test_config_rejects_impossible_settings(bad: dict) -> None:
    with pytest.raises(ValueError):
        DedupConfig(**bad)
    with pytest.raises(ValueError, match="unknown dedup setting"):
        DedupConfig.from_dict({"treshold": 0.7})


def test_bucket_pairs_star_and_chain_then_streaming() -> None:
    assert sorted(bucket_pairs(["d", "b", "a", "c"], 10)) == sorted(
        [("a", "b"), ("a", "c"), ("a", "d"), ("b", "c"), ("c", "d")]
    )
    assert sorted(bucket_pairs(["d", "b", "a", "c"], 3)) == [("a", "b"), ("a", "c"), ("a", "d")]
    assert list(bucket_pairs(["x"], 10)) == []


def iterate_components(edges: set[tuple[int, int]], max_rounds: int = 100) -> tuple[dict, int]:
    """The large-star / small-star rounds driven in plain Python, as the Beam layer drives them."""
    rounds = 0
    while rounds < max_rounds:
        rounds += 1
        neighbours: dict = {}
        for u, v in edges:
            neighbours.setdefault(u, []).append(v)
            neighbours.setdefault(v, []).append(u)
        changed = 0
        large = set()
        for node, ns in neighbours.items():
            out, c = large_star(node, ns)
            large.update(out)
            changed += c
        smaller: dict = {}
        for u, v in large:
            smaller.setdefault(v, []).append(u)
        edges = set()
        for node, ns in smaller.items():
            out, c = small_star(node, ns)
            edges.update(out)
            changed += c
        if changed == 0:
            break
    labels = {}
    for u, v in edges:
        labels[v] = min(labels.get(v, u), u)
        labels[u] = min(labels.get(u, u), u)
    return labels, rounds


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60)), max_size=120))
def test_star_rounds_match_union_find(pairs: list[tuple[int, int]]) -> None:
    edges = {(min(u, v), max(u, v)) for u, v in pairs if u != v}
    labels, rounds = iterate_components(edges)
    assert labels == components_reference(edges)


def test_star_rounds_on_a_long_path_converge_in_few_rounds() -> None:
    order = list(range(2000))
    random.Random(3).shuffle(order)
    edges = {(min(a, b), max(a, b)) for a, b in pairwise(order)}
    labels, rounds = iterate_components(edges)
    assert set(labels.values()) == {0}
    assert rounds <= DedupConfig().rounds_for(2000)


def record(swhid: str, key: str, **fields) -> FileRecord:
    return FileRecord(swhid=swhid, path=key, repo=fields.pop("repo", "r"), source_uri="s", content="x", **fields)


def test_survivor_ranking_on_crafted_ties() -> None:
    base = dict(
        license_type="no_license",
        stars=5,
        forks=1,
        revision_date="2024-01-01T00:00:00+00:00",
        visit_date="2024-02-01T00:00:00Z",
    )
    cases = [
        # (the winner, the loser): each differs from `base` in exactly the field that decides
        (dict(license_type="permissive"), dict(license_type="no_license", stars=900)),
        (dict(license_type="no_license"), dict(license_type="non_permissive", stars=900)),
        (dict(stars=6), dict(stars=5, forks=50)),
        (dict(forks=2), dict(forks=1, revision_date="2025-01-01")),
        (dict(revision_date="2024-06-01T00:00:00+02:00"), dict(revision_date="2024-01-01", visit_date="2026-01-01")),
        (dict(visit_date="2024-03-01"), dict(visit_date=None)),
        (dict(stars=None, forks=None), dict(stars=None, forks=None, license_type="non_permissive")),
    ]
    for winner_fields, loser_fields in cases:
        winner = record("swh:1:cnt:" + "f" * 40, "w", **{**base, **winner_fields})
        loser = record("swh:1:cnt:" + "0" * 40, "l", **{**base, **loser_fields})
        assert survivor_rank(winner) < survivor_rank(loser), winner_fields
    # All else equal: the smallest SWHID, then (same content) the smallest qualified SWHID.
    a = record("swh:1:cnt:" + "1" * 40, "a", **base)
    b = record("swh:1:cnt:" + "2" * 40, "b", **base)
    assert survivor_rank(a) < survivor_rank(b)
    copy1 = record(a.swhid, "c1", qualified_swhid=a.swhid + ";origin=https://a", **base)
    copy2 = record(a.swhid, "c2", qualified_swhid=a.swhid + ";origin=https://b", **base)
    assert survivor_rank(copy1) < survivor_rank(copy2)


def test_decide_cluster_names_exact_and_near_duplicates() -> None:
    good = record(
        "swh:1:cnt:" + "b" * 40,
        "good",
        license_type="permissive",
        qualified_swhid="swh:1:cnt:" + "b" * 40 + ";path=/good",
    )
    copy = record(good.swhid, "copy", license_type="no_license")
    near = record("swh:1:cnt:" + "a" * 40, "near", license_type="no_license")
    decisions = {
        e.key: d for e, d in decide_cluster("swh:1:cnt:" + "a" * 40, [DedupEntry.of(r) for r in (near, copy, good)])
    }
    assert decisions["s#r#good"].drop_reason is None
    assert decisions["s#r#copy"].drop_reason == f"exact_duplicate:{good.qualified_swhid}"
    assert decisions["s#r#near"].drop_reason == f"near_duplicate:{good.qualified_swhid}"
    assert {d.cluster for d in decisions.values()} == {"swh:1:cnt:" + "a" * 40}
