"""JSON Lines files (optionally gzip): rows as dicts, errors naming the file and the line."""

from __future__ import annotations

import gzip
import json
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
