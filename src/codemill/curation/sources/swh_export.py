"""A Software Heritage graph export (the relational tables swh-dataset publishes, as Parquet or ORC)
plus a content store of gzip blobs keyed by sha1 on any fsspec path (the layout of the public
`s3://softwareheritage/content/<sha1>` bucket).

Tables used: origin(id, url), origin_visit_status(origin, visit, date, status, snapshot),
snapshot_branch(snapshot_id, name, target, target_type), revision(id, date, directory),
directory_entry(directory_id, name, type, target, perms), content(sha1, sha1_git, length, status).
Each origin is one repository: its latest full visit, the snapshot's HEAD (or the first branch),
that revision's tree. Without visit/snapshot tables every revision is its own repository.

Scale: the reader keeps the directory_entry and content tables of the export in memory (per
worker process, loaded once); that suits exports of up to some tens of millions of entries. For
the full graph, split the export by origin first (swh-graph does this) and give each part as a
source.
"""

from __future__ import annotations

import functools
import gzip
from dataclasses import dataclass
from typing import Any, Iterator

import pyarrow as pa
from swh.model.swhids import ObjectType

from codemill.curation.sources.base import (
    RepoSummary,
    SourceError,
    SourceFile,
    SourceItem,
    SourceSpec,
    ingest_bytes,
    iter_with_trees,
    repo_key,
    unreadable,
)
from codemill.curation.swhid import MODE_GITLINK, swhid_of
from codemill.storage import RemotePath, StoragePath, location

REQUIRED_TABLES = ("content", "directory_entry", "revision")


def _table_path(export: StoragePath, name: str) -> StoragePath | None:
    for candidate in (export / f"{name}.parquet", export / f"{name}.orc", export / name):
        if candidate.exists():
            return candidate
    return None


def is_swh_export(path: StoragePath) -> bool:
    return path.is_dir() and all(_table_path(path, name) for name in REQUIRED_TABLES)


def _required(export: StoragePath, name: str) -> pa.Table:
    table = _read(export, name)
    assert table is not None  # _read raises for a missing required table
    return table


def _read(export: StoragePath, name: str, required: bool = True) -> pa.Table | None:
    path = _table_path(export, name)
    if path is None:
        if required:
            raise SourceError(
                f"Software Heritage export {export}: table {name!r} is missing "
                f"(looked for {name}.parquet, {name}.orc, {name}/)"
            )
        return None
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix in (".orc", ".parquet"))
    fmt = "orc" if files and files[0].suffix == ".orc" else "parquet"
    import pyarrow.dataset as ds  # here, not at the top: it imports pandas (~0.5 s) for every curate run

    if isinstance(export, RemotePath):  # pyarrow reads through the fsspec filesystem
        return ds.dataset([f.path for f in files], format=fmt, filesystem=export.fs).to_table()  # type: ignore[union-attr]
    return ds.dataset([str(f) for f in files], format=fmt).to_table()


def _hex(value: Any) -> str:
    """Ids are hex strings in the published export; accept raw 20-byte ids too."""
    if isinstance(value, (bytes, bytearray)):
        return value.hex() if len(value) == 20 else bytes(value).decode("ascii")
    return str(value)


def _bytes_name(value: Any) -> bytes:
    return bytes(value) if isinstance(value, (bytes, bytearray)) else str(value).encode()


@dataclass
class _Export:
    directories: dict[str, list[tuple[bytes, str, str, int]]]  # dir id -> (name, type, target, perms)
    contents: dict[str, tuple[str, int, str]]  # sha1_git -> (sha1, length, status)
    revisions: dict[str, tuple[str, str | None]]  # rev id -> (directory id, date)
    origins: list[tuple[str, str | None, str | None, str | None]]  # (url, head revision, snapshot, visit date)


def _head_revision(branches: list[tuple[bytes, str, str]]) -> str | None:
    """The revision HEAD points at (following aliases), else the first revision branch by name."""
    by_name = {name: (target, kind) for name, target, kind in branches}
    name = b"HEAD"
    for _ in range(8):
        if name not in by_name:
            break
        target, kind = by_name[name]
        if kind == "revision":
            return target
        if kind != "alias":
            break
        name = target.encode()
    revisions = sorted((name, target) for name, target, kind in branches if kind == "revision")
    return revisions[0][1] if revisions else None


@functools.lru_cache(maxsize=2)
def load_export(uri: str) -> _Export:
    export = location(uri)
    directories: dict[str, list] = {}
    for row in _required(export, "directory_entry").to_pylist():
        directories.setdefault(_hex(row["directory_id"]), []).append(
            (_bytes_name(row["name"]), str(row["type"]), _hex(row["target"]), int(row["perms"]))
        )
    contents = {
        _hex(row["sha1_git"]): (_hex(row["sha1"]), int(row["length"] or 0), str(row.get("status") or "visible"))
        for row in _required(export, "content").to_pylist()
    }
    revisions = {
        _hex(row["id"]): (_hex(row["directory"]), str(row["date"]) if row.get("date") is not None else None)
        for row in _required(export, "revision").to_pylist()
    }
    origins_table = _read(export, "origin", required=False)
    visits = _read(export, "origin_visit_status", required=False)
    branches_table = _read(export, "snapshot_branch", required=False)
    origins: list = []
    if origins_table is not None and visits is not None and branches_table is not None:
        branches: dict[str, list] = {}
        for row in branches_table.to_pylist():
            branches.setdefault(_hex(row["snapshot_id"]), []).append(
                (
                    _bytes_name(row["name"]),
                    _bytes_name(row["target"]).decode() if row["target_type"] == "alias" else _hex(row["target"]),
                    str(row["target_type"]),
                )
            )
        latest: dict[str, tuple] = {}
        for row in visits.to_pylist():
            if row.get("status") not in (None, "full") or not row.get("snapshot"):
                continue
            key = str(row["origin"])
            if key not in latest or (row["visit"], str(row["date"])) > latest[key][:2]:
                latest[key] = (row["visit"], str(row["date"]), _hex(row["snapshot"]))
        for row in sorted(origins_table.to_pylist(), key=lambda r: str(r["url"])):
            visit = latest.get(str(row["url"])) or latest.get(str(row.get("id")))
            if visit is None:
                origins.append((str(row["url"]), None, None, None))
                continue
            head = _head_revision(branches.get(visit[2], []))
            origins.append((str(row["url"]), head, visit[2], visit[1]))
    else:
        origins = [(None, rev, None, None) for rev in sorted(revisions)]
    return _Export(directories, contents, revisions, origins)


def plan_swh_export(uri: str, content_store: str | None, limits) -> list[SourceSpec]:
    export = load_export(uri)
    store = content_store or str(location(uri) / "content")
    specs = []
    for url, head, snapshot, visit_date in export.origins:
        name = url.rstrip("/").rsplit("/", 1)[-1] if url else swhid_of(ObjectType.REVISION, bytes.fromhex(head or ""))
        specs.append(
            SourceSpec(
                kind="swh_export",
                uri=uri,
                repo=name,
                options=(
                    ("origin_url", url),
                    ("revision", head),
                    ("snapshot", snapshot),
                    ("visit_date", visit_date),
                    ("content_store", store),
                ),
                limits=limits,
            )
        )
    return specs


def _fetch(store: str, sha1: str) -> bytes:
    return gzip.decompress(location(f"{store.rstrip('/')}/{sha1}").read_bytes())


def read_swh_origin(spec: SourceSpec) -> Iterator[SourceItem]:
    export = load_export(spec.uri)
    repo = spec.repo or spec.uri
    key = repo_key(spec.uri, repo)
    head = spec.option("revision")
    snapshot = spec.option("snapshot")
    summary = RepoSummary(
        key,
        repo,
        spec.uri,
        spec.kind,
        origin_url=spec.option("origin_url"),
        revision_swhid=swhid_of(ObjectType.REVISION, bytes.fromhex(head)) if head else None,
        snapshot_swhid=swhid_of(ObjectType.SNAPSHOT, bytes.fromhex(snapshot)) if snapshot else None,
        visit_date=spec.option("visit_date"),
    )
    if head is None or head not in export.revisions:
        summary.complete = False
        summary.error = f"origin {spec.option('origin_url')}: no visited revision in the export"
        yield unreadable(spec, key, repo, "<origin>", "swh_no_revision")
        yield summary
        return
    root_dir, summary.revision_date = export.revisions[head]
    store = spec.option("content_store")

    def files() -> Iterator[SourceFile]:
        stack = [("", root_dir)]
        while stack:
            prefix, dir_id = stack.pop()
            if dir_id not in export.directories and prefix:
                yield unreadable(spec, key, repo, prefix, "swh_directory_missing")
                continue
            for name, kind, target, perms in sorted(export.directories.get(dir_id, [])):
                path = (
                    f"{prefix}/{name.decode('utf-8', 'surrogateescape')}"
                    if prefix
                    else name.decode("utf-8", "surrogateescape")
                )
                if kind == "dir":
                    stack.append((path, target))
                elif kind == "rev":
                    yield SourceFile(
                        key, repo, path, 0, None, bytes.fromhex(target), MODE_GITLINK, "submodule", spec.uri, spec.kind
                    )
                else:
                    yield _read_content(spec, key, repo, path, target, perms, export, store)

    yield from iter_with_trees(spec, files(), summary)
    if summary.root_dir_swhid and summary.root_dir_swhid != swhid_of(ObjectType.DIRECTORY, bytes.fromhex(root_dir)):
        summary.error = f"tree of {head} recomputed as {summary.root_dir_swhid}, export says {root_dir}"


def _read_content(spec, key, repo, path, sha1_git, perms, export: _Export, store: str) -> SourceFile:
    expected = bytes.fromhex(sha1_git)
    meta = export.contents.get(sha1_git)
    if meta is None:
        return SourceFile(
            key, repo, path, 0, None, expected, perms, "swh_content_missing_from_table", spec.uri, spec.kind
        )
    sha1, length, status = meta
    if status != "visible":
        return SourceFile(key, repo, path, length, None, expected, perms, f"swh_content_{status}", spec.uri, spec.kind)
    if length >= spec.limits.max_file_bytes:
        return SourceFile(key, repo, path, length, None, expected, perms, "too_large", spec.uri, spec.kind)
    try:
        data = _fetch(store, sha1)
    except FileNotFoundError:
        return SourceFile(
            key, repo, path, length, None, expected, perms, "swh_blob_missing_from_store", spec.uri, spec.kind
        )
    except (OSError, EOFError) as err:
        return SourceFile(
            key, repo, path, length, None, expected, perms, f"swh_blob_corrupt:{err}", spec.uri, spec.kind
        )
    item = ingest_bytes(spec, key, repo, path, data, perms)
    if item.sha1_git != expected:
        item.sha1_git, item.data, item.drop_reason = expected, None, "swh_blob_hash_mismatch"
    return item
