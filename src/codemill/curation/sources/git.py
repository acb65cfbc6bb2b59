"""A git repository (working copy or bare): the files of one commit (HEAD or a given ref).

Blob, tree, commit and snapshot ids are recomputed with swh.model from the object bytes git hands
us, never copied from git's own ids, so a repository whose objects were altered is caught.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Iterator

from codemill.curation.sources.base import (
    RepoSummary,
    SourceError,
    SourceFile,
    SourceItem,
    SourceSpec,
    ingest_bytes,
    iter_with_trees,
    repo_key,
)
from codemill.curation.swhid import MODE_GITLINK, commit_swhid, release_id, snapshot_swhid


def _git(repo: Path, *args: str, check: bool = True) -> bytes:
    result = subprocess.run(["git", "-C", str(repo), *args], capture_output=True)
    if check and result.returncode != 0:
        raise SourceError(f"git repository {repo}: `git {' '.join(args)}` failed: {result.stderr.decode().strip()}")
    return result.stdout


def is_git_repository(path: Path) -> bool:
    return (path / ".git").exists() or ((path / "HEAD").is_file() and (path / "objects").is_dir())


class _BlobReader:
    """One `git cat-file --batch` process for all blobs of the commit."""

    def __init__(self, repo: Path) -> None:
        self.proc = subprocess.Popen(
            ["git", "-C", str(repo), "cat-file", "--batch"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )

    def read(self, object_id: str) -> bytes:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(object_id.encode() + b"\n")
        self.proc.stdin.flush()
        header = self.proc.stdout.readline().split()
        if len(header) != 3:
            raise SourceError(f"git cat-file: object {object_id} is missing ({b' '.join(header).decode()})")
        size = int(header[2])
        data = self.proc.stdout.read(size)
        self.proc.stdout.read(1)  # the newline after the object
        return data

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait()


def _snapshot(repo: Path) -> str:
    branches: dict[bytes, tuple[str, bytes]] = {}
    refs = _git(repo, "for-each-ref", "--format=%(objectname) %(objecttype) %(refname)")
    for line in refs.decode().splitlines():
        object_id, object_type, name = line.split(" ", 2)
        if object_type == "commit":
            branches[name.encode()] = ("revision", bytes.fromhex(object_id))
        elif object_type == "tag":
            raw_tag = _git(repo, "cat-file", "tag", object_id)
            branches[name.encode()] = ("release", release_id(raw_tag))
        elif object_type == "tree":
            branches[name.encode()] = ("directory", bytes.fromhex(object_id))
        elif object_type == "blob":
            branches[name.encode()] = ("content", bytes.fromhex(object_id))
    head_ref = _git(repo, "symbolic-ref", "-q", "HEAD", check=False).strip()
    if head_ref:
        branches[b"HEAD"] = ("alias", head_ref)
    else:
        head = _git(repo, "rev-parse", "--verify", "-q", "HEAD", check=False).strip()
        if head:
            branches[b"HEAD"] = ("revision", bytes.fromhex(head.decode()))
    return snapshot_swhid(branches)


def _remote(root: Path) -> str:
    return _git(root, "config", "--get", "remote.origin.url", check=False).decode().strip()


def git_repo_name(root: Path) -> str:
    """The repository's name: the last part of its origin remote, else its folder's name."""
    remote = _remote(root)
    return remote.rstrip("/").removesuffix(".git").rsplit("/", 1)[-1] if remote else root.resolve().name


def check_ref(root: Path, ref: str) -> None:
    """A SourceError naming the ref when the repository at `root` has no such commit."""
    if not is_git_repository(root):
        raise SourceError(f"{root} is not a git repository (no .git, not a bare repository)")
    found = _git(root, "rev-parse", "--verify", "-q", f"{ref}^{{commit}}", check=False).strip()
    if not found:
        raise SourceError(f"git repository {root}: no commit named {ref!r} (give a branch, tag or commit with --ref)")


def read_git(spec: SourceSpec) -> Iterator[SourceItem]:
    root = Path(spec.uri)
    if not is_git_repository(root):
        raise SourceError(f"{spec.uri} is not a git repository (no .git, not a bare repository)")
    ref = spec.option("ref") or "HEAD"
    commit = _git(root, "rev-parse", "--verify", f"{ref}^{{commit}}").decode().strip()
    raw_commit = _git(root, "cat-file", "commit", commit)
    remote = _remote(root)
    repo = spec.repo or git_repo_name(root)
    key = repo_key(spec.uri, repo)
    summary = RepoSummary(
        key,
        repo,
        spec.uri,
        spec.kind,
        origin_url=remote or root.resolve().as_uri(),
        revision_swhid=commit_swhid(raw_commit),
        snapshot_swhid=_snapshot(root),
        revision_date=_git(root, "show", "-s", "--format=%cI", commit).decode().strip() or None,
    )
    listing = _git(root, "ls-tree", "-r", "-z", "-l", "--full-tree", commit)

    def files() -> Iterator[SourceFile]:
        reader = _BlobReader(root)
        try:
            for line in listing.split(b"\0"):
                if not line:
                    continue
                meta, path_bytes = line.split(b"\t", 1)
                mode_s, object_type, object_id, size_s = meta.decode().split()
                path = path_bytes.decode("utf-8", "surrogateescape")
                mode = int(mode_s, 8)
                if object_type == "commit":  # submodule: a tree entry pointing at a revision
                    yield SourceFile(
                        key,
                        repo,
                        path,
                        0,
                        None,
                        bytes.fromhex(object_id),
                        MODE_GITLINK,
                        "submodule",
                        spec.uri,
                        spec.kind,
                    )
                    continue
                size = int(size_s)
                if size >= spec.limits.max_file_bytes:
                    # Not read: the id is git's own, the one place we trust it (the file is skipped).
                    yield SourceFile(
                        key, repo, path, size, None, bytes.fromhex(object_id), mode, "too_large", spec.uri, spec.kind
                    )
                    continue
                item = ingest_bytes(spec, key, repo, path, reader.read(object_id), mode)
                if item.sha1_git != bytes.fromhex(object_id):
                    item.data, item.drop_reason = None, f"corrupt_object:git says {object_id}"
                if mode == 0o120000 and item.drop_reason is None:
                    item.data, item.drop_reason = None, "symlink"
                yield item
        finally:
            reader.close()

    yield from iter_with_trees(spec, files(), summary)
