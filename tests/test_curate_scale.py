"""Curation at scale: work units, the memory budget and its spill, output shards sized by the data,
and resume after a SIGKILL at several points."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codemill.curation.plan import plan_units
from codemill.curation.sources.base import SourceSpec
from codemill.curation.spill import RecordStore
from codemill.records import FileRecord
from codemill.shards import shard_of

CODEMILL = [str(Path(sys.executable).parent / "codemill")]


def _record(path: str, content: str, repo: str = "r", swhid: str | None = "swh:1:cnt:0") -> FileRecord:
    return FileRecord(swhid=swhid, path=path, repo=repo, source_uri="s", content=content)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from("abcde"), st.text(max_size=300)), max_size=40),
    st.integers(min_value=0, max_value=20_000),
)
def test_a_spilled_store_hands_back_what_an_in_memory_one_does(files, budget: int) -> None:
    """Whatever the budget, a repository's records come back whole and in the same order:
    sorted by (path, SWHID), ties in arrival order."""

    def run(budget_bytes: int) -> list[tuple]:
        store = RecordStore(budget_bytes)
        for i, (path, text) in enumerate(files):
            store.add("g", _record(path, text, swhid=f"swh:1:cnt:{i % 3}"))
        try:
            return [(r.path, r.swhid, r.content) for r in store.pop("g")]
        finally:
            store.close()

    assert run(budget) == run(1 << 40)


def test_the_store_keeps_to_its_budget_and_spills_the_rest() -> None:
    store = RecordStore(budget_bytes=64_000)
    texts = {f"f{i:03d}.py": "x = 1\n" * (500 + i) for i in range(100)}  # ~330 KB in all
    for path, text in texts.items():
        store.add("repo", _record(path, text))
    assert store.peak_bytes <= 64_000 and store.spilled_records > 80
    assert {r.path: r.content for r in store.pop("repo")} == texts
    assert store.in_memory_bytes == 0
    store.close()


def test_units_and_shards_follow_the_data(tmp_path: Path) -> None:
    """The shard count is the estimated input over the target; a shard's repositories are split into
    units of about a quarter shard; a table (many repositories) is read as one unit per shard's worth
    of its size, each taking the repositories of its part; the plan does
    not depend on the order the sources were named in."""
    specs = []
    for i in range(24):
        folder = tmp_path / f"repo{i:02d}"
        folder.mkdir()
        (folder / "a.py").write_bytes(b"x" * 100_000)
        specs.append(SourceSpec("directory", str(folder)))
    table = tmp_path / "rows.jsonl"
    table.write_text(json.dumps({"repo": "t", "path": "a.py", "content": "x"}) + "\n")
    specs.append(SourceSpec("table", str(table)))
    n, units = plan_units(specs, shard_bytes=600_000)
    assert n == 5  # 2.4 MB over 0.6 MB, rounded up
    assert [u.name for u in units if u.name.startswith("table")] == ["table-00000-00000"]
    shard_units = [u for u in units if u.name.startswith("shard")]
    assert sum(len(u.specs) for u in shard_units) == 24
    for unit in shard_units:
        shard = int(unit.name.split("-")[1])
        assert all(shard_of(Path(s.uri).name, n) == shard for s in unit.specs)
        assert unit.estimated_bytes <= 150_000 or len(unit.specs) == 1
    assert plan_units(list(reversed(specs)), shard_bytes=600_000) == (n, units)
    assert plan_units(specs, shard_bytes=600_000, num_shards=2)[0] == 2


def _corpus(root: Path, repos: int, files: int, size: int, seed: int = 0) -> Path:
    """Directories of Python-looking files that differ (so nothing is filtered as repetitive)."""
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "value", "index", "result", "count", "item", "total"]
    for r in range(repos):
        folder = root / f"proj{r:03d}" / "pkg"
        folder.mkdir(parents=True)
        for f in range(files):
            lines, length = [], 0
            while length < size:
                line = f"    {rng.choice(words)}_{rng.randrange(10**6)} = {rng.choice(words)}({rng.randrange(1000)})\n"
                lines.append(line)
                length += len(line)
            (folder / f"m{f:03d}.py").write_text(f"def f{f}():\n" + "".join(lines) + "    return None\n")
    return root


def _outputs(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.parquet"))}


def _curate_args(sources: list[Path], out: Path, *extra: str) -> list[str]:
    return [*CODEMILL, "curate", *map(str, sources), "--out", str(out), "--no-licenses", "--workers", "1", *extra]


@pytest.mark.slow
def test_a_corpus_larger_than_the_budget_curates_in_flat_memory(tmp_path: Path) -> None:
    """One repository three times the memory budget and one nine times: both spill, and the peak
    memory of the second grows by much less than the input it adds (~2x the first's bytes)."""
    budget_mb = 4

    def peak_rss_mb(corpus: Path, out: Path) -> tuple[float, dict]:
        probe = (
            "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
            "stdout=subprocess.DEVNULL); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
        )
        args = _curate_args(
            sorted(corpus.iterdir()), out, "--no-pii", "--memory-budget-mb", str(budget_mb), "--shard-mb", "1000"
        )
        done = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        return int(done.stdout.split()[-1]) / 1024, json.loads((out / "stats.json").read_text())

    small_mb, small = peak_rss_mb(_corpus(tmp_path / "small", 1, 400, 30_000), tmp_path / "out-small")
    large_mb, large = peak_rss_mb(_corpus(tmp_path / "large", 1, 1200, 30_000, seed=1), tmp_path / "out-large")
    added_mb = (large["totals"]["bytes"] - small["totals"]["bytes"]) / 1e6
    assert small["totals"]["bytes"] > 3 * budget_mb * 1e6 and added_mb > 20
    assert small["layout"]["files_spilled"] > 0 and large["layout"]["files_spilled"] > 800
    assert large["totals"]["kept_files"] > 1000
    print(
        f"\npeak RSS {small_mb:.0f} MB for {small['totals']['bytes'] / 1e6:.0f} MB, {large_mb:.0f} MB for "
        f"{large['totals']['bytes'] / 1e6:.0f} MB (budget {budget_mb} MB)"
    )
    assert large_mb - small_mb < 0.4 * added_mb, (small_mb, large_mb, added_mb)


@pytest.mark.slow
def test_a_run_killed_at_any_point_resumes_to_the_same_bytes(tmp_path: Path) -> None:
    """SIGKILL as soon as the run planned, after some units finished, and after some shards were
    merged; each rerun with the same arguments says what it reuses and writes exactly the bytes of
    an uninterrupted run."""
    corpus = sorted(_corpus(tmp_path / "corpus", 16, 12, 4_000).iterdir())
    extra = ("--shard-mb", "0.2")
    reference = tmp_path / "reference"
    subprocess.run(_curate_args(corpus, reference, *extra), check=True, capture_output=True, timeout=600)
    expected = _outputs(reference)
    layout = json.loads((reference / "stats.json").read_text())["layout"]
    assert layout["units"] >= 8 and layout["num_shards"] >= 3

    def markers(out: Path, kind: str) -> int:
        return len(list((out / "_work" / kind).glob("*"))) if (out / "_work" / kind).exists() else 0

    kill_points = {
        "after two units": lambda out: markers(out, "units") >= 2,
        "after a merged shard": lambda out: markers(out, "shards") >= 1,
        "as soon as it planned": lambda out: (out / "_work" / "plan.json").exists(),
    }
    for name, ready in kill_points.items():
        out = tmp_path / name.replace(" ", "-")
        process = subprocess.Popen(
            _curate_args(corpus, out, *extra),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 300
        while not ready(out) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        os.killpg(process.pid, signal.SIGKILL)
        assert process.wait() == -signal.SIGKILL, f"{name}: the run ended before it could be killed"
        assert not (out / "_SUCCESS.json").exists(), name
        rerun = subprocess.run(_curate_args(corpus, out, *extra), capture_output=True, text=True, timeout=600)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        assert "resuming an unfinished run" in rerun.stderr, name
        assert _outputs(out) == expected, name
        assert not (out / "_work").exists()


def test_a_large_table_is_read_in_parts_with_every_repository_whole(tmp_path: Path) -> None:
    """A table several shards large becomes several units; each repository is finalized in one of
    them (its trees and licence match a run that reads the table as one unit)."""
    from codemill.cli import main
    from codemill.shards import read_table

    rows = [
        {
            "repo": f"org/r{r:02d}",
            "path": f"pkg/m{f}.py",
            "content": f"def f{f}():\n    return {r * f}\n" * 200,
            "license": "MIT" if r % 2 else None,
        }
        for r in range(30)
        for f in range(4)
    ]
    table = tmp_path / "rows.jsonl"
    table.write_text("".join(json.dumps(row) + "\n" for row in rows) + "not json\n")
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    for out, shard_mb in ((whole, "100"), (parts, "0.1")):
        assert (
            main(
                [
                    "curate",
                    str(table),
                    "--out",
                    str(out),
                    "--no-licenses",
                    "--workers",
                    "1",
                    "--shards",
                    "3",
                    "--shard-mb",
                    shard_mb,
                ]
            )
            == 0
        )
    assert json.loads((parts / "stats.json").read_text())["layout"]["units"] > 3
    for name in ("manifest", "trees", "data", "dropped"):
        assert read_table(parts / name).to_pylist() == read_table(whole / name).to_pylist(), name


@pytest.mark.slow
def test_the_pool_shares_one_scancode_and_writes_what_one_process_does(tmp_path: Path) -> None:
    """With --workers 2 the licence texts the fast path leaves go to one ScanCode service (forks of
    one loaded index); the output equals a one-process run's, and a text met in several units is
    detected as one."""
    from codemill.cli import main
    from codemill.shards import read_table

    notice = (
        "This program is free software; you can redistribute it and/or modify it under the terms of "
        "the GNU General Public License as published by the Free Software Foundation; either version 2 "
        "of the License, or (at your option) any later version. See the file COPYING.EXTRA too.\n"
    )
    sources = []
    for i in range(6):
        repo = tmp_path / f"lib{i}"
        (repo / "src").mkdir(parents=True)
        (repo / "src" / "core.py").write_text(f"def run_{i}(value):\n    return value * {i + 2}\n")
        (repo / "LICENSE").write_text(notice if i % 2 else notice.replace("version 2", "version 3"))
        sources.append(str(repo))
    one, pool = tmp_path / "one", tmp_path / "pool"
    assert (
        main(["curate", *sources, "--out", str(one), "--workers", "1", "--shards", "2", "--shard-mb", "0.00001"]) == 0
    )
    assert (
        main(["curate", *sources, "--out", str(pool), "--workers", "2", "--shards", "2", "--shard-mb", "0.00001"]) == 0
    )
    rows = read_table(pool / "manifest").to_pylist()
    assert {r["license_source"] for r in rows if r["path"] == "src/core.py"} == {"scancode:LICENSE"}
    assert {r["license_spdx"] for r in rows} == {"GPL-2.0-or-later", "GPL-3.0-or-later"}
    for name in ("data", "dropped", "manifest", "trees"):
        assert [p.read_bytes() for p in sorted((one / name).glob("*.parquet"))] == [
            p.read_bytes() for p in sorted((pool / name).glob("*.parquet"))
        ], name
    cache = json.loads((pool / "license_cache.json").read_text())["detections"]
    assert sorted(v[0] for v in cache.values()) == ["GPL-2.0-or-later", "GPL-3.0-or-later"]


@pytest.mark.slow
def test_killing_the_driver_alone_leaves_no_worker_behind(tmp_path: Path) -> None:
    """SIGKILL to the driver only (not its process group): its pool workers notice and exit."""
    corpus = sorted(_corpus(tmp_path / "corpus", 8, 20, 6_000).iterdir())
    out = tmp_path / "out"
    process = subprocess.Popen(
        _curate_args(corpus, out, "--shard-mb", "0.2", "--workers", "2"),  # the last wins
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not (out / "_work" / "fragments").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL

    def group_left() -> list[str]:
        left = []
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and os.getpgid(int(entry.name)) == process.pid:
                    left.append(entry.name)
            except OSError:
                pass
        return left

    deadline = time.monotonic() + 15
    while group_left() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not group_left()


@pytest.mark.slow
def test_a_killed_dedup_resumes_to_the_same_bytes(tmp_path: Path) -> None:
    """`codemill dedup` killed as soon as it planned, after the first connected-component round,
    and after its decisions were saved: the rerun reuses what was done and writes the bytes of an
    uninterrupted run."""
    from codemill.cli import main

    corpus = _corpus(tmp_path / "corpus", 10, 10, 3_000)
    for r in range(0, 10, 2):  # copies, so that there is something to remove
        source = corpus / f"proj{r:03d}" / "pkg"
        (corpus / f"proj{r + 1:03d}" / "pkg" / "copy.py").write_text((source / "m000.py").read_text())
    curated = tmp_path / "curated"
    assert (
        main(
            [
                "curate",
                *map(str, sorted(corpus.iterdir())),
                "--out",
                str(curated),
                "--no-licenses",
                "--workers",
                "1",
                "--shards",
                "12",
            ]
        )
        == 0
    )
    dedup = [*CODEMILL, "dedup", str(curated)]
    reference = tmp_path / "reference"
    subprocess.run([*dedup, str(reference), "--workers", "1"], check=True, capture_output=True, timeout=600)
    expected = _outputs(reference)
    assert json.loads((reference / "dedup.json").read_text())["totals"]["removed_files"] >= 5

    points = {
        "as soon as it planned": "plan.json",
        "after a component round": "cc/round-00001/_ROUND.json",
        "after the decisions": "decided.json",
    }
    for name, ready in points.items():
        out = tmp_path / name.replace(" ", "-")
        process = subprocess.Popen(
            [*dedup, str(out), "--workers", "1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 300
        while not (out / "_work" / ready).exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        os.killpg(process.pid, signal.SIGKILL)
        assert process.wait() == -signal.SIGKILL, f"{name}: the run ended before it could be killed"
        rerun = subprocess.run([*dedup, str(out), "--workers", "1"], capture_output=True, text=True, timeout=600)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        assert "resuming an unfinished run" in rerun.stderr, (name, rerun.stderr[-3000:])
        assert _outputs(out) == expected, name
        assert (out / "dedup.json").read_bytes() == (reference / "dedup.json").read_bytes()
