"""Object storage behind fsspec URLs: the options every filesystem is opened with, errors that
name the object, and `RemotePath`, the part of pathlib's API the stages use (see storage.py,
which is where the rest of codemill reads and writes through)."""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import IO, Iterator

from codemill.errors import CodemillError, UserError

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
                raise UserError(f"--storage-options is not JSON ({err})") from None
        if not isinstance(options, dict):
            raise UserError('--storage-options must be a JSON object, such as \'{"endpoint_url": "http://..."}\'')
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
def reported(action: str, url: str) -> Iterator[None]:
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
        with reported("reach", self.url):
            return bool(self.fs.exists(self.path))

    def is_file(self) -> bool:
        with reported("reach", self.url):
            return bool(self.fs.isfile(self.path))

    def is_dir(self) -> bool:
        with reported("reach", self.url):
            return bool(self.fs.isdir(self.path))

    def stat(self) -> _Stat:
        with reported("reach", self.url):
            info = self.fs.info(self.path)
        mtime = info.get("LastModified") or info.get("mtime") or info.get("created") or 0
        return _Stat(int(info.get("size") or 0), mtime.timestamp() if hasattr(mtime, "timestamp") else float(mtime))

    def iterdir(self) -> Iterator["RemotePath"]:
        with reported("list", self.url):
            entries = self.fs.ls(self.path, detail=False, refresh=True)
        for entry in sorted(entries):
            if entry.rstrip("/") != self.path.rstrip("/"):
                yield self._child(entry.rstrip("/"))

    def glob(self, pattern: str) -> Iterator["RemotePath"]:
        with reported("list", self.url):
            self.fs.invalidate_cache(self.path)
            found = self.fs.glob(f"{self.path.rstrip('/')}/{pattern}")
        yield from (self._child(p) for p in sorted(found))

    def rglob(self, pattern: str) -> Iterator["RemotePath"]:
        with reported("list", self.url):
            self.fs.invalidate_cache(self.path)
            found = self.fs.find(self.path)
        yield from (self._child(p) for p in sorted(found) if fnmatch.fnmatch(p.rsplit("/", 1)[-1], pattern))

    def open(self, mode: str = "rb", encoding: str | None = None, **kwargs) -> IO:
        if "r" not in mode:
            raise ValueError(
                f"{self.url}: write remote objects whole (storage.staged or write_bytes), never through an open file"
            )
        with reported("read", self.url):
            return (
                self.fs.open(self.path, mode, encoding=encoding, **kwargs)
                if "b" not in mode
                else self.fs.open(self.path, mode, **kwargs)
            )

    def read_bytes(self) -> bytes:
        with reported("read", self.url):
            return self.fs.cat_file(self.path)

    def read_text(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return self.read_bytes().decode(encoding, errors)

    def write_bytes(self, data: bytes) -> int:
        """One request: the object appears whole or not at all."""
        with reported("write", self.url):
            self.fs.pipe_file(self.path, bytes(data))
        return len(data)

    def write_text(self, text: str, encoding: str = "utf-8") -> int:
        return self.write_bytes(text.encode(encoding))

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            with reported("remove", self.url):
                self.fs.rm_file(self.path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Object stores have no folders: a prefix exists once an object is under it."""
