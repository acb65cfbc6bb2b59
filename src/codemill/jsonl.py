"""JSON files: JSON Lines (optionally gzip) read as dicts with errors naming the file and the line,
and whole JSON files written atomically."""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterator

from codemill.storage import StoragePath, location, open_input, write_bytes


def read_jsonl(path: StoragePath | str, error: type[Exception] = ValueError, what: str = "file") -> Iterator[dict]:
    """Rows of a .jsonl / .jsonl.gz on any storage; blank lines skipped. Raises `error` naming the
    file (and the line) when it cannot be read or a line is not JSON."""
    path = location(path)
    try:
        with open_input(path) as raw:
            stream = gzip.GzipFile(fileobj=raw) if path.suffix == ".gz" else raw
            for number, line in enumerate(io.TextIOWrapper(stream, encoding="utf-8"), 1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as err:
                        raise error(f"{path}: line {number} is not JSON ({err.msg})") from None
    except OSError as err:
        raise error(f"cannot read {what} {path}: {err.strerror or err}") from None


def write_json(path: StoragePath | str, data: dict) -> None:
    """Whole-or-absent JSON write on any storage: a reader sees the old file or the new one."""
    write_bytes(location(path), (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def read_json(path: StoragePath | str):
    return json.loads(location(path).read_text(encoding="utf-8"))


def json_field(path: StoragePath | str, name: str):
    """One field of a JSON object file, or None when the file, its JSON or the field is missing
    (a marker of a run that did not get that far)."""
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return None
    return data.get(name) if isinstance(data, dict) else None
