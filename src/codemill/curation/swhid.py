"""SWHIDs (Software Heritage identifiers) computed with swh.model.

`swh:1:cnt` ids are git blob ids, `swh:1:dir` ids git tree ids, `swh:1:rev` git commit ids and
`swh:1:snp` the Software Heritage snapshot of a repository's refs. Trees are built from the
(path, blob id, mode) triples a source yields, so every source kind (directory, git, archive,
installed distribution) gets its tree SWHIDs the same way, without re-reading file contents.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import IO, Iterable

from swh.model import model
from swh.model.hashutil import hash_git_data
from swh.model.swhids import CoreSWHID, ObjectType, QualifiedSWHID

# git file modes as Software Heritage stores them in directory entries.
MODE_FILE = 0o100644
MODE_EXECUTABLE = 0o100755
MODE_SYMLINK = 0o120000
MODE_GITLINK = 0o160000  # a submodule: the entry points at a revision


def blob_id(data: bytes) -> bytes:
    # hash_git_data computes only sha1_git; model.Content.from_data would also compute
    # sha256 and blake2s256, tripling the hashing cost of ingest.
    return hash_git_data(data, "blob")


def content_swhid(data: bytes) -> str:
    return swhid_of(ObjectType.CONTENT, blob_id(data))


def sha1_git_of_stream(stream: IO[bytes], length: int, chunk_size: int = 1 << 20) -> bytes:
    """Blob id of a stream of known length, without holding it in memory (for files we skip)."""
    digest = hashlib.sha1(b"blob %d\0" % length)
    remaining = length
    while remaining > 0:
        chunk = stream.read(min(chunk_size, remaining))
        if not chunk:
            raise ValueError(f"stream ended {remaining} bytes early")
        digest.update(chunk)
        remaining -= len(chunk)
    return digest.digest()


def swhid_of(object_type: ObjectType, object_id: bytes) -> str:
    return str(CoreSWHID(object_type=object_type, object_id=object_id))


def commit_swhid(raw_commit_object: bytes) -> str:
    """swh:1:rev of a raw git commit object (the bytes `git cat-file commit` prints)."""
    return swhid_of(ObjectType.REVISION, hash_git_data(raw_commit_object, "commit"))


def release_id(raw_tag_object: bytes) -> bytes:
    return hash_git_data(raw_tag_object, "tag")


@dataclass(frozen=True)
class TreeEntry:
    path: str  # '/'-separated path relative to the root
    target: bytes  # sha1_git of the blob (or the commit, for a submodule)
    mode: int = MODE_FILE


def _entry_type(mode: int) -> str:
    return "rev" if mode == MODE_GITLINK else "file"


def tree_swhids(entries: Iterable[TreeEntry]) -> dict[str, str]:
    """swh:1:dir SWHID of every directory that holds at least one entry, keyed by its path ('' = root).

    Matches `git write-tree` for the same files: empty directories do not exist, as in git.
    """
    root: dict = {}
    for entry in entries:
        parts = entry.path.split("/")
        node = root
        for part in parts[:-1]:
            child = node.setdefault(part.encode(), {})
            if not isinstance(child, dict):
                raise ValueError(f"{entry.path!r}: a file and a directory share the name {part!r}")
            node = child
        node[parts[-1].encode()] = entry

    result: dict[str, str] = {}

    def build(node: dict, path: str) -> bytes:
        dir_entries = []
        for name, child in node.items():
            if isinstance(child, dict):
                child_id = build(child, f"{path}/{name.decode()}" if path else name.decode())
                dir_entries.append(model.DirectoryEntry(name=name, type="dir", target=child_id, perms=0o040000))
            else:
                dir_entries.append(
                    model.DirectoryEntry(name=name, type=_entry_type(child.mode), target=child.target, perms=child.mode)
                )
        directory = model.Directory(entries=tuple(dir_entries))
        result[path] = str(directory.swhid())
        return directory.id

    if root:
        build(root, "")
    return result


def snapshot_swhid(branches: dict[bytes, tuple[str, bytes]]) -> str:
    """swh:1:snp of a repository's refs: name -> (target type, target id or alias name).

    Target types are those of swh.model: "revision", "release", "alias", "directory", "content".
    """
    snapshot = model.Snapshot(
        branches={
            name: model.SnapshotBranch(target=target, target_type=model.SnapshotTargetType(kind))
            for name, (kind, target) in branches.items()
        }
    )
    return str(snapshot.swhid())


@functools.lru_cache(maxsize=1024)
def _parsed(swhid: str) -> CoreSWHID:
    """A repository's snapshot / anchor SWHID, parsed once for all its files (CoreSWHID is frozen;
    parsing is ~30 us, two thirds of a qualified SWHID's cost)."""
    return CoreSWHID.from_string(swhid)


def qualified_swhid(
    content: str,
    *,
    origin: str | None,
    visit: str | None,
    anchor: str | None,
    path: str,
) -> str:
    core = CoreSWHID.from_string(content)
    return str(
        QualifiedSWHID(
            object_type=core.object_type,
            object_id=core.object_id,
            origin=origin,
            visit=_parsed(visit) if visit else None,
            anchor=_parsed(anchor) if anchor else None,
            path=("/" + path).encode(),
        )
    )
