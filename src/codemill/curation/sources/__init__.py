"""Source readers and kind detection.

`plan_sources` turns what the user named (paths, or nothing for the embedded default) into a list
of `SourceSpec`s, one per repository where the kind allows it, so a runner can read repositories
in parallel. `read_source` reads one spec.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

from codemill.curation.limits import IngestLimits
from codemill.curation.sources.archive import is_archive, read_archive
from codemill.curation.sources.base import SourceError, SourceItem, SourceSpec
from codemill.curation.sources.directory import read_directory
from codemill.curation.sources.git import check_ref, is_git_repository, read_git
from codemill.curation.sources.installed import plan_installed, read_installed
from codemill.curation.sources.swh_export import is_swh_export, plan_swh_export, read_swh_origin
from codemill.curation.sources.table import is_table, read_table
from codemill.storage import RemotePath, StoragePath, files_in, location

SOURCE_KINDS = ("directory", "git", "archive", "archives", "swh_export", "table", "installed")

_READERS: dict[str, Callable[[SourceSpec], Iterator[SourceItem]]] = {
    "directory": read_directory,
    "git": read_git,
    "archive": read_archive,
    "swh_export": read_swh_origin,
    "table": read_table,
    "installed": read_installed,
}


def detect_kind(path: StoragePath) -> str:
    if not path.exists():
        raise SourceError(f"source {path} does not exist")
    if path.is_file():
        if is_archive(path):
            return "archive"
        if is_table(str(path)):
            return "table"
        raise SourceError(
            f"source {path}: unknown file type "
            f"(expected an archive {', '.join(('.tar', '.tar.gz', '.tar.zst', '.zip'))}"
            f" or a table .jsonl/.parquet); give --source-kind to force one"
        )
    if isinstance(path, RemotePath):
        if is_swh_export(path):
            return "swh_export"
        if any(is_archive(p) for p in files_in(path)):
            return "archives"
        raise SourceError(
            f"source {path}: a folder on object storage must hold archives or a Software Heritage "
            "export (directories and git repositories are read from local disk)"
        )
    if is_git_repository(path):
        return "git"
    if is_swh_export(path):
        return "swh_export"
    entries = [p for p in path.iterdir() if not p.name.startswith(".")]
    if entries and all(p.is_file() and is_archive(p) for p in entries):
        return "archives"
    return "directory"


def plan_sources(
    paths: list[str],
    kind: str | None = None,
    *,
    max_files: int | None = None,
    limits: IngestLimits = IngestLimits(),
    ref: str | None = None,
    content_store: str | None = None,
) -> list[SourceSpec]:
    """SourceSpecs for the given paths (the embedded default corpus when there are none)."""
    if kind is not None and kind not in SOURCE_KINDS:
        raise SourceError(f"unknown source kind {kind!r}; known: {', '.join(SOURCE_KINDS)}")
    if not paths:
        return [SourceSpec(s.kind, s.uri, s.repo, s.options, limits) for s in plan_installed(max_files)]
    specs: list[SourceSpec] = []
    for raw in paths:
        path = location(raw)
        source_kind = kind or detect_kind(path)
        if isinstance(path, RemotePath) and source_kind in ("directory", "git", "installed"):
            raise SourceError(
                f"source {path}: a {source_kind} source is read from local disk; on object storage "
                "give archives, tables or a Software Heritage export"
            )
        uri = str(path.resolve())
        if source_kind == "archives":
            archives = [p for p in files_in(path) if is_archive(p)]
            if not archives:
                raise SourceError(f"source {path}: a folder of archives holds no archive")
            specs.extend(SourceSpec("archive", str(p.resolve()), limits=limits) for p in archives)
        elif source_kind == "swh_export":
            specs.extend(plan_swh_export(uri, content_store, limits))
        elif source_kind == "git":
            if ref:  # checked here, where the error is a message, not inside a pipeline worker
                check_ref(Path(uri), ref)
            specs.append(SourceSpec("git", uri, options=(("ref", ref),) if ref else (), limits=limits))
        elif source_kind == "table" and path.is_dir():
            raise SourceError(f"source {path}: --source-kind table needs a file (JSONL or Parquet), not a folder")
        else:
            specs.append(SourceSpec(source_kind, uri, limits=limits))
    return specs


def read_source(spec: SourceSpec) -> Iterator[SourceItem]:
    try:
        reader = _READERS[spec.kind]
    except KeyError:
        raise SourceError(f"unknown source kind {spec.kind!r} for {spec.uri}") from None
    return reader(spec)


__all__ = ["SOURCE_KINDS", "SourceError", "SourceSpec", "detect_kind", "plan_sources", "read_source"]
