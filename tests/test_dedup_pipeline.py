"""The dedup stage in Beam: quality on a constructed corpus, distributed components, determinism,
bad input, the CLI, and dedup inside the curation pipeline."""

from __future__ import annotations

import json
import random
from itertools import pairwise
from pathlib import Path

import pyarrow as pa
import pytest
from dedup_corpus import constructed_corpus, quality

from codemill.cli import main
from codemill.curation.swhid import blob_id
from codemill.dedup.components import components_reference
from codemill.dedup.config import DedupConfig
from codemill.jsonl import write_json
from codemill.pipelines.components import (
    EDGE_SCHEMA,
    NotConvergedError,
    connected_components,
    read_edges,
    round_dir,
)
from codemill.pipelines.dedup import run_dedup
from codemill.pipelines.outputs import RECORD_TABLES, ShardWriter, write_success
from codemill.records import TREE_SCHEMA, FileRecord
from codemill.shards import read_table, shard_name, shard_of, shard_paths, write_table_atomic

MULTI = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]


def run_dedup_records(
    records: list[FileRecord], out: Path, config: DedupConfig = DedupConfig(), args: list[str] | None = None
) -> tuple[list[dict], dict]:
    """Dedup records with `run_dedup` (written first as a finished curation output of two shards
    laid out by repository); returns the manifest rows (sorted) and the components' report."""
    source = out.with_name(out.name + "-input")
    writer = ShardWriter(str(source), RECORD_TABLES + (("trees", TREE_SCHEMA, "all"),), 2)
    for index in range(2):
        writer((index, [r for r in records if shard_of(r.repo, 2) == index]))
    write_json(source / "stats.json", {"totals": {"files": len(records)}})
    write_json(source / "sources.json", {"sources": []})
    write_success(source, "curate", 0.0, 2)
    result = run_dedup(source, out, config, args)
    rows = sorted(read_table(out / "manifest").to_pylist(), key=lambda r: (r["repo"], r["path"]))
    return rows, result.report.get("connected_components", {})


def clusters_of(rows: list[dict]) -> dict[str, str]:
    return {row["swhid"]: row["dup_cluster"] for row in rows if row["dup_cluster"]}


def test_near_dedup_quality_on_a_constructed_corpus(tmp_path: Path) -> None:
    """The corpus packs copies right around the threshold (Jaccard ~0.72 and ~0.66 with their base),
    where StarCoder2's 25 x 10 bands find a pair only about half the time; weighting false negatives
    (verification removes the false positives) buys the recall back."""
    records = constructed_corpus(bases=30)
    rows, report = run_dedup_records(records, tmp_path / "out")
    measured = quality(records, clusters_of(rows), 0.7)
    assert measured["true_pairs"] >= 90
    assert measured["precision"] >= 0.99, measured
    assert measured["recall"] >= 0.8, measured
    assert measured["pair_recall"] >= 0.75, measured
    recall_first = DedupConfig(false_positive_weight=0.1, false_negative_weight=0.9)
    assert recall_first.bands_rows == (32, 8)
    rows, _ = run_dedup_records(records, tmp_path / "recall_first", recall_first)
    measured = quality(records, clusters_of(rows), 0.7)
    assert measured["precision"] >= 0.99, measured
    assert measured["recall"] >= 0.95, measured
    assert measured["pair_recall"] >= 0.95, measured
    assert report["rounds"] >= 2 and report["changes_per_round"][-1] == 0
    # One survivor per family's cluster; every drop names its reason and survivor.
    kept = [r for r in rows if r["kept"]]
    for row in rows:
        if not row["kept"]:
            assert row["drop_reason"].split(":")[0] in ("exact_duplicate", "near_duplicate")
            survivor_swhid = row["drop_reason"].split(":", 1)[1].split(";")[0]
            assert survivor_swhid in {k["swhid"] for k in kept}
    # The family's lines-shuffled copy and the ~0.5 copy are far from the base: they survive.
    assert len(kept) >= 2 * 30


def _write_round_zero(cc_dir: Path, edges: set, parts: int) -> None:
    for index in range(parts):
        rows = sorted(e for e in edges if shard_of(e[0], parts) == index)
        table = pa.table({"u": [u for u, _ in rows], "v": [v for _, v in rows]}, schema=EDGE_SCHEMA)
        write_table_atomic(round_dir(cc_dir, 0) / shard_name(index, parts), table)


def test_components_a_pipeline_per_round_match_union_find(tmp_path: Path) -> None:
    """Rounds run (with Beam's two worker processes) until one changes nothing; a rerun reuses the
    rounds on disk."""
    rng = random.Random(11)
    nodes = [f"n{i:04d}" for i in range(600)]
    edges = set()
    for _ in range(700):  # sparse random graph: many components, some long chains
        a, b = rng.sample(nodes, 2)
        edges.add((min(a, b), max(a, b)))
    chain = rng.sample(nodes, 80)
    edges |= {(min(a, b), max(a, b)) for a, b in pairwise(chain)}
    _write_round_zero(tmp_path / "cc", edges, 3)
    report = connected_components(tmp_path / "cc", 3, MULTI, max_rounds=40)
    labels = {}
    for path in shard_paths(Path(report["final"])):
        for label, node in read_edges(str(path)):
            labels[node], labels[label] = label, label
    assert labels == components_reference(edges)
    assert report["changes_per_round"][-1] == 0 and all(c > 0 for c in report["changes_per_round"][:-1])
    assert report["edges_per_round"][0] == len(edges)
    assert connected_components(tmp_path / "cc", 3, [], max_rounds=40) == report  # every round reused


def test_convergence_failure_is_loud(tmp_path: Path) -> None:
    chain = [f"n{i:03d}" for i in range(200)]
    random.Random(5).shuffle(chain)
    _write_round_zero(tmp_path / "cc", {(min(a, b), max(a, b)) for a, b in pairwise(chain)}, 2)
    with pytest.raises(NotConvergedError, match="cc_rounds"):
        connected_components(tmp_path / "cc", 2, [], max_rounds=1)


def test_dedup_is_deterministic_across_runs_and_workers(tmp_path: Path) -> None:
    records = constructed_corpus(bases=6, seed=3)
    first, _ = run_dedup_records(records, tmp_path / "a")
    second, _ = run_dedup_records(list(reversed(records)), tmp_path / "b")
    multi, _ = run_dedup_records(records, tmp_path / "c", args=MULTI)
    assert first == second == multi  # packed band keys (one process) and grouped by key (two)
    for name in ("data", "dropped", "manifest"):
        for part in sorted((tmp_path / "a" / name).glob("*.parquet")):
            assert part.read_bytes() == (tmp_path / "b" / name / part.name).read_bytes()


def _record(repo: str, path: str, content: str, **fields) -> FileRecord:
    data = content.encode("utf-8", "surrogateescape")
    return FileRecord(
        swhid=f"swh:1:cnt:{blob_id(data).hex()}",
        path=path,
        repo=repo,
        source_uri="t",
        content=content,
        size_bytes=len(data),
        **fields,
    )


def test_bad_input_has_documented_outcomes(tmp_path: Path) -> None:
    code = "\n".join(f"value_{i} = compute(value_{i - 1}, {i})" for i in range(1, 80))
    records = [
        _record("a", "empty1.py", ""),
        _record("b", "empty2.py", ""),  # empty: exact duplicates
        _record("a", "short.py", "x = 1"),
        _record("b", "short.py", "x = 1"),  # shorter than a shingle
        _record("c", "short2.py", "y = 2"),
        _record("a", "same.py", code, license_type="permissive"),  # identical in other repos
        _record("b", "same.py", code),
        _record("c", "copy.py", code, license_spdx=None),
        _record("d", "noise.txt", "".join(chr(c) for c in random.Random(1).choices(range(1, 0x2FF), k=4000))),
        _record("e", "dropped.py", code).drop("filter:long_lines"),  # already dropped: untouched
        FileRecord(swhid=None, path="unreadable", repo="e", source_uri="t").drop("unreadable"),
    ]
    out = tmp_path / "out"
    rows, _ = run_dedup_records(records, out)
    by = {(r["repo"], r["path"]): r for r in rows}
    assert len(rows) == len(records)
    assert by[("a", "empty1.py")]["kept"] and by[("b", "empty2.py")]["drop_reason"].startswith("exact_duplicate:")
    assert by[("a", "short.py")]["kept"] and by[("b", "short.py")]["drop_reason"].startswith("exact_duplicate:")
    assert by[("c", "short2.py")]["kept"]
    assert by[("a", "same.py")]["kept"]  # the permissive copy survives
    assert by[("b", "same.py")]["drop_reason"].startswith("exact_duplicate:swh:1:cnt:")
    assert by[("c", "copy.py")]["drop_reason"].startswith("exact_duplicate:")
    assert by[("d", "noise.txt")]["kept"]
    assert (
        by[("e", "dropped.py")]["drop_reason"] == "filter:long_lines" and by[("e", "dropped.py")]["dup_cluster"] is None
    )
    assert by[("e", "unreadable")]["drop_reason"] == "unreadable"


def test_exact_mode_does_not_merge_near_copies(tmp_path: Path) -> None:
    records = constructed_corpus(bases=3, seed=1)
    rows, _ = run_dedup_records(records, tmp_path / "out", DedupConfig(mode="exact"))
    reasons = {r["drop_reason"].split(":")[0] for r in rows if not r["kept"]}
    assert reasons == {"exact_duplicate"}
    assert sum(not r["kept"] for r in rows) == 3  # one exact copy per family


def test_cli_dedup_and_dedup_inside_curation_agree(tmp_path: Path, repo_dir: Path) -> None:
    # Two repositories sharing files (one edited) so exact and near duplicates both occur.
    other = tmp_path / "other"
    other.mkdir()
    for path in sorted(repo_dir.rglob("*.py")):
        target = other / path.relative_to(repo_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        text = path.read_text()
        target.write_text(text + "\n# a trailing comment\n" if "greet" in text else text)
    curated = tmp_path / "curated"
    assert main(["curate", str(repo_dir), str(other), "--out", str(curated), "--workers", "1", "--no-licenses"]) == 0
    deduped = tmp_path / "deduped"
    assert main(["dedup", str(curated), str(deduped), "--workers", "1"]) == 0
    together = tmp_path / "together"
    assert (
        main(
            [
                "curate",
                str(repo_dir),
                str(other),
                "--out",
                str(together),
                "--workers",
                "1",
                "--no-licenses",
                "--dedup",
                "near",
            ]
        )
        == 0
    )
    for name in ("data", "dropped", "manifest"):
        assert read_table(deduped / name).to_pylist() == read_table(together / name).to_pylist(), name
    report = json.loads((deduped / "dedup.json").read_text())
    assert report["config"]["bands"] == 25 and report["config"]["rows"] == 10
    assert report["totals"]["removed_exact"] >= 1
    assert report["totals"]["removed_near"] >= 1
    assert sum(report["removed"]["files_by_language"].values()) == report["totals"]["removed_files"]
    assert main(["manifest", "verify", str(deduped)]) == 0
    assert (deduped / "_SUCCESS.json").exists()
    assert main(["dedup", str(tmp_path / "missing"), str(tmp_path / "x")]) == 2
