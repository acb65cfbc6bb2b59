"""JSON files: JSON Lines (optionally gzip) read as dicts with errors naming the file and the line,
and whole JSON files written atomically."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path


def read_jsonl(path: Path, error: type[Exception] = ValueError, what: str = "file") -> Iterator[dict]:
    """Rows of a .jsonl / .jsonl.gz; blank lines skipped. Raises `error` naming the file (and the
    line) when it cannot be read or a line is not JSON."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as err:
                        raise error(f"{path}: line {number} is not JSON ({err.msg})") from None
    except OSError as err:
        raise error(f"cannot read {what} {path}: {err.strerror or err}") from None


def write_json(path: Path, data: dict) -> None:
    """Atomic JSON write (temporary name, then rename): a reader sees the old file or the new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def json_field(path: Path, name: str):
    """One field of a JSON object file, or None when the file, its JSON or the field is missing
    (a marker of a run that did not get that far)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get(name) if isinstance(data, dict) else None
