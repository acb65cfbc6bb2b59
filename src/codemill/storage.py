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
import fnmatch
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import IO, Iterator, Union

from codemill.errors import CodemillError

STORAGE_OPTIONS_ENV = "CODEMILL_STORAGE_OPTIONS"
_LOCAL_PROTOCOLS = ("file", "local")


class StorageError(CodemillError, OSError):
    """A read or write on storage failed for a reason other than a missing file."""


def set_storage_options(options: dict | str | None) -> None:
    """Options for every fsspec filesystem codemill opens, from `--storage-options`: either one
    dict for every protocol ({"endpoint_url": ...}) or one per protocol ({"s3": {...}})."""
    if options is None:
        os.environ.pop(STORAGE_OPTIONS_ENV, None)
    else:
        if isinstance(options, str):
            try:
                options = json.loads(options)
            except ValueError as err:
                raise ValueError(f"--storage-options is not JSON ({err})") from None
        if not isinstance(options, dict):
            raise ValueError('--storage-options must be a JSON object, such as \'{"endpoint_url": "http://..."}\'')
        os.environ[STORAGE_OPTIONS_ENV] = json.dumps(options, sort_keys=True)
    _filesystem.cache_clear()


def storage_options(protocol: str) -> dict:
    raw = os.environ.get(STORAGE_OPTIONS_ENV)
    if not raw:
        return {}
    options = json.loads(raw)
    if options and all(isinstance(v, dict) for v in options.values()):
        return dict(options.get(protocol, {}))
    return dict(options)


def protocol_of(text: str) -> str | None:
    """The URL's protocol ("s3"), or None for a local path (also for file:// URLs)."""
    if "://" not in text:
        return None
    protocol = text.split("://", 1)[0].split("::")[-1].lower()
    return None if protocol in _LOCAL_PROTOCOLS else protocol


def is_remote(path: object) -> bool:
    return isinstance(path, RemotePath) or (isinstance(path, str) and protocol_of(path) is not None)


@lru_cache(maxsize=None)
def _filesystem(protocol: str, options_json: str, pid: int):
    # Keyed by the process too: a forked worker must not share its parent's connections.
    import fsspec

    try:
        return fsspec.filesystem(protocol, **json.loads(options_json))
    except (ImportError, ValueError) as err:
        raise StorageError(f"cannot open {protocol}:// storage: {err}") from None


def filesystem(protocol: str):
    return _filesystem(protocol, json.dumps(storage_options(protocol), sort_keys=True), os.getpid())


def _hint(url: str, err: BaseException) -> str:
    return (
        f"{url}: {type(err).__name__}: {err}. Check the endpoint and credentials (AWS_ENDPOINT_URL, "
        "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, FSSPEC_<PROTOCOL>_<OPTION>, or --storage-options)"
    )


@contextlib.contextmanager
def _reported(action: str, url: str) -> Iterator[None]:
    """Storage errors as a StorageError naming the object; a missing one stays FileNotFoundError."""
    try:
        yield
    except FileNotFoundError as err:
        if action in ("write", "copy", "move"):  # s3fs: the bucket is not there
            raise StorageError(f"cannot {action} {url}: {err}; create the bucket or give another path") from err
        raise
    except StorageError:
        raise
    except Exception as err:  # botocore and aiohttp raise their own types; the user needs the URL
        raise StorageError(f"cannot {action} {_hint(url, err)}") from err


@dataclass(frozen=True)
class _Stat:
    st_size: int
    st_mtime: float


class RemotePath:
    """A file or folder on fsspec storage, addressed by its URL."""

    __slots__ = ("url",)
    url: str

    def __init__(self, url: str) -> None:
        protocol, rest = url.split("://", 1)
        rest = rest.rstrip("/")
        object.__setattr__(self, "url", f"{protocol}://{rest}")

    def __setattr__(self, name, value):
        raise AttributeError("RemotePath is immutable")

    def __reduce__(self):
        return (RemotePath, (self.url,))

    # ---------------------------------------------------------------- naming
    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"RemotePath({self.url!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, RemotePath) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    def __lt__(self, other: "RemotePath") -> bool:
        return self.url < other.url

    def __truediv__(self, part: object) -> "RemotePath":
        part = str(part).strip("/")
        return RemotePath(f"{self.url}/{part}") if part else self

    def joinpath(self, *parts: object) -> "RemotePath":
        result = self
        for part in parts:
            result = result / part
        return result

    @property
    def protocol(self) -> str:
        return self.url.split("://", 1)[0]

    @property
    def name(self) -> str:
        return self.url.split("://", 1)[1].rsplit("/", 1)[-1]

    @property
    def suffix(self) -> str:
        name = self.name
        return name[name.rfind(".") :] if "." in name.lstrip(".") else ""

    @property
    def stem(self) -> str:
        return self.name[: len(self.name) - len(self.suffix)] if self.suffix else self.name

    @property
    def parent(self) -> "RemotePath":
        rest = self.url.split("://", 1)[1]
        return RemotePath(f"{self.protocol}://{rest.rsplit('/', 1)[0]}") if "/" in rest else self

    def with_name(self, name: str) -> "RemotePath":
        return self.parent / name

    def resolve(self) -> "RemotePath":
        return self

    absolute = resolve

    def as_posix(self) -> str:
        return self.url

    # ---------------------------------------------------------------- the filesystem
    @property
    def fs(self):
        return filesystem(self.protocol)

    @property
    def path(self) -> str:
        """The path the filesystem object takes (the URL without its protocol)."""
        return self.fs._strip_protocol(self.url)

    def _child(self, path: str) -> "RemotePath":
        return RemotePath(f"{self.protocol}://{path.split('://', 1)[-1]}")

    def exists(self) -> bool:
        with _reported("reach", self.url):
            return bool(self.fs.exists(self.path))

    def is_file(self) -> bool:
        with _reported("reach", self.url):
            return bool(self.fs.isfile(self.path))

    def is_dir(self) -> bool:
        with _reported("reach", self.url):
            return bool(self.fs.isdir(self.path))

    def stat(self) -> _Stat:
        with _reported("reach", self.url):
            info = self.fs.info(self.path)
        mtime = info.get("LastModified") or info.get("mtime") or info.get("created") or 0
        return _Stat(int(info.get("size") or 0), mtime.timestamp() if hasattr(mtime, "timestamp") else float(mtime))

    def iterdir(self) -> Iterator["RemotePath"]:
        with _reported("list", self.url):
            entries = self.fs.ls(self.path, detail=False, refresh=True)
        for entry in sorted(entries):
            if entry.rstrip("/") != self.path.rstrip("/"):
                yield self._child(entry.rstrip("/"))

    def glob(self, pattern: str) -> Iterator["RemotePath"]:
        with _reported("list", self.url):
            self.fs.invalidate_cache(self.path)
            found = self.fs.glob(f"{self.path.rstrip('/')}/{pattern}")
        yield from (self._child(p) for p in sorted(found))

    def rglob(self, pattern: str) -> Iterator["RemotePath"]:
        with _reported("list", self.url):
            self.fs.invalidate_cache(self.path)
            found = self.fs.find(self.path)
        yield from (self._child(p) for p in sorted(found) if fnmatch.fnmatch(p.rsplit("/", 1)[-1], pattern))

    def open(self, mode: str = "rb", encoding: str | None = None, **kwargs) -> IO:
        if "r" not in mode:
            raise ValueError(
                f"{self.url}: write remote objects whole (storage.staged or write_bytes), never through an open file"
            )
        with _reported("read", self.url):
            return (
                self.fs.open(self.path, mode, encoding=encoding, **kwargs)
                if "b" not in mode
                else self.fs.open(self.path, mode, **kwargs)
            )

    def read_bytes(self) -> bytes:
        with _reported("read", self.url):
            return self.fs.cat_file(self.path)

    def read_text(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return self.read_bytes().decode(encoding, errors)

    def write_bytes(self, data: bytes) -> int:
        """One request: the object appears whole or not at all."""
        with _reported("write", self.url):
            self.fs.pipe_file(self.path, bytes(data))
        return len(data)

    def write_text(self, text: str, encoding: str = "utf-8") -> int:
        return self.write_bytes(text.encode(encoding))

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            with _reported("remove", self.url):
                self.fs.rm_file(self.path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Object stores have no folders: a prefix exists once an object is under it."""


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
        with _reported("list", folder.url):
            entries = folder.fs.ls(folder.path, detail=True, refresh=True)
        return sorted(folder._child(e["name"]) for e in entries if e.get("type") == "file")
    return sorted(p for p in folder.iterdir() if p.is_file())


def rmtree(path: StoragePath) -> None:
    """Remove a folder and everything under it; nothing there is fine."""
    if isinstance(path, RemotePath):
        with _reported("remove", path.url):
            if path.fs.exists(path.path):
                path.fs.rm(path.path, recursive=True)
                path.fs.invalidate_cache(path.path)
        return
    shutil.rmtree(path, ignore_errors=True)


def replace(source: StoragePath, target: StoragePath) -> None:
    """Move a finished file into place (a rename locally; copy and delete between objects, the copy
    being whole or absent)."""
    if isinstance(source, RemotePath) and isinstance(target, RemotePath):
        with _reported("move", f"{source.url} to {target.url}"):
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
            with _reported("write", target.url):
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
            with _reported("write", target.url):
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
        with _reported("copy", f"{source.url} to {target.url}"):
            source.fs.copy(source.path, target.path)  # server-side
        return
    with staged(target) as tmp:
        if isinstance(source, RemotePath):
            with _reported("read", source.url):
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
        with _reported("read", path.url):
            path.fs.get_file(path.path, str(tmp))
        os.utime(tmp, (stat.st_mtime, stat.st_mtime))
    return copy
