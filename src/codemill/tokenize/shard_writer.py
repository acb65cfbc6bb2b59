"""Planned repositories -> token shards on disk, the encoding of one batch overlapping the
assembly and writing of the last. Both tokenize paths (by repository and shuffled) end here, so
they write the same bytes."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Iterable, Iterator, NamedTuple

from codemill.progress import bar
from codemill.records import FileRecord
from codemill.shards import shard_name
from codemill.storage import location
from codemill.tokenize.documents import (
    DocumentConfig,
    RepositoryPlan,
    SourceText,
    assemble_documents,
    encode_pieces,
    encode_plans,
)
from codemill.tokenize.indexed import ShardInfo, TokenShardWriter
from codemill.tokenize.stats import DocumentMade, ShardWritten

if TYPE_CHECKING:
    from codemill.tokenize.repo_planner import DecontaminatedPlanner


class PlannedRepository(NamedTuple):
    """One repository's files in one mixture component, planned for token shard `index`."""

    shard: int
    component: str
    repo: str
    plan: RepositoryPlan | None  # None: every file of it in this component is empty
    tentative: bool = False  # planned before its files were decontaminated: settled before assembly


def source_text(record: FileRecord) -> SourceText:
    """What a record's documents need of it: a SourceText, far cheaper to shuffle than the record."""
    return SourceText(
        record.swhid or "",  # every curated record has one
        record.qualified_swhid,
        record.repo,
        record.path,
        record.content or "",  # read only for kept records with content
        record.license_spdx,
        record.license_type,
    )


class _OpenShards:
    """The token shards being written, by (shard index, component); each is closed once no later
    repository can go there (items arrive by shard index)."""

    def __init__(self, out_dir: str, num_shards: int, dtype: type, settler: DecontaminatedPlanner | None) -> None:
        self.out_dir, self.num_shards, self.dtype, self.settler = out_dir, num_shards, dtype, settler
        self.writers: dict[tuple[int, str], TokenShardWriter] = {}
        self.closed: dict[tuple[int, str], ShardInfo] = {}

    def claim(self, index: int, component: str) -> None:
        if (index, component) not in self.writers:
            base = shard_name(index, self.num_shards).removesuffix(".parquet")
            path = location(self.out_dir) / "tokens" / component / base
            self.writers[index, component] = TokenShardWriter(path, self.dtype)

    def settle(self) -> None:
        if self.settler is not None:
            for index, component in self.settler.settle():
                self.claim(index, component)

    def close_before(self, index: int | None) -> None:
        """Close every shard below `index` (all of them with None): nothing more goes there."""
        self.settle()  # a settled repository may still name a component (with an empty shard)
        for key in sorted(self.writers):
            if key not in self.closed and (index is None or key[0] < index):
                self.closed[key] = self.writers[key].close()

    def abort(self) -> None:
        for key, writer in self.writers.items():
            if key not in self.closed:
                writer.abort()

    def shard_events(self) -> Iterator[tuple]:
        for (index, component), info in sorted(self.closed.items()):
            if info.documents:
                base = shard_name(index, self.num_shards).removesuffix(".parquet")
                yield ShardWritten(f"{component}/{base}", info.documents, info.tokens)


def write_token_shards(
    items: Iterable[PlannedRepository],
    tokenizer,
    config: DocumentConfig,
    out_dir: str,
    num_shards: int,
    dtype: type,
    batch_chars: int = 4_000_000,
    settler: DecontaminatedPlanner | None = None,
) -> Iterator[tuple]:
    """Planned repositories, by shard index and then repository name -> token shards written under
    out_dir/tokens/<component>/part-<index>, and the stats events. A component named with a None
    plan (its files there were all empty) still gets its shard, empty. Planning, assembly and
    writing overlap the encoding of the next batch (`encode_plans`), across shard boundaries too;
    documents stream to disk one at a time, so the same bytes come out whatever fed the plans.
    A tentative item is settled by `settler` before assembly: its plan stands, or is replaced (and
    encoded again) when decontamination removed some of its files."""
    shards = _OpenShards(out_dir, num_shards, dtype, settler)
    waiting: deque[PlannedRepository] = deque()  # the items inside encode_plans, in order
    events: list[tuple] = []

    def planned() -> Iterator[RepositoryPlan]:
        for item in items:
            if not item.tentative:
                shards.claim(item.shard, item.component)
            if item.plan is not None:
                waiting.append(item)
                yield item.plan

    progress = bar(desc="tokenize", unit=" docs", mininterval=2.0, leave=False)
    current = None
    try:
        for plan, ids in encode_plans(tokenizer, planned(), batch_chars):
            item = waiting.popleft()
            if item.shard != current:
                if current is not None:
                    shards.close_before(item.shard)
                current = item.shard
            if item.tentative:
                shards.settle()
                assert settler is not None  # tentative plans come from the settler
                final = settler.final(item.repo, item.component)
                if final is None:
                    continue
                if final is not item.plan:  # decontamination dropped some of its files
                    plan, ids = final, encode_pieces(tokenizer, final.pieces)
            writer = shards.writers[item.shard, item.component]
            for doc in assemble_documents(plan, ids, tokenizer, config):
                writer.add(doc)
                fim_spans = sum(1 for s in doc.spans if s.fim)
                events.append(DocumentMade(item.component, len(doc.tokens), fim_spans, len(doc.spans), doc.split_file))
                progress.update(1)
        shards.close_before(None)
    except BaseException:
        shards.abort()
        raise
    finally:
        progress.close()
    yield from events
    yield from shards.shard_events()
