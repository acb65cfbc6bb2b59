"""A local directory as one repository (the working tree, `.git` excluded)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterator

from codemill.curation.sources.base import (
    RepoSummary,
    SourceFile,
    SourceItem,
    SourceSpec,
    ingest_bytes,
    iter_with_trees,
    repo_key,
    unreadable,
)
from codemill.curation.swhid import MODE_EXECUTABLE, MODE_FILE, MODE_SYMLINK, sha1_git_of_stream

SKIP_DIRS = {".git", ".hg", ".svn"}


def walk_files(root: Path) -> Iterator[str]:
    """Relative '/'-paths of every non-directory entry under root, sorted, links not followed."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        # os.walk lists symlinks to directories among dirnames; they are files to git.
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        dirnames[:] = [d for d in dirnames if d not in links]
        rel_dir = os.path.relpath(dirpath, root)
        for name in sorted(filenames + links):
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            yield rel.replace(os.sep, "/")


def read_local_file(spec: SourceSpec, key: str, repo: str, root: Path, rel: str) -> SourceFile:
    """One file of a local tree, with the same rules as git: symlinks are blobs of their target
    text (mode 120000) and are never followed; special files are skipped."""
    full = root / rel
    try:
        st = os.lstat(full)
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(full).encode("utf-8", "surrogateescape")
            item = ingest_bytes(spec, key, repo, rel, target, MODE_SYMLINK)
            item.data, item.drop_reason = None, "symlink"
            return item
        if not stat.S_ISREG(st.st_mode):
            return unreadable(spec, key, repo, rel, "special_file")
        mode = MODE_EXECUTABLE if st.st_mode & 0o111 else MODE_FILE
        if st.st_size >= spec.limits.max_file_bytes:
            with open(full, "rb") as stream:
                sha = sha1_git_of_stream(stream, st.st_size)
            return SourceFile(key, repo, rel, st.st_size, None, sha, mode, "too_large", spec.uri, spec.kind)
        data = full.read_bytes()
    except OSError as err:
        return unreadable(spec, key, repo, rel, f"unreadable:{err.strerror or err}")
    return ingest_bytes(spec, key, repo, rel, data, mode)


def read_directory(spec: SourceSpec) -> Iterator[SourceItem]:
    root = Path(spec.uri)
    repo = spec.repo or root.resolve().name
    key = repo_key(spec.uri, repo)
    summary = RepoSummary(key, repo, spec.uri, spec.kind, origin_url=root.resolve().as_uri())
    files = (read_local_file(spec, key, repo, root, rel) for rel in walk_files(root))
    yield from iter_with_trees(spec, files, summary)
