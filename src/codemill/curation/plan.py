"""Work units: which repositories one worker curates together, and how many output shards there are.

A unit is the curation's unit of work and of resume: its repositories are read, labelled,
licence-checked and finalized by one worker, a repository at a time, and written as one sorted
fragment per output shard they belong to. Output shards are placed by a hash of the repository
name (`shards.shard_of`), so a repository's files always land together in one shard, and the
number of shards follows the data: the estimated input bytes over the shard target.

Sources that name one repository (a directory, a git repository, an archive, an installed
distribution, an origin of a Software Heritage export) are grouped by the shard of that name, so a
unit usually writes one fragment, which becomes its shard as it is (no copy). A table holds many
repositories: it is a unit of its own and writes a fragment to each shard its repositories hash to.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path

from codemill.curation.sources.base import SourceSpec
from codemill.shards import shard_of
from codemill.storage import location

# Compressed inputs are estimated at this many times their size on disk (code compresses 3-5x).
_COMPRESSED_FACTOR = 4
_COMPRESSED_SUFFIXES = (".gz", ".tgz", ".bz2", ".tbz2", ".xz", ".txz", ".zst", ".tzst", ".zip", ".parquet")
UNITS_PER_SHARD = 4
# An origin of a Software Heritage export: its size is known only while reading its tree.
_UNKNOWN_REPOSITORY_BYTES = 1 << 20


@dataclass(frozen=True)
class WorkUnit:
    name: str  # "shard-00003-00012" (some repositories hashing to shard 3), "table-00001-00002" (part of a table)
    specs: tuple[SourceSpec, ...]
    estimated_bytes: int


def _tree_bytes(root: Path) -> int:
    total = 0
    for dirpath, _, filenames in os.walk(root, followlinks=False):
        for name in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass  # the reader reports unreadable files; an estimate may skip them
    return total


def _file_bytes(path: str) -> int:
    try:
        size = location(path).stat().st_size
    except OSError:
        return 0  # the reader names the missing source when it gets to it
    return size * _COMPRESSED_FACTOR if path.lower().endswith(_COMPRESSED_SUFFIXES) else size


def estimated_bytes(spec: SourceSpec) -> int:
    """Input bytes of a source, estimated without reading it (stat calls only)."""
    if spec.kind == "installed":
        root = Path(spec.option("root"))
        total = 0
        for _, real in spec.option("files", ()):
            try:
                total += os.lstat(root / real).st_size
            except OSError:
                pass
        return total
    if spec.kind == "directory":
        return _tree_bytes(Path(spec.uri))
    if spec.kind == "git":
        git_dir = Path(spec.uri) / ".git"
        return _tree_bytes(git_dir if git_dir.is_dir() else Path(spec.uri)) * 2  # packs are compressed
    if spec.kind in ("archive", "table"):
        return _file_bytes(spec.uri)
    return _UNKNOWN_REPOSITORY_BYTES


def planned_repo(spec: SourceSpec) -> str | None:
    """The repository name a single-repository source will carry, or None for a table (many).
    Only a placement hint: records go to the shard of the name they really carry."""
    if spec.repo:
        return spec.repo
    if spec.kind == "archive":
        from codemill.curation.sources.archive import archive_repo_name

        return archive_repo_name(spec.uri)
    if spec.kind == "git":
        from codemill.curation.sources.git import git_repo_name

        return git_repo_name(Path(spec.uri))
    if spec.kind == "directory":
        return location(spec.uri).resolve().name
    return None


def shard_count(total_bytes: int, shard_bytes: int) -> int:
    return max(1, math.ceil(total_bytes / max(1, shard_bytes)))


def plan_units(specs: list[SourceSpec], shard_bytes: int, num_shards: int | None = None) -> tuple[int, list[WorkUnit]]:
    """(number of output shards, work units). Depends only on the sources and the settings, never
    on the runner or the number of workers, so a rerun plans the same units (resume) and any run
    writes the same bytes."""
    sized = [(spec, estimated_bytes(spec)) for spec in specs]
    n = num_shards or shard_count(sum(size for _, size in sized), shard_bytes)
    by_shard: dict[int, list[tuple[SourceSpec, int]]] = {}
    tables: list[tuple[SourceSpec, int]] = []
    for spec, size in sized:
        repo = planned_repo(spec)
        if repo is None:
            tables.append((spec, size))
        else:
            by_shard.setdefault(shard_of(repo, n), []).append((spec, size))
    # A shard's sources are split into units of about a quarter shard, so that a few shards keep
    # several workers busy; each unit writes its own fragment of the shard (merged after).
    unit_bytes = max(1, shard_bytes // UNITS_PER_SHARD)
    units: list[WorkUnit] = []
    for index, group in sorted(by_shard.items()):
        group.sort(key=lambda pair: (planned_repo(pair[0]) or "", pair[0].uri))
        part: list[tuple[SourceSpec, int]] = []
        for spec, size in group:
            if part and sum(s for _, s in part) + size > unit_bytes:
                units.append(_unit(f"shard-{index:05d}-{len(units):05d}", part))
                part = []
            part.append((spec, size))
        units.append(_unit(f"shard-{index:05d}-{len(units):05d}", part))
    tables.sort(key=lambda pair: (pair[0].uri, pair[0].kind))
    # A table holds many repositories: it is read as one unit per shard's worth of its size, each
    # taking the repositories whose name hashes to its part (see sources/table.py).
    for i, (spec, size) in enumerate(tables):
        parts = shard_count(size, shard_bytes)
        for number in range(parts):
            part_spec = (
                dataclasses.replace(spec, options=spec.options + (("part", (number, parts)),)) if parts > 1 else spec
            )
            units.append(_unit(f"table-{i:05d}-{number:05d}", [(part_spec, size // parts)]))
    return n, units


def _unit(name: str, sized: list[tuple[SourceSpec, int]]) -> WorkUnit:
    return WorkUnit(name, tuple(spec for spec, _ in sized), sum(size for _, size in sized))
