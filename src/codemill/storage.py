"""Where codemill reads and writes: local paths, and fsspec URLs (s3://, gs://, az://, memory://...).

`location(text)` gives a `pathlib.Path` for a local path and a `RemotePath` for a URL. A
`RemotePath` answers the part of pathlib's API that stages use (`/`, `name`, `parent`, `exists`,
`glob`, `read_text`, `write_text`, `unlink`, ...), so a stage handles both without branching.
It has no `__fspath__`: a library that needs a local file (NumPy's memmap, tokenizers' save)
fails loudly on a URL instead of writing to a local folder named "s3:". For those, `staged`
hands out a local file that is published whole, and `local_copy` fetches one.

Every write is whole or absent: a local file is written under a temporary name and renamed; an
object is uploaded in one request (or one multipart upload, which the store completes only at the
end), and a failed write is discarded, never committed (s3fs commits a file object closed by an
exception, so `staged` never writes through one).

Endpoints and credentials come from the standard places: fsspec's `FSSPEC_<PROTOCOL>_<OPTION>`
variables (`FSSPEC_S3_ENDPOINT_URL`), botocore's `AWS_ENDPOINT_URL` and `AWS_*` credentials, and
`--storage-options JSON` (`set_storage_options`), which is kept in an environment variable so the
worker processes of a pipeline see it too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Iterator, Union

# The object-storage half lives in remote.py; the rest of codemill imports both halves from here.
from codemill.remote import STORAGE_OPTIONS_ENV as STORAGE_OPTIONS_ENV
from codemill.remote import RemotePath as RemotePath
from codemill.remote import StorageError as StorageError
from codemill.remote import filesystem as filesystem
from codemill.remote import is_remote as is_remote
from codemill.remote import protocol_of as protocol_of
from codemill.remote import reported
from codemill.remote import set_storage_options as set_storage_options
from codemill.remote import storage_options as storage_options

StoragePath = Union[Path, RemotePath]


def location(path: str | os.PathLike | RemotePath) -> StoragePath:
    """A `Path` for a local path or file:// URL, a `RemotePath` for any other URL."""
    if isinstance(path, (Path, RemotePath)):
        return path
    text = os.fspath(path)
    if protocol_of(text) is not None:
        return RemotePath(text)
    if "://" in text:  # file:///x
        text = text.split("://", 1)[1]
    return Path(text)


def resolved(path: str | os.PathLike | RemotePath) -> StoragePath:
    """`location`, with a local path made absolute (the form written into outputs)."""
    return location(path).resolve()


def files_in(folder: StoragePath) -> list[StoragePath]:
    """The files directly in a folder, sorted (one listing request on object storage)."""
    if isinstance(folder, RemotePath):
        with reported("list", folder.url):
            entries = folder.fs.ls(folder.path, detail=True, refresh=True)
        return sorted(folder._child(e["name"]) for e in entries if e.get("type") == "file")
    return sorted(p for p in folder.iterdir() if p.is_file())


def rmtree(path: StoragePath) -> None:
    """Remove a folder and everything under it; nothing there is fine."""
    if isinstance(path, RemotePath):
        with reported("remove", path.url):
            if path.fs.exists(path.path):
                path.fs.rm(path.path, recursive=True)
                path.fs.invalidate_cache(path.path)
        return
    shutil.rmtree(path, ignore_errors=True)


def replace(source: StoragePath, target: StoragePath) -> None:
    """Move a finished file into place (a rename locally; copy and delete between objects, the copy
    being whole or absent)."""
    if isinstance(source, RemotePath) and isinstance(target, RemotePath):
        with reported("move", f"{source.url} to {target.url}"):
            source.fs.mv(source.path, target.path)
        return
    if isinstance(source, RemotePath) or isinstance(target, RemotePath):
        raise ValueError(f"cannot move {source} to {target}: both must be on the same storage")
    os.replace(source, target)


@contextlib.contextmanager
def _naming(target: StoragePath) -> Iterator[None]:
    """A local write error (a full disk) names the file the user asked for, not our temporary one."""
    try:
        yield
    except OSError as err:
        if isinstance(err, StorageError) or str(target) in str(err):
            raise
        raise OSError(err.errno, f"cannot write {target}: {err.strerror or err}") from err


@contextlib.contextmanager
def staged(target: StoragePath, suffix: str = "") -> Iterator[Path]:
    """A local file to write `target`'s contents into; on a clean exit it is published whole (a
    rename, or an upload), on an error it is removed and `target` is left as it was."""
    with _naming(target), _staged(target, suffix) as tmp:
        yield tmp


@contextlib.contextmanager
def _staged(target: StoragePath, suffix: str) -> Iterator[Path]:
    if isinstance(target, RemotePath):
        handle, name = tempfile.mkstemp(prefix=".codemill-upload-", suffix=suffix)
        os.close(handle)
        tmp = Path(name)
        try:
            yield tmp
            with reported("write", target.url):
                target.fs.put_file(str(tmp), target.path)
                target.fs.invalidate_cache(target.parent.path)
        finally:
            tmp.unlink(missing_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}{suffix}")
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def staged_dir(target: StoragePath) -> Iterator[Path]:
    """A local folder whose files become `target`'s on a clean exit (each uploaded whole; a local
    folder is renamed into place)."""
    if isinstance(target, RemotePath):
        with tempfile.TemporaryDirectory(prefix=".codemill-upload-") as tmp:
            yield Path(tmp)
            for file in sorted(p for p in Path(tmp).rglob("*") if p.is_file()):
                with staged(target / file.relative_to(tmp).as_posix()) as part:
                    shutil.copyfile(file, part)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    folder = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    try:
        yield folder
        shutil.rmtree(target, ignore_errors=True)
        os.replace(folder, target)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def publish(local: Path, target: StoragePath) -> None:
    """Move a finished local file to `target` whole: a rename (same disk), else an upload after
    which the local file is removed."""
    if isinstance(target, RemotePath):
        try:
            with reported("write", target.url):
                target.fs.put_file(str(local), target.path)
        finally:
            local.unlink(missing_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(local, target)


def scratch_dir(prefix: str = "codemill-") -> Path:
    """A new local folder for files that are published to object storage when finished."""
    return Path(tempfile.mkdtemp(prefix=prefix))


def copy_file(source: StoragePath, target: StoragePath) -> None:
    """Copy one file, whole or not at all, between any two storages."""
    if isinstance(source, RemotePath) and isinstance(target, RemotePath) and source.protocol == target.protocol:
        with reported("copy", f"{source.url} to {target.url}"):
            source.fs.copy(source.path, target.path)  # server-side
        return
    with staged(target) as tmp:
        if isinstance(source, RemotePath):
            with reported("read", source.url):
                source.fs.get_file(source.path, str(tmp))
        else:
            shutil.copyfile(source, tmp)


def copy_tree(source: StoragePath, target: StoragePath) -> None:
    """Copy every file under `source` to the same relative path under `target`."""
    for file in source.rglob("*"):
        if isinstance(file, Path) and not file.is_file():
            continue
        relative = str(file)[len(str(source)) :].lstrip("/")
        copy_file(file, target / relative)


def write_bytes(target: StoragePath, data: bytes) -> None:
    """Whole or absent."""
    if isinstance(target, RemotePath):
        target.write_bytes(data)
        return
    with staged(target) as tmp:
        tmp.write_bytes(data)


def open_input(path: StoragePath, mode: str = "rb") -> IO:
    """A file to read: local files as themselves, objects through fsspec (seekable)."""
    return path.open(mode) if isinstance(path, RemotePath) else open(path, mode)


def parquet_source(path: StoragePath):
    """What pyarrow's readers take: a local path (memory-mapped), or a seekable fsspec file."""
    return path.open("rb") if isinstance(path, RemotePath) else str(path)


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "codemill" / "objects"


def cache_folder(url: str, root: Path | None = None) -> Path:
    """The local folder that caches the objects under `url` (one per URL)."""
    import hashlib

    return (root or cache_root()) / hashlib.sha1(url.encode()).hexdigest()[:16]


def local_copy(path: StoragePath, into: Path | None = None) -> Path:
    """A local file with `path`'s bytes: the file itself when local, else a copy in `into` (default:
    a cache folder for its URL), fetched again when the object's size or time changed. For
    readers that memory-map, such as megatron-core's."""
    if not isinstance(path, RemotePath):
        return path
    stat = path.stat()
    copy = (into or cache_folder(path.url)) / path.name
    if copy.exists():
        mine = copy.stat()
        if mine.st_size == stat.st_size and int(mine.st_mtime) == int(stat.st_mtime):
            return copy
    copy.parent.mkdir(parents=True, exist_ok=True)
    with staged(copy) as tmp:
        with reported("read", path.url):
            path.fs.get_file(path.path, str(tmp))
        os.utime(tmp, (stat.st_mtime, stat.st_mtime))
    return copy
