"""End to end: the Beam curation pipeline over every source kind, the manifest, and its verification."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_archives import hostile_tar

from codemill.cli import main
from codemill.curation.manifest import verify
from codemill.curation.sources import plan_sources, read_source
from codemill.curation.sources.base import SourceFile
from codemill.shards import read_table


@pytest.fixture
def sources(tmp_path: Path, repo_dir: Path, git_repo: Path) -> list[str]:
    archive = hostile_tar(tmp_path / "hostile.tar.gz")
    table = tmp_path / "rows.jsonl"
    table.write_text(
        json.dumps({"repo": "t/one", "path": "m.py", "content": "def m():\n    return 42\n", "license": "Apache-2.0"})
        + "\n"
        + json.dumps({"repo": "t/one", "path": "n.py"})
        + "\n"
    )
    return [str(repo_dir), str(git_repo), str(archive), str(table)]


def curate(sources: list[str], out: Path, *extra: str) -> int:
    return main(["curate", *sources, "--out", str(out), "--workers", "1", *extra])


def by_path(table) -> dict[tuple[str, str], dict]:
    return {(row["repo"], row["path"]): row for row in table.to_pylist()}


def test_curate_every_source_kind(tmp_path: Path, sources: list[str]) -> None:
    out = tmp_path / "out"
    assert curate(sources, out) == 0
    manifest = read_table(out / "manifest")
    input_files = sum(1 for spec in plan_sources(sources) for item in read_source(spec) if isinstance(item, SourceFile))
    assert manifest.num_rows == input_files  # the manifest accounts for every input file
    rows = by_path(manifest)

    settings = rows[("demo-repo", "src/pkg/settings.py")]
    assert settings["kept"] and settings["license_spdx"] == "MIT" and settings["license_type"] == "permissive"
    assert settings["license_source"] == "index@0.9879:LICENSE"  # the fast path settled the MIT text
    assert settings["qualified_swhid"].startswith(settings["swhid"] + ";origin=file://")
    assert sorted(settings["pii_types"]) == ["EMAIL", "IP_ADDRESS", "KEY", "PASSWORD"]
    vendored = rows[("demo-repo", "vendor_lib/third/impl.py")]
    assert vendored["license_type"] == "non_permissive" and "GPL-3.0" in vendored["license_spdx"]
    assert rows[("demo-repo", "src/pkg/minified.js")]["drop_reason"] == "filter:long_lines"
    assert rows[("demo-repo", "src/pkg/blob.bin")]["drop_reason"] == "binary:nul_bytes"
    assert rows[("demo-repo", "link.py")]["drop_reason"] == "symlink"

    git_file = rows[("gitdemo", "src/pkg/__init__.py")]
    assert ";visit=swh:1:snp:" in git_file["qualified_swhid"] and ";anchor=swh:1:rev:" in git_file["qualified_swhid"]
    assert git_file["origin_swhid"].startswith("swh:1:snp:")
    assert git_file["origin_url"] == "https://example.org/team/gitdemo.git"

    assert rows[("hostile", "../escape.py")]["drop_reason"] == "unsafe_path:parent_reference"
    assert rows[("hostile", "pkg/good.py")]["kept"]
    assert rows[("t/one", "m.py")]["license_spdx"] == "Apache-2.0"
    assert rows[("t/one", "m.py")]["license_source"] == "declared:table"

    data = by_path(read_table(out / "data"))
    stored = data[("demo-repo", "src/pkg/settings.py")]["content"]
    assert "jane.doe@corp-mail.net" not in stored and "<EMAIL>" in stored
    assert all(row["kept"] for row in data.values())
    assert all(not row["kept"] for row in read_table(out / "dropped").to_pylist())

    trees = read_table(out / "trees").to_pylist()
    assert any(t["repo"] == "gitdemo" and t["path"] == "" for t in trees)

    stats = json.loads((out / "stats.json").read_text())
    assert stats["totals"]["files"] == input_files
    assert stats["filters_fired"]["long_lines"] >= 1
    assert stats["pii_files_by_type"]["EMAIL"] >= 2  # the directory and the git copy

    report = verify(out, progress=False)
    assert report.ok, report.problems
    assert report.files_checked == input_files
    assert_loadable_by_datasets(out, ("data", "dropped", "manifest", "trees"))


def assert_loadable_by_datasets(out: Path, tables: tuple[str, ...]) -> None:
    """Every shard, the empty ones included, loads with Hugging Face `datasets` (which refuses a
    row group of 0 rows): an empty shard is the schema with no row group."""
    import datasets

    files = sorted(out.rglob("*.parquet"))
    for f in files:
        metadata = pq.ParquetFile(f).metadata
        assert all(metadata.row_group(i).num_rows > 0 for i in range(metadata.num_row_groups)), f
    for table in tables:
        loaded = datasets.load_dataset("parquet", data_dir=str(out / table), split="train")
        assert loaded.num_rows == read_table(out / table).num_rows, table


def test_an_empty_shard_has_no_row_group_and_loads_beside_full_ones(tmp_path: Path) -> None:
    from codemill.shards import write_table_atomic

    full = pa.table({"x": [1, 2], "s": ["a", "b"]})
    write_table_atomic(tmp_path / "t" / "part-00000.parquet", full)
    write_table_atomic(tmp_path / "t" / "part-00001.parquet", full.schema.empty_table())
    empty = pq.ParquetFile(tmp_path / "t" / "part-00001.parquet")
    assert empty.metadata.num_row_groups == 0 and empty.schema_arrow == full.schema
    assert_loadable_by_datasets(tmp_path, ("t",))


def test_manifest_verify_names_altered_files(tmp_path: Path, repo_dir: Path) -> None:
    out = tmp_path / "out"
    assert curate([str(repo_dir)], out) == 0
    target = repo_dir / "src" / "pkg" / "__init__.py"
    original = target.read_text()
    target.write_text("tampered = True\n")
    report = verify(out, progress=False)
    assert not report.ok
    assert any("demo-repo/src/pkg/__init__.py: content changed" in p for p in report.problems)
    assert main(["manifest", "verify", str(out)]) == 1

    # altering the stored text is caught too
    target.write_text(original)
    assert verify(out, progress=False).ok
    shard = next(p for p in sorted((out / "data").glob("part-*.parquet")) if pq.read_table(p).num_rows)
    table = pq.read_table(shard)
    contents = table.column("content").to_pylist()
    contents[0] = contents[0] + "\n# injected\n"
    column = pa.array(contents, table.schema.field("content").type)
    pq.write_table(table.set_column(table.schema.get_field_index("content"), "content", column), shard)
    report = verify(out, progress=False)
    assert any("stored text altered" in p for p in report.problems)


def test_same_input_gives_byte_identical_manifest(tmp_path: Path, repo_dir: Path, git_repo: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    assert curate([str(repo_dir), str(git_repo)], first) == 0
    assert curate([str(repo_dir), str(git_repo)], second) == 0
    for table in ("manifest", "data", "dropped", "trees"):
        a = sorted((first / table).glob("*.parquet"))
        b = sorted((second / table).glob("*.parquet"))
        assert [p.name for p in a] == [p.name for p in b]
        assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b, strict=True)), table


@pytest.mark.slow
def test_parallel_runs_give_identical_output(tmp_path: Path, repo_dir: Path, git_repo: Path) -> None:
    """A local process pool (--workers 2) and Beam's own multi-process runner write the same bytes
    as one process."""
    one, pool, beam_mp = tmp_path / "one", tmp_path / "pool", tmp_path / "beam"
    assert curate([str(repo_dir), str(git_repo)], one) == 0
    assert main(["curate", str(repo_dir), str(git_repo), "--out", str(pool), "--workers", "2"]) == 0
    assert (
        curate(
            [str(repo_dir), str(git_repo)], beam_mp, "--direct_num_workers=2", "--direct_running_mode=multi_processing"
        )
        == 0
    )
    for other in (pool, beam_mp):
        for table in ("manifest", "data", "dropped", "trees"):
            first, second = sorted((one / table).glob("*.parquet")), sorted((other / table).glob("*.parquet"))
            assert first and [p.name for p in first] == [p.name for p in second]
            for x, y in zip(first, second, strict=True):
                assert x.read_bytes() == y.read_bytes(), (other.name, table, x.name)


def test_optout_and_cli_errors(tmp_path: Path, repo_dir: Path, capsys) -> None:
    optout = tmp_path / "optout.txt"
    optout.write_text("demo-repo\n")
    out = tmp_path / "out"
    assert curate([str(repo_dir)], out, "--optout", str(optout)) == 0
    rows = read_table(out / "manifest").to_pylist()
    assert rows and all(r["drop_reason"] in ("opted_out:demo-repo", "symlink", "binary:nul_bytes") for r in rows)
    assert read_table(out / "data").num_rows == 0

    assert curate([str(tmp_path / "missing")], tmp_path / "o2") == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("curate:\n  filters:\n    max_lines_typo: 3\n")
    assert curate([str(repo_dir)], tmp_path / "o3", "--config", str(bad)) == 2
    assert "unknown filter setting" in capsys.readouterr().err
    # --max-files caps only the default corpus: said when given with SOURCE paths.
    assert curate([str(repo_dir)], tmp_path / "o4", "--max-files", "3", "--no-licenses") == 0
    assert "--max-files caps only the embedded default corpus" in capsys.readouterr().err
    # Without SOURCE, a run config's `run: sources` are read (not the default corpus).
    run_config = tmp_path / "run.yaml"
    run_config.write_text(f"run: {{sources: [{repo_dir}]}}\ncurate: {{detect_licenses: false}}\n")
    assert curate([], tmp_path / "o5", "--config", str(run_config)) == 0
    assert {r["repo"] for r in read_table(tmp_path / "o5" / "manifest").to_pylist()} == {"demo-repo"}


@pytest.mark.parametrize(
    "argv, stray",
    [
        (["curate", "SRC", "--out", "OUT", "--no_pii"], "--no_pii"),  # misspelt: it is --no-pii
        (["curate", "SRC", "--out", "OUT", "--no-licence"], "--no-licence"),
        (["dedup", "SRC", "--out", "OUT", "--bogus=1"], "--bogus=1"),
        (["tokenize", "SRC", "--out", "OUT", "--tokenizer", "SRC", "--num_shards", "3"], "--num_shards"),
        (["run", "SRC", "--out", "OUT"], "SRC"),  # `run` takes its sources from the config, not a path
    ],
)
def test_unknown_options_and_stray_arguments_are_refused(tmp_path: Path, argv: list[str], stray: str, capsys) -> None:
    names = {"SRC": str(tmp_path / "src"), "OUT": str(tmp_path / "out")}
    with pytest.raises(SystemExit) as exited:
        main([names.get(a, a) for a in argv])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"unrecognized arguments for `codemill {argv[0]}`" in err and names.get(stray, stray) in err, err
    assert not (tmp_path / "out").exists()  # nothing ran


def test_beam_pipeline_options_still_pass_through() -> None:
    from codemill.pipelines.common import unknown_pipeline_args

    known = ["--runner=DirectRunner", "--direct_num_workers", "2", "--dask_partitions=8", "--job_name", "x"]
    assert unknown_pipeline_args(known) == []
    assert unknown_pipeline_args(["--direct_num_worker=2", "stray"]) == ["--direct_num_worker=2", "stray"]


def test_truncated_archive_in_pipeline_keeps_good_files(tmp_path: Path) -> None:
    archive = tmp_path / "broken.tar"
    with tarfile.open(archive, "w") as tar:
        from test_archives import GOOD, add_bytes

        add_bytes(tar, "ok.py", GOOD)
        add_bytes(tar, "big.py", b"x = 1\n" * 50_000)
    archive.write_bytes(archive.read_bytes()[:100_000])
    out = tmp_path / "out"
    assert curate([str(archive)], out) == 0
    rows = by_path(read_table(out / "manifest"))
    assert rows[("broken", "ok.py")]["kept"]
    assert rows[("broken", "<archive>")]["drop_reason"].startswith("archive_corrupt:at member 'big.py'")


def test_help_reads_like_the_readme(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "curate" in text and "manifest" in text and "SWHID" in text


def test_no_licenses_switch_leaves_only_declared_licences(tmp_path: Path, sources: list[str]) -> None:
    out = tmp_path / "out"
    assert curate(sources, out, "--no-licenses") == 0
    rows = by_path(read_table(out / "manifest"))
    assert rows[("demo-repo", "src/pkg/settings.py")]["license_type"] == "no_license"
    assert rows[("t/one", "m.py")]["license_spdx"] == "Apache-2.0"  # declared in the table


def test_a_run_with_missing_shards_is_never_marked_finished(tmp_path: Path, repo_dir: Path) -> None:
    from codemill.pipelines.outputs import IncompleteOutputError, check_outputs, repo_layout_shards

    out = tmp_path / "out"
    assert curate([str(repo_dir)], out) == 0
    shards = repo_layout_shards(out)
    check_outputs(out, shards)
    next((out / "data").glob("part-*.parquet")).unlink()
    with pytest.raises(IncompleteOutputError, match="missing: data/part-"):
        check_outputs(out, shards)


def test_the_main_curate_bar_counts_files_as_units_read_them(tmp_path: Path, sources: list[str], monkeypatch) -> None:
    """Each unit (here in two pool processes) reports the files it has read; the driver's bar sums
    them, so it moves while units run instead of waiting for whole units."""
    from codemill.curation import unit_progress
    from codemill.pipelines import curate as stage

    seen: list[int] = []

    class Recording(unit_progress.FilesBar):
        def __exit__(self, *exc) -> None:
            seen.append(unit_progress.files_read(self.work_dir))
            super().__exit__(*exc)

    monkeypatch.setattr(stage, "FilesBar", Recording)
    monkeypatch.setenv("CODEMILL_PROGRESS", "1")
    assert curate(sources, tmp_path / "out", "--workers", "2", "--shards", "3") == 0
    files = json.loads((tmp_path / "out" / "stats.json").read_text())["totals"]["files"]
    assert seen == [files] and files > 3


def test_unit_progress_is_written_whole_and_summed(tmp_path: Path) -> None:
    from codemill.curation.unit_progress import PROGRESS_DIR, UnitProgress, files_read

    first, second = UnitProgress(tmp_path, "unit-a"), UnitProgress(tmp_path, "unit-b")
    first.add(3)
    second.add(2)
    first.write()
    second.write()
    (tmp_path / PROGRESS_DIR / "unit-c.json").write_text("{")  # a unit caught between writes
    assert files_read(tmp_path) == 5
    assert UnitProgress("s3://bucket/work", "unit-a").path is None  # object storage: no writes
