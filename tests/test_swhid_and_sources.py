"""SWHIDs cross-checked with git, and every source kind read end to end on real inputs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import build_swh_export, git

from codemill.curation.sources import detect_kind, plan_sources, read_source
from codemill.curation.sources.base import RepoSummary, SourceFile
from codemill.curation.swhid import content_swhid, qualified_swhid


def read_all(spec):
    items = list(read_source(spec))
    files = {i.path: i for i in items if isinstance(i, SourceFile)}
    summaries = [i for i in items if isinstance(i, RepoSummary)]
    return files, summaries


def test_content_swhid_matches_git_hash_object(tmp_path: Path) -> None:
    for i, data in enumerate([b"", b"hello\n", bytes(range(256)) * 50, "héllo ✓\n".encode()]):
        path = tmp_path / f"f{i}"
        path.write_bytes(data)
        expected = subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True).stdout.strip()
        assert content_swhid(data) == f"swh:1:cnt:{expected}"


def test_git_source_matches_git_ids(git_repo: Path) -> None:
    (spec,) = plan_sources([str(git_repo)])
    assert spec.kind == "git"
    files, (summary,) = read_all(spec)
    assert summary.revision_swhid == f"swh:1:rev:{git(git_repo, 'rev-parse', 'HEAD').strip()}"
    assert summary.root_dir_swhid == f"swh:1:dir:{git(git_repo, 'rev-parse', 'HEAD^{tree}').strip()}"
    assert summary.snapshot_swhid and summary.snapshot_swhid.startswith("swh:1:snp:")
    assert summary.origin_url == "https://example.org/team/gitdemo.git"
    assert summary.revision_date.startswith("2024-01-02")
    # every sub-tree id agrees with git's
    for tree in summary.trees:
        if tree.path:
            expected = git(git_repo, "rev-parse", f"HEAD:{tree.path}").strip()
            assert tree.swhid == f"swh:1:dir:{expected}", tree.path
    for path, item in files.items():
        expected = git(git_repo, "rev-parse", f"HEAD:{path}").strip()
        assert item.sha1_git.hex() == expected, path
    assert files["link.py"].drop_reason == "symlink"
    assert files["run.sh"].mode == 0o100755


def test_git_source_at_older_ref(git_repo: Path) -> None:
    (spec,) = plan_sources([str(git_repo)], ref="v1")
    files, (summary,) = read_all(spec)
    assert "src/pkg/extra.py" not in files
    assert summary.revision_swhid == f"swh:1:rev:{git(git_repo, 'rev-parse', 'v1^{commit}').strip()}"


def test_directory_source_trees_match_git_write_tree(repo_dir: Path) -> None:
    git(repo_dir, "init", "-q")
    git(repo_dir, "add", "-A")
    expected_root = git(repo_dir, "write-tree").strip()
    (spec,) = plan_sources([str(repo_dir)], kind="directory")
    files, (summary,) = read_all(spec)
    assert summary.root_dir_swhid == f"swh:1:dir:{expected_root}"
    assert set(files) == set(git(repo_dir, "ls-files").split())


def test_qualified_swhid_has_all_qualifiers() -> None:
    q = qualified_swhid(
        "swh:1:cnt:" + "1" * 40,
        origin="https://x.org/r",
        visit="swh:1:snp:" + "2" * 40,
        anchor="swh:1:rev:" + "3" * 40,
        path="a b/c.py",
    )
    assert q == (
        "swh:1:cnt:"
        + "1" * 40
        + ";origin=https://x.org/r;visit=swh:1:snp:"
        + "2" * 40
        + ";anchor=swh:1:rev:"
        + "3" * 40
        + ";path=/a%20b/c.py"
    )


@pytest.mark.parametrize("fmt", ["parquet", "orc"])
def test_swh_export_source(git_repo: Path, tmp_path: Path, fmt: str) -> None:
    export = build_swh_export(git_repo, tmp_path / "export", fmt)
    assert detect_kind(export) == "swh_export"
    (spec,) = plan_sources([str(export)])
    files, (summary,) = read_all(spec)
    assert summary.error is None
    assert summary.origin_url == "https://example.org/team/exported"
    assert summary.root_dir_swhid == f"swh:1:dir:{git(git_repo, 'rev-parse', 'HEAD^{tree}').strip()}"
    assert files["src/pkg/__init__.py"].data.decode().startswith('"""A small module')
    # a blob that went missing from the store is a named drop, not a crash
    sha1 = next(p for p in (export / "content").iterdir())
    sha1.unlink()
    files, _ = read_all(spec)
    assert sum(1 for f in files.values() if f.drop_reason == "swh_blob_missing_from_store") == 1


def test_table_source_with_malformed_rows(tmp_path: Path) -> None:
    table = tmp_path / "rows.jsonl"
    rows = [
        {"repo": "a/one", "path": "x.py", "content": "print('x')\n", "license": "MIT", "stars": 5},
        {"repo": "a/one", "path": "../escape.py", "content": "bad"},
        {"repo": "b/two", "path": "y.py"},
    ]
    table.write_text("\n".join(json.dumps(r) for r in rows) + "\n{not json\n")
    (spec,) = plan_sources([str(table)])
    items = list(read_source(spec))
    files = [i for i in items if isinstance(i, SourceFile)]
    reasons = sorted(f.drop_reason or "ok" for f in files)
    assert reasons == [
        "malformed_row:line 3: missing or non-text content",
        "malformed_row:line 4: Expecting property name enclosed in double quotes",
        "ok",
        "unsafe_path:parent_reference",
    ]
    ok = next(f for f in files if f.drop_reason is None)
    assert ok.declared_license == "MIT"
    summaries = {s.repo: s for s in items if isinstance(s, RepoSummary)}
    assert summaries["a/one"].stars == 5


def test_installed_corpus_plan_is_capped_and_deterministic() -> None:
    first = plan_sources([], max_files=300)
    second = plan_sources([], max_files=300)
    assert first == second
    total = sum(len(s.option("files")) for s in first)
    licences = sum(1 for s in first for repo_path, real in s.option("files") if ".dist-info" in real)
    assert total == max(300, licences)
    assert len(first) > 10  # spread across many distributions
    assert all(s.option("origin_url") for s in first)


def test_installed_corpus_ignores_vendored_trees_put_on_sys_path(tmp_path: Path, monkeypatch) -> None:
    """Importing setuptools puts site-packages/setuptools/_vendor on sys.path; its dist-infos must
    not become repositories of their own (the plan, and `codemill run`'s keys, would depend on
    what the process imported)."""
    root = tmp_path / "site"
    vendored = root / "host" / "_vendor"
    info = vendored / "sneaky-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: sneaky\nVersion: 1.0\n")
    (vendored / "sneaky.py").write_text("x = 1\n")
    (info / "LICENSE").write_text("MIT License\n")  # licence files are always taken
    (info / "RECORD").write_text("sneaky.py,,\nsneaky-1.0.dist-info/METADATA,,\nsneaky-1.0.dist-info/LICENSE,,\n")
    before = plan_sources([], max_files=50)
    import site

    real_sites = site.getsitepackages()
    monkeypatch.setattr(site, "getsitepackages", lambda: [str(root), *real_sites])  # root plays site-packages
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.syspath_prepend(str(vendored))
    after = plan_sources([], max_files=50)
    assert not any(s.repo.startswith("sneaky") for s in after)
    assert after == before


def test_missing_source_is_a_clear_error(tmp_path: Path) -> None:
    from codemill.curation.sources import SourceError

    with pytest.raises(SourceError, match="does not exist"):
        plan_sources([str(tmp_path / "nope")])
    odd = tmp_path / "file.weird"
    odd.write_text("x")
    with pytest.raises(SourceError, match="unknown file type"):
        plan_sources([str(odd)])
