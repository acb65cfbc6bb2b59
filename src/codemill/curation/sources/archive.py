"""tar / tar.gz / tar.bz2 / tar.xz / tar.zst / zip archives: one archive is one repository.

Members are read in memory, never extracted, so nothing can be written outside the output
directory whatever the member names say. Unsafe members (absolute or `..` paths, links, devices)
become dropped records with the reason; a corrupt or truncated archive keeps the members read
before the damage and adds one record, named after the archive, that says where it broke off.
"""

from __future__ import annotations

import tarfile
import zipfile
import zlib
from typing import IO, Iterator

import zstandard

from codemill.curation.sources.base import (
    RepoSummary,
    SourceFile,
    SourceItem,
    SourceSpec,
    decompressing_reader,
    ingest_bytes,
    iter_with_trees,
    normalize_member_path,
    repo_key,
    unreadable,
    unsafe_path_reason,
)
from codemill.curation.swhid import MODE_EXECUTABLE, MODE_FILE, MODE_SYMLINK, sha1_git_of_stream
from codemill.drops import drop_reason
from codemill.storage import RemotePath, StoragePath, location, open_input

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar.zst", ".tzst")
ZIP_SUFFIXES = (".zip",)
ARCHIVE_SUFFIXES = TAR_SUFFIXES + ZIP_SUFFIXES

# The pseudo-path of the record that reports damage to the archive itself.
ARCHIVE_ERROR_PATH = "<archive>"


def is_archive(path: str | StoragePath) -> bool:
    return str(path).lower().endswith(ARCHIVE_SUFFIXES)


def archive_repo_name(path: str | StoragePath) -> str:
    name = location(path).name
    for suffix in sorted(ARCHIVE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


class _ArchiveBudget:
    """Total uncompressed bytes and member count one archive may spend (zip/tar bomb guard)."""

    def __init__(self, spec: SourceSpec) -> None:
        self.limits = spec.limits
        self.bytes_left = spec.limits.max_archive_bytes
        self.members_left = spec.limits.max_members

    def take(self, size: int) -> str | None:
        self.members_left -= 1
        if self.members_left < 0:
            return f"archive_cap:more than {self.limits.max_members} members"
        if size > self.bytes_left:
            return f"archive_cap:total uncompressed size above {self.limits.max_archive_bytes} bytes"
        self.bytes_left -= size
        return None


def _read_bounded(stream: IO[bytes], declared_size: int, limit: int) -> bytes:
    """Read a member, trusting neither its declared size nor its compression: at most limit+1 bytes."""
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise OverflowError(f"member inflates past {limit} bytes (declared {declared_size})")
    return data


def _open_tar(path: StoragePath) -> tuple[tarfile.TarFile, IO[bytes], IO[bytes] | None]:
    """(tar reader, raw file, decompressed stream to drain at the end so its checksum is verified)."""
    raw = open_input(path)  # an object is read in order, in large blocks
    stream = decompressing_reader(raw, path.name)
    if stream is not None:
        return tarfile.open(fileobj=stream, mode="r|"), raw, stream
    # Streaming mode: members are read in order, memory stays bounded, and a truncated archive
    # yields every member before the damage. (bz2 and xz check their own CRCs as they go.)
    return tarfile.open(fileobj=raw, mode="r|*"), raw, None


def _drain(stream: IO[bytes] | None) -> None:
    """Read a compressed stream to its end: tar stops at its end-of-archive block, before the
    compressor's checksum, so damage in the data would otherwise go unnoticed."""
    if stream is not None:
        while stream.read(1 << 20):
            pass


def _broken_off(
    spec: SourceSpec, key: str, repo: str, summary: RepoSummary, reason: str, error: str, size: int = 0
) -> SourceFile:
    """The archive cannot be read further: mark the repository incomplete and return the record
    that says why (named after the archive, so the manifest shows where reading stopped)."""
    summary.complete, summary.error = False, error
    return unreadable(spec, key, repo, ARCHIVE_ERROR_PATH, reason, size)


_TAR_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error, ValueError, zstandard.ZstdError)


def _tar_members(spec: SourceSpec, key: str, repo: str, summary: RepoSummary) -> Iterator[SourceFile]:
    path = location(spec.uri)
    budget = _ArchiveBudget(spec)
    limit = spec.limits.max_file_bytes
    current = None
    try:
        tar, raw, decompressed = _open_tar(path)
    except _TAR_ERRORS as err:
        yield _broken_off(spec, key, repo, summary, f"archive_corrupt:{err}", f"cannot open archive {spec.uri}: {err}")
        return
    try:
        with raw, tar:
            for member in tar:
                current = member.name
                rel = normalize_member_path(member.name)
                if member.isdir():
                    continue
                reason = unsafe_path_reason(member.name)
                if reason:
                    yield unreadable(spec, key, repo, member.name, reason, member.size)
                    continue
                if member.issym() or member.islnk():
                    kind = "symlink" if member.issym() else "hardlink"
                    if member.issym():
                        # git stores a symlink as a blob of its target text; keep it in the tree
                        item = ingest_bytes(spec, key, repo, rel, member.linkname.encode(), MODE_SYMLINK)
                        item.data, item.drop_reason = None, f"{kind}:{member.linkname}"
                        yield item
                    else:
                        yield unreadable(spec, key, repo, rel, f"{kind}:{member.linkname}")
                    continue
                if not member.isreg():
                    yield unreadable(spec, key, repo, rel, "special_file")
                    continue
                cap = budget.take(member.size)
                if cap:
                    yield _broken_off(spec, key, repo, summary, cap, cap, member.size)
                    return
                mode = MODE_EXECUTABLE if member.mode & 0o111 else MODE_FILE
                stream = tar.extractfile(member)
                assert stream is not None  # a regular file (checked above)
                if member.size >= limit:
                    sha = sha1_git_of_stream(stream, member.size)
                    yield SourceFile(key, repo, rel, member.size, None, sha, mode, "too_large", spec.uri, spec.kind)
                    continue
                yield ingest_bytes(spec, key, repo, rel, _read_bounded(stream, member.size, limit), mode)
            current = None
            _drain(decompressed)
    except _TAR_ERRORS as err:  # gzip.BadGzipFile is an OSError
        where = f" at member {current!r}" if current else ""
        yield _broken_off(
            spec,
            key,
            repo,
            summary,
            drop_reason("archive_corrupt", f"{where.strip()}: {err}" if where else err),
            f"archive {spec.uri} is corrupt or truncated{where}: {err}",
        )


def _zip_members(spec: SourceSpec, key: str, repo: str, summary: RepoSummary) -> Iterator[SourceFile]:
    budget = _ArchiveBudget(spec)
    limits = spec.limits
    try:
        raw = open_input(location(spec.uri))  # zip reads its directory at the end: a seekable object
        archive = zipfile.ZipFile(raw)
    except (zipfile.BadZipFile, OSError) as err:
        yield _broken_off(spec, key, repo, summary, f"archive_corrupt:{err}", f"cannot open archive {spec.uri}: {err}")
        return
    with raw, archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            rel = normalize_member_path(info.filename)
            reason = unsafe_path_reason(info.filename)
            if reason:
                yield unreadable(spec, key, repo, info.filename, reason, info.file_size)
                continue
            unix_mode = info.external_attr >> 16
            if (unix_mode & 0o170000) == 0o120000:
                target = archive.read(info)[:4096].decode("utf-8", "replace")
                item = ingest_bytes(spec, key, repo, rel, target.encode(), MODE_SYMLINK)
                item.data, item.drop_reason = None, f"symlink:{target}"
                yield item
                continue
            if unix_mode and (unix_mode & 0o170000) not in (0, 0o100000):
                yield unreadable(spec, key, repo, rel, "special_file", info.file_size)
                continue
            ratio = info.file_size / max(info.compress_size, 1)
            if info.file_size > 1 * (1 << 20) and ratio > limits.max_compression_ratio:
                yield unreadable(spec, key, repo, rel, f"zip_bomb:compression ratio {ratio:.0f}", info.file_size)
                continue
            cap = budget.take(info.file_size)
            if cap:
                yield _broken_off(spec, key, repo, summary, cap, cap, info.file_size)
                return
            mode = MODE_EXECUTABLE if unix_mode & 0o111 else MODE_FILE
            try:
                with archive.open(info) as stream:
                    if info.file_size >= limits.max_file_bytes:
                        sha = sha1_git_of_stream(stream, info.file_size)
                        yield SourceFile(
                            key, repo, rel, info.file_size, None, sha, mode, "too_large", spec.uri, spec.kind
                        )
                        continue
                    data = _read_bounded(stream, info.file_size, limits.max_file_bytes)
            except (zipfile.BadZipFile, zlib.error, OSError, EOFError, OverflowError, ValueError) as err:
                yield unreadable(spec, key, repo, rel, f"member_corrupt:{err}", info.file_size)
                continue
            yield ingest_bytes(spec, key, repo, rel, data, mode)


def read_archive(spec: SourceSpec) -> Iterator[SourceItem]:
    repo = spec.repo or archive_repo_name(spec.uri)
    key = repo_key(spec.uri, repo)
    source = location(spec.uri)
    origin_url = source.url if isinstance(source, RemotePath) else source.resolve().as_uri()
    summary = RepoSummary(key, repo, spec.uri, spec.kind, origin_url=origin_url)
    members = _zip_members if spec.uri.lower().endswith(ZIP_SUFFIXES) else _tar_members
    yield from iter_with_trees(spec, members(spec, key, repo, summary), summary)
