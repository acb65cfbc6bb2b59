"""What every source reader yields, and the ingest checks they share.

A reader turns one `SourceSpec` (one repository: a directory, a git repository, an archive, an
installed distribution, the files of one origin of a Software Heritage export, the rows of one
repo in a table) into a stream of `SourceFile`s followed by one `RepoSummary`. The summary comes
last because the tree SWHIDs are known only after every file was hashed; the pipeline joins it
back to the files by `repo_key`.
"""

from __future__ import annotations

import dataclasses
import gzip
import posixpath
from dataclasses import dataclass, field
from typing import IO, Any, Iterator, Union

from codemill.curation.limits import IngestLimits
from codemill.curation.swhid import MODE_FILE, TreeEntry, blob_id, tree_swhids
from codemill.errors import UserError
from codemill.records import TreeRecord


@dataclass(frozen=True)
class SourceSpec:
    kind: str  # directory | git | archive | swh_export | table | installed
    uri: str  # path (or fsspec URL) of the source
    repo: str | None = None  # repository name; derived from the uri when None
    options: tuple[tuple[str, Any], ...] = ()  # kind-specific, e.g. (("ref", "main"),)
    limits: IngestLimits = IngestLimits()

    def option(self, name: str, default: Any = None) -> Any:
        return dict(self.options).get(name, default)


@dataclass
class SourceFile:
    repo_key: str  # unique per repository across all sources: "<source uri>#<repo>"
    repo: str
    path: str
    size: int
    data: bytes | None  # None when the bytes are not kept (too large, link, unreadable, ...)
    sha1_git: bytes | None  # blob id of the original bytes; None if they could not be read
    mode: int = MODE_FILE
    drop_reason: str | None = None  # set when ingest already rejects the file
    source_uri: str = ""
    source_kind: str = ""
    # Per-file metadata some sources carry (tables of {repo, path, content, license, ...}).
    declared_license: str | None = None


@dataclass
class RepoSummary:
    repo_key: str
    repo: str
    source_uri: str
    source_kind: str
    origin_url: str | None = None
    root_dir_swhid: str | None = None
    revision_swhid: str | None = None
    snapshot_swhid: str | None = None
    revision_date: str | None = None
    visit_date: str | None = None
    stars: int | None = None
    forks: int | None = None
    declared_license: str | None = None  # SPDX expression from package metadata / export tables
    declared_license_source: str | None = None
    trees: list[TreeRecord] = field(default_factory=list)
    complete: bool = True  # False when the source broke off (truncated archive, ...)
    error: str | None = None

    @property
    def origin_swhid(self) -> str | None:
        return self.snapshot_swhid or self.revision_swhid or self.root_dir_swhid

    @property
    def anchor(self) -> str | None:
        return self.revision_swhid or self.root_dir_swhid


SourceItem = Union[SourceFile, RepoSummary]


class SourceError(UserError):
    """A source cannot be read at all (missing, wrong kind); names the source and the reason."""


def repo_key(source_uri: str, repo: str) -> str:
    return f"{source_uri}#{repo}"


def unsafe_path_reason(path: str) -> str | None:
    """Why a member path may not be used, or None. Archive members are never extracted to disk,
    but their paths become record paths and tree entries, so they must stay inside the repo."""
    if not path or path.startswith("/") or (len(path) > 1 and path[1] == ":"):
        return "unsafe_path:absolute"
    parts = path.replace("\\", "/").split("/")
    if ".." in parts:
        return "unsafe_path:parent_reference"
    return None


def normalize_member_path(path: str) -> str:
    path = path.replace("\\", "/")
    while path.startswith("./"):
        path = path[2:]
    return posixpath.normpath(path) if path else path


def ingest_bytes(spec: SourceSpec, key: str, repo: str, path: str, data: bytes, mode: int = MODE_FILE) -> SourceFile:
    """A file whose bytes are in memory: hash them and apply the ingest skips."""
    reason = None
    kept: bytes | None = data
    if len(data) >= spec.limits.max_file_bytes:
        reason, kept = "too_large", None
    elif b"\0" in data:
        reason, kept = "binary:nul_bytes", None
    return SourceFile(
        repo_key=key,
        repo=repo,
        path=path,
        size=len(data),
        data=kept,
        sha1_git=blob_id(data),
        mode=mode,
        drop_reason=reason,
        source_uri=spec.uri,
        source_kind=spec.kind,
    )


def decompressing_reader(raw: IO[bytes], name: str) -> IO[bytes] | None:
    """A decompressing stream over raw for .gz/.tgz and .zst/.tzst names, else None.

    gzip.GzipFile checks the CRC when the stream is read to its end (tarfile's own gzip reader
    never does); zstandard checks frame checksums as it reads."""
    lower = name.lower()
    if lower.endswith((".gz", ".tgz")):
        return gzip.GzipFile(fileobj=raw)  # type: ignore[return-value]
    if lower.endswith((".zst", ".tzst")):
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
    return None


def unreadable(spec: SourceSpec, key: str, repo: str, path: str, reason: str, size: int = 0) -> SourceFile:
    return SourceFile(
        repo_key=key,
        repo=repo,
        path=path,
        size=size,
        data=None,
        sha1_git=None,
        drop_reason=reason,
        source_uri=spec.uri,
        source_kind=spec.kind,
    )


class TreeCollector:
    """Collects (path, blob id, mode) of a repository's files to compute its tree SWHIDs at the end."""

    def __init__(self) -> None:
        self.entries: dict[str, TreeEntry] = {}

    def add(self, item: SourceFile) -> SourceFile:
        if item.sha1_git is not None and unsafe_path_reason(item.path) is None:
            self.entries[item.path] = TreeEntry(item.path, item.sha1_git, item.mode)
        return item

    def trees(self, summary: RepoSummary) -> RepoSummary:
        try:
            by_path = tree_swhids(self.entries.values())
        except ValueError as err:  # a path that is both a file and a directory
            summary.error = f"tree: {err}"
            return summary
        summary.root_dir_swhid = by_path.get("")
        summary.trees = [
            TreeRecord(swhid=swhid, repo=summary.repo, path=path, source_uri=summary.source_uri)
            for path, swhid in sorted(by_path.items())
        ]
        return summary


def iter_with_trees(spec: SourceSpec, files: Iterator[SourceFile], summary: RepoSummary) -> Iterator[SourceItem]:
    """Yield files, then the summary with its trees filled in (unless the source broke off)."""
    collector = TreeCollector()
    for item in files:
        yield collector.add(item)
    if summary.complete:
        collector.trees(summary)
    yield summary


def spec_to_json(spec: SourceSpec) -> dict[str, Any]:
    return {
        "kind": spec.kind,
        "uri": spec.uri,
        "repo": spec.repo,
        "options": [[name, value] for name, value in spec.options],
        "limits": dataclasses.asdict(spec.limits),
    }


def _tuplify(value: Any) -> Any:
    return tuple(_tuplify(v) for v in value) if isinstance(value, list) else value


def spec_from_json(data: dict[str, Any]) -> SourceSpec:
    return SourceSpec(
        kind=data["kind"],
        uri=data["uri"],
        repo=data.get("repo"),
        options=tuple((name, _tuplify(value)) for name, value in data.get("options", [])),
        limits=IngestLimits(**data.get("limits", {})),
    )
