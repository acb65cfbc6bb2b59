"""Tokenize-stage statistics: decontamination matches per benchmark, documents, tokens, FIM."""

from __future__ import annotations

from collections import Counter
from typing import NamedTuple


class FileIn(NamedTuple):
    """A kept record that reached the stage."""


class Contaminated(NamedTuple):
    """A record dropped by decontamination, and the benchmark it matched."""

    benchmark: str


class OutsideMixture(NamedTuple):
    """A clean record that no mixture component selects."""


class DocumentMade(NamedTuple):
    component: str
    tokens: int
    fim_files: int
    files: int
    split: bool  # a part of a file longer than a document


class ShardWritten(NamedTuple):
    name: str  # <component>/part-i-of-n
    documents: int
    tokens: int


TokenizeEvent = FileIn | Contaminated | OutsideMixture | DocumentMade | ShardWritten


class TokenizeStats:
    def __init__(self) -> None:
        self.totals: Counter = Counter()
        self.contaminated: Counter = Counter()
        self.tokens_by_component: Counter = Counter()
        self.shards: dict[str, dict] = {}

    def add(self, event: TokenizeEvent) -> "TokenizeStats":
        match event:
            case FileIn():
                self.totals["files_in"] += 1
            case Contaminated(benchmark=benchmark):
                self.totals["contaminated_files"] += 1
                self.contaminated[benchmark] += 1
            case OutsideMixture():
                self.totals["files_outside_mixture"] += 1
            case DocumentMade(component, tokens, fim_files, files, split):
                self.tokens_by_component[component] += tokens
                self.totals["documents"] += 1
                self.totals["tokens"] += tokens
                self.totals["fim_files"] += fim_files
                self.totals["file_spans"] += files
                self.totals["split_file_documents"] += int(split)
            case ShardWritten(name, documents, tokens):
                self.shards[name] = {"documents": documents, "tokens": tokens}
            case _:
                raise TypeError(f"unknown tokenize stats event {event!r}")
        return self

    def merge(self, other: "TokenizeStats") -> "TokenizeStats":
        self.totals.update(other.totals)
        self.contaminated.update(other.contaminated)
        self.tokens_by_component.update(other.tokens_by_component)
        self.shards.update(other.shards)
        return self

    def to_json(self) -> dict:
        return {
            "totals": dict(sorted(self.totals.items())),
            "contaminated_by_benchmark": dict(sorted(self.contaminated.items())),
            "tokens_by_component": dict(sorted(self.tokens_by_component.items())),
            "shards": dict(sorted(self.shards.items())),
        }
