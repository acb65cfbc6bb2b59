"""Megatron indexed datasets (.bin/.idx) and their trace sidecar.

Shards are written by `IndexedWriter`, a numpy writer of megatron-core's format (one sequence and
one document per codemill document) that a test proves byte-identical to megatron-core's own
`IndexedDatasetBuilder`. Why not the builder itself: importing megatron.core takes ~6 s (it pulls in
torch and the model code) in every worker, for a format of five arrays. Names are temporary until
both files are complete. Beside each shard, `<prefix>.trace.parquet` holds one row per
document and one per file span, with absolute token offsets, so any token can be traced to the
SWHID, path, repository and licence of the file it came from without loading the shard.
"""

from __future__ import annotations

import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow as pa

from codemill.errors import UserError
from codemill.shards import parquet_file, write_table_atomic
from codemill.storage import RemotePath, StoragePath, location, publish, scratch_dir
from codemill.tokenize.documents import Document

UINT16_LIMIT = 65500  # Megatron's preprocess_data picks uint16 below this vocabulary size
_INDEX_HEADER = b"MMIDIDX\x00\x00"  # megatron.core.datasets.indexed_dataset: header, version 1, dtype code
_DTYPE_CODES: dict[type, int] = {
    np.uint8: 1,
    np.int8: 2,
    np.int16: 3,
    np.int32: 4,
    np.int64: 5,
    np.float64: 6,
    np.float32: 7,
    np.uint16: 8,
}


class IndexedWriter:
    """prefix.bin / prefix.idx in megatron-core's IndexedDataset format (version 1, not multimodal)."""

    def __init__(self, bin_path: str, dtype: type) -> None:
        self.dtype = dtype
        self.data = open(bin_path, "wb")
        self.lengths: list[int] = []

    def add_document(self, tokens: np.ndarray) -> None:
        self.data.write(np.asarray(tokens, dtype=self.dtype).tobytes(order="C"))
        self.lengths.append(len(tokens))

    def finalize(self, idx_path: str) -> None:
        self.data.close()
        lengths = np.asarray(self.lengths, dtype=np.int64)
        pointers = np.zeros(len(lengths), dtype=np.int64)
        np.cumsum(lengths[:-1] * np.dtype(self.dtype).itemsize, out=pointers[1:])
        documents = np.arange(len(lengths) + 1, dtype=np.int64)  # one sequence per document
        with open(idx_path, "wb") as index:
            index.write(_INDEX_HEADER)
            index.write(struct.pack("<Q", 1))
            index.write(struct.pack("<B", _DTYPE_CODES[self.dtype]))
            index.write(struct.pack("<Q", len(lengths)))
            index.write(struct.pack("<Q", len(documents)))
            index.write(lengths.astype(np.int32).tobytes(order="C"))
            index.write(pointers.tobytes(order="C"))
            index.write(documents.tobytes(order="C"))


TRACE_SCHEMA = pa.schema(
    [
        ("kind", pa.string()),  # "document" or "file"
        ("document", pa.int64()),  # index within the shard
        ("token_start", pa.int64()),  # absolute, within the shard's token stream
        ("content_token_start", pa.int64()),
        ("token_end", pa.int64()),
        ("repo", pa.string()),
        ("repo_document", pa.int64()),  # index of the document within its repository
        ("swhid", pa.string()),
        ("qualified_swhid", pa.string()),
        ("path", pa.string()),
        ("license_spdx", pa.string()),
        ("license_type", pa.string()),
        ("char_start", pa.int64()),
        ("char_end", pa.int64()),
        ("fim", pa.string()),
    ]
)


class ShardError(UserError):
    """A shard that cannot be written or read as asked (names the shard and the reason)."""


def token_dtype(vocab_size: int, requested: str = "auto") -> type:
    """uint16 below 65,500 tokens (as Megatron's preprocessing), int32 otherwise; a requested dtype
    the vocabulary does not fit is an error."""
    if requested == "auto":
        return np.uint16 if vocab_size < UINT16_LIMIT else np.int32
    choices: dict[str, type[np.integer]] = {"uint16": np.uint16, "int32": np.int32}
    dtype = choices.get(requested)
    if dtype is None:
        raise ShardError(f"token dtype must be auto, uint16 or int32, got {requested!r}")
    if vocab_size > np.iinfo(dtype).max + 1:
        raise ShardError(
            f"a vocabulary of {vocab_size} tokens does not fit {requested} token shards "
            f"(at most {np.iinfo(dtype).max + 1}); use int32 or auto"
        )
    return dtype


@dataclass(frozen=True)
class ShardInfo:
    prefix: str
    documents: int
    tokens: int


class TokenShardWriter:
    """One token shard written a document at a time: prefix.bin/.idx under temporary names until
    `close` (atomic per file), then prefix.trace.parquet last (its presence marks a complete
    shard). `abort` removes what was written. Push-style, so one reader can feed the shards of
    several mixture components at once."""

    def __init__(self, prefix: StoragePath | str, dtype: type) -> None:
        self.prefix, self.dtype = location(prefix), dtype
        # On object storage the files are written in a local folder and uploaded whole by `close`.
        self.scratch = scratch_dir("codemill-shard-") if isinstance(self.prefix, RemotePath) else None
        folder = self.scratch or self.prefix.parent
        self.tmp = folder / f".{self.prefix.name}.tmp-{os.getpid()}"
        self.rows: list[tuple] = []
        self.limit = np.iinfo(dtype).max
        self.offset = self.number = 0
        try:
            self.prefix.parent.mkdir(parents=True, exist_ok=True)
            self.builder = IndexedWriter(str(self.tmp) + ".bin", dtype)
        except OSError as err:
            raise OSError(err.errno, f"cannot write token shard {self.prefix}: {err.strerror or err}") from err

    def add(self, doc: Document) -> None:
        if len(doc.tokens) == 0:
            raise ShardError(f"{self.prefix}: document {doc.index} of {doc.repo} is empty")
        if int(doc.tokens.max()) > self.limit:
            raise ShardError(
                f"{self.prefix}: token id {int(doc.tokens.max())} does not fit {np.dtype(self.dtype).name}"
            )
        try:
            self.builder.add_document(doc.tokens)
        except OSError as err:
            raise OSError(err.errno, f"cannot write token shard {self.prefix}: {err.strerror or err}") from err
        _trace_rows(self.rows, self.number, self.offset, doc)
        self.offset += len(doc.tokens)
        self.number += 1

    def close(self) -> ShardInfo:
        prefix, tmp = self.prefix, str(self.tmp)
        try:
            self.builder.finalize(tmp + ".idx")
            publish(Path(tmp + ".bin"), location(str(prefix) + ".bin"))
            publish(Path(tmp + ".idx"), location(str(prefix) + ".idx"))
        except OSError as err:
            raise OSError(err.errno, f"cannot write token shard {prefix}: {err.strerror or err}") from err
        finally:
            self.abort()
        rows = self.rows
        columns = list(zip(*rows, strict=False)) if rows else [()] * len(TRACE_SCHEMA.names)
        trace_table = pa.table(
            {name: list(column) for name, column in zip(TRACE_SCHEMA.names, columns, strict=False)}, schema=TRACE_SCHEMA
        )
        write_table_atomic(location(str(prefix) + ".trace.parquet"), trace_table)
        return ShardInfo(str(prefix), self.number, self.offset)

    def abort(self) -> None:
        """Remove the temporary files (after `close` there are none left)."""
        self.builder.data.close()
        for suffix in (".bin", ".idx"):
            Path(str(self.tmp) + suffix).unlink(missing_ok=True)
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


def write_shard(prefix: StoragePath | str, documents: Iterable[Document], dtype: type) -> ShardInfo:
    """Write prefix.bin/.idx and prefix.trace.parquet from documents in shard order (streamed: one
    document in memory at a time)."""
    writer = TokenShardWriter(prefix, dtype)
    try:
        for doc in documents:
            writer.add(doc)
    except BaseException:
        writer.abort()
        raise
    return writer.close()


def _trace_rows(rows: list[tuple], number: int, offset: int, doc: Document) -> None:
    """One row per document and one per file span, as tuples in TRACE_SCHEMA's column order."""
    rows.append(
        (
            "document",
            number,
            offset,
            offset,
            offset + len(doc.tokens),
            doc.repo,
            doc.index,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
        )
    )
    for s in doc.spans:
        rows.append(
            (
                "file",
                number,
                offset + s.token_start,
                offset + s.content_token_start,
                offset + s.token_end,
                s.repo,
                doc.index,
                s.swhid,
                s.qualified_swhid,
                s.path,
                s.license_spdx,
                s.license_type,
                s.char_start,
                s.char_end,
                s.fim,
            )
        )


@dataclass(frozen=True)
class TraceHit:
    token_index: int
    document: int
    repo: str
    file: dict | None  # the file span row, or None for a structure token (header, separator, end)
    in_content: bool


def trace(prefix: StoragePath | str, token_index: int) -> TraceHit:
    path = location(str(prefix) + ".trace.parquet")
    if not path.exists():
        raise ShardError(f"no trace index {path}: is {prefix} a codemill token shard prefix (without .bin)?")
    table = parquet_file(path).read()
    kinds = np.asarray(table.column("kind").to_pylist())
    starts = table.column("token_start").to_numpy()
    ends = table.column("token_end").to_numpy()
    docs = np.flatnonzero(kinds == "document")
    total = int(ends[docs[-1]]) if len(docs) else 0
    if not 0 <= token_index < total:
        raise ShardError(f"token {token_index} is outside {prefix} (it holds {total} tokens)")
    doc_row = docs[np.searchsorted(starts[docs], token_index, side="right") - 1]
    files = np.flatnonzero((kinds == "file") & (starts <= token_index) & (ends > token_index))
    rows = table.slice(int(doc_row), 1).to_pylist()[0]
    if len(files) == 0:
        return TraceHit(token_index, rows["document"], rows["repo"], None, False)
    span = table.slice(int(files[0]), 1).to_pylist()[0]
    return TraceHit(token_index, rows["document"], rows["repo"], span, token_index >= span["content_token_start"])
