"""Tokenize-stage statistics: decontamination matches per benchmark, documents, tokens, FIM."""

from __future__ import annotations

from collections import Counter

# Events: ("file", kept: bool) | ("contaminated", benchmark) | ("outside_mixture",)
#         | ("document", component, tokens, fim_files, files, split: bool) | ("shard", name, documents, tokens)


class TokenizeStats:
    def __init__(self) -> None:
        self.totals: Counter = Counter()
        self.contaminated: Counter = Counter()
        self.tokens_by_component: Counter = Counter()
        self.shards: dict[str, dict] = {}

    def add(self, event: tuple) -> "TokenizeStats":
        kind = event[0]
        if kind == "file":
            self.totals["files_in"] += 1
        elif kind == "contaminated":
            self.totals["contaminated_files"] += 1
            self.contaminated[event[1]] += 1
        elif kind == "outside_mixture":
            self.totals["files_outside_mixture"] += 1
        elif kind == "document":
            _, component, tokens, fim_files, files, split = event
            self.tokens_by_component[component] += tokens
            self.totals["documents"] += 1
            self.totals["tokens"] += tokens
            self.totals["fim_files"] += fim_files
            self.totals["file_spans"] += files
            self.totals["split_file_documents"] += int(split)
        elif kind == "shard":
            _, name, documents, tokens = event
            self.shards[name] = {"documents": documents, "tokens": tokens}
        else:
            raise ValueError(f"unknown tokenize stats event {event!r}")
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
