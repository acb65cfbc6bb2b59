"""The tokenize stage as Beam PTransforms, and its driver.

Input laid out by repository (every curate and dedup output: `outputs.SHARD_LAYOUT`), the default:

    data/part-i ─TokenizeRepoShards─> tokens/<component>/part-i.{bin,idx,trace.parquet}, + contaminated, events

Each input shard is read a repository at a time, decontaminated, assigned to mixture components,
and tokenized into the token shards of the same index: no shuffle, and the reading and scanning
overlap the encoder (which also runs on over shard boundaries, and through the matcher's build:
`_Decontaminated`). Any other input (or `shuffle=True`) goes through one shuffle of records:

    records (kept) ─Decontaminate─> clean ─GroupByKey((component, shard), SourceText bytes)─WriteTokenShard─>
                 └─> contaminated (manifest rows, contaminated_by <benchmark>:<task>)

Both write the same bytes: a repository goes to a shard by a hash of its name, and a shard's
repositories are made into documents in name order, so shards are byte-identical on any runner
with any number of workers. The shuffle path holds a shard's records in memory while it is
written (`num_shards` bounds the memory per worker); the repository path holds one repository's.
"""

from __future__ import annotations

import logging
import pickle
import time
from collections import defaultdict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable, Iterator, NamedTuple

import apache_beam as beam
import numpy as np

from codemill.errors import UserError
from codemill.jsonl import read_json
from codemill.pipelines.common import (
    ProgressBar,
    StatsCombine,
    default_pipeline_options,
    is_single_process,
    read_records,
    tagged,
    write_json,
)
from codemill.pipelines.outputs import (
    SUCCESS_MARKER,
    IncompleteOutputError,
    WriteShards,
    repo_layout_shards,
)
from codemill.pipelines.pooled import PooledDoFn
from codemill.progress import bar
from codemill.records import MANIFEST_SCHEMA, FileRecord, records_from_table
from codemill.shards import parse_shard_name, shard_name, shard_of, shard_paths
from codemill.storage import StoragePath, copy_file, copy_tree, location, resolved, rmtree
from codemill.tokenize.config import TokenizeConfig
from codemill.tokenize.decontam import DecontamConfig, decontaminate_record, warm_matcher
from codemill.tokenize.documents import (
    DocumentConfig,
    RepositoryPlan,
    SourceText,
    assemble_documents,
    encode_pieces,
    encode_plans,
    plan_repository,
)
from codemill.tokenize.indexed import ShardInfo, TokenShardWriter, token_dtype
from codemill.tokenize.mixture import MixtureSpec, blend
from codemill.tokenize.stats import TokenizeStats
from codemill.tokenize.tokenizer import load_tokenizer

log = logging.getLogger(__name__)

REPORT = "tokenize.json"


class PlannedRepository(NamedTuple):
    """One repository's files in one mixture component, planned for token shard `index`."""

    shard: int
    component: str
    repo: str
    plan: RepositoryPlan | None  # None: every file of it in this component is empty
    tentative: bool = False  # planned before its files were decontaminated: settled before assembly


def write_token_shards(
    items: Iterable[PlannedRepository],
    tokenizer,
    config: DocumentConfig,
    out_dir: str,
    num_shards: int,
    dtype: type,
    batch_chars: int = 4_000_000,
    settler: _Decontaminated | None = None,
) -> Iterator[tuple]:
    """Planned repositories, by shard index and then repository name -> token shards written under
    out_dir/tokens/<component>/part-<index>, and the stats events. A component named with a None
    plan (its files there were all empty) still gets its shard, empty. Planning, assembly and
    writing overlap the encoding of the next batch (`encode_plans`), across shard boundaries too;
    documents stream to disk one at a time, so the same bytes come out whatever fed the plans.
    A tentative item is settled by `settler` before assembly: its plan stands, or is replaced (and
    encoded again) when decontamination removed some of its files."""
    writers: dict[tuple[int, str], TokenShardWriter] = {}
    closed: dict[tuple[int, str], ShardInfo] = {}
    waiting: deque[PlannedRepository] = deque()  # the items inside encode_plans, in order
    events: list[tuple] = []

    def claim(index: int, component: str) -> None:
        if (index, component) not in writers:
            base = shard_name(index, num_shards).removesuffix(".parquet")
            writers[index, component] = TokenShardWriter(location(out_dir) / "tokens" / component / base, dtype)

    def settle() -> None:
        if settler is not None:
            for index, component in settler.settle():
                claim(index, component)

    def close_before(index: int | None) -> None:
        """Close every shard below `index` (all of them with None): nothing more goes there."""
        settle()  # a settled repository may still name a component (with an empty shard)
        for key in sorted(writers):
            if key not in closed and (index is None or key[0] < index):
                closed[key] = writers[key].close()

    def planned() -> Iterator[RepositoryPlan]:
        for item in items:
            if not item.tentative:
                claim(item.shard, item.component)
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
                    close_before(item.shard)
                current = item.shard
            if item.tentative:
                settle()
                assert settler is not None  # tentative plans come from the settler
                final = settler.final(item.repo, item.component)
                if final is None:
                    continue
                plan = final
                if plan is not item.plan:  # decontamination dropped some of its files
                    ids = encode_pieces(tokenizer, plan.pieces)
            writer = writers[item.shard, item.component]
            for doc in assemble_documents(plan, ids, tokenizer, config):
                writer.add(doc)
                events.append(
                    (
                        "document",
                        item.component,
                        len(doc.tokens),
                        sum(1 for s in doc.spans if s.fim),
                        len(doc.spans),
                        doc.split_file,
                    )
                )
                progress.update(1)
        close_before(None)
    except BaseException:
        for key, writer in writers.items():
            if key not in closed:
                writer.abort()
        raise
    finally:
        progress.close()
    yield from events
    for (index, component), info in sorted(closed.items()):
        if info.documents:
            base = shard_name(index, num_shards).removesuffix(".parquet")
            yield "shard", f"{component}/{base}", info.documents, info.tokens


class WriteTokenShard(beam.DoFn):
    """((component, shard), records) -> the shard's .bin/.idx/.trace.parquet written, plus stats
    events. Repositories are made into documents in name order, so the shard is the same bytes on
    any runner with any number of workers."""

    def __init__(
        self,
        tokenizer_path: str,
        config: DocumentConfig,
        out_dir: str,
        num_shards: int,
        dtype: str,
        batch_chars: int = 4_000_000,
    ) -> None:
        self.tokenizer_path, self.config, self.out_dir = tokenizer_path, config, out_dir
        self.num_shards, self.dtype, self.batch_chars = num_shards, dtype, batch_chars

    def setup(self) -> None:
        self.tokenizer = load_tokenizer(self.tokenizer_path)

    def process(self, grouped: tuple[tuple[str, int], Iterable[bytes]]) -> Iterator[tuple]:
        (component, index), sources = grouped
        by_repo: dict[str, list[SourceText]] = defaultdict(list)
        for blob in sources:
            source = SourceText(*pickle.loads(blob))  # shuffled as bytes (see _assign_shard)
            by_repo[source.repo].append(source)
        items = (
            PlannedRepository(index, component, repo, plan_repository(repo, by_repo.pop(repo), self.config))
            for repo in sorted(by_repo)
        )
        yield from write_token_shards(
            items,
            self.tokenizer,
            self.config,
            self.out_dir,
            self.num_shards,
            np.dtype(self.dtype).type,
            self.batch_chars,
        )


def _source_text(record: FileRecord) -> SourceText:
    return SourceText(
        record.swhid or "",  # every curated record has one
        record.qualified_swhid,
        record.repo,
        record.path,
        record.content or "",  # read only for kept records with content
        record.license_spdx,
        record.license_type,
    )


def _assign_shard(record: FileRecord, mixture: MixtureSpec, num_shards: int) -> Iterator[tuple]:
    """A record goes to its mixture component, and to a shard by its repository: a repository's
    files meet in one place, where its documents are made. Only what the documents need travels
    (a SourceText: the whole FileRecord cost ~1 s more to pickle and unpickle on 200 MB), pickled
    to bytes here: the local runner decodes and re-encodes every shuffled value to group it, which
    for bytes is a copy and for a tuple of strings a UTF-8 transcoding each time (~0.3 s on 200 MB)."""
    component = mixture.component_of(record)
    if component is None:
        yield "event", ("outside_mixture",)
    else:
        source = _source_text(record)
        yield "record", ((component, shard_of(record.repo, num_shards)), pickle.dumps(tuple(source), protocol=5))


class InputLayoutError(UserError):
    """An input shard that does not hold what its stage's marker promised (names the shard)."""


def _repositories(path: str, rows: int) -> Iterator[tuple[str, list[FileRecord]]]:
    """(repository, its kept records) of one input shard, read a batch of rows at a time."""
    import pyarrow as pa

    from codemill.shards import parquet_file

    current = ""
    files: list[FileRecord] = []
    for batch in parquet_file(path).iter_batches(batch_size=rows):
        for record in records_from_table(pa.Table.from_batches([batch])):
            if not record.kept or record.content is None:
                continue
            if record.repo != current:
                if files:
                    yield current, files
                current, files = record.repo, []
            files.append(record)
    if files:
        yield current, files


def _matcher_in_background(config: DecontamConfig | None) -> Future | None:
    """Start building the decontamination matcher (~1 s, most of it numba loading its compiled
    kernel) in a thread; None without decontamination."""
    if config is None:
        return None
    pool = ThreadPoolExecutor(1, thread_name_prefix="codemill-matcher")
    future = pool.submit(warm_matcher, config)
    pool.shutdown(wait=False)  # the thread ends when the build is done
    return future


class _Decontaminated:
    """Decontaminates repositories and plans their clean files per mixture component.

    While the matcher is still being built, a repository is planned as if all its files were
    clean ("tentative"), so the encoder starts on the first batch instead of idling through the
    build. `settle` decontaminates the pending repositories once the matcher is ready, and `final`
    gives the plan that stands: the tentative one, or, when a file was contaminated, a new plan
    without it (which the caller encodes again; rare, as only the first few megabytes are
    tentative). The outputs are the same bytes as deciding first (a test forces every repository
    to be tentative)."""

    def __init__(self, config: TokenizeConfig, matcher: Future | None, side: list[tuple]) -> None:
        self.config, self.matcher, self.side = config, matcher, side
        self.pending: list[tuple[int, str, list[FileRecord], dict[str, RepositoryPlan | None]]] = []
        self.finals: dict[tuple[str, str], RepositoryPlan | None] = {}

    def _clean(self, records: list[FileRecord], decide: bool = True) -> tuple[dict[str, list[SourceText]], int]:
        """Clean files by component, and how many were contaminated; side outputs recorded. With
        `decide` False (a tentative plan) every file is taken as clean and nothing is recorded."""
        by_component: dict[str, list[SourceText]] = defaultdict(list)
        dropped = 0
        for record in records:
            results = decontaminate_record(record, self.config.decontam) if decide else [("clean", record)]
            for tag, value in results:
                if tag == "contaminated":
                    dropped += 1
                if tag != "clean":
                    self.side.append((tag, value))
                    continue
                component = self.config.mixture.component_of(value)
                if component is not None:
                    by_component[component].append(_source_text(value))
                elif decide:
                    self.side.append(("event", ("outside_mixture",)))
        return by_component, dropped

    def _plans(self, repo: str, by_component: dict[str, list[SourceText]]) -> dict[str, RepositoryPlan | None]:
        return {
            component: plan_repository(repo, by_component[component], self.config.documents)
            for component in sorted(by_component)
        }

    def plan(self, index: int, repo: str, records: list[FileRecord]) -> Iterator[PlannedRepository]:
        if self.matcher is None or self.matcher.done():
            for component, plan in self._plans(repo, self._clean(records)[0]).items():
                yield PlannedRepository(index, component, repo, plan)
            return
        plans = self._plans(repo, self._clean(records, decide=False)[0])
        self.pending.append((index, repo, records, plans))
        for component, plan in plans.items():
            yield PlannedRepository(index, component, repo, plan, tentative=True)

    def settle(self) -> list[tuple[int, str]]:
        """Decontaminate every pending repository (waiting for the matcher); returns the (shard,
        component) pairs they turned out to have."""
        claims = []
        if self.pending:
            assert self.matcher is not None  # set up before any repository is held back
            self.matcher.result()  # waits for the build, or raises its error
        for index, repo, records, tentative in self.pending:
            by_component, dropped = self._clean(records)
            final = tentative if not dropped else self._plans(repo, by_component)
            for component, plan in tentative.items():
                if plan is not None:
                    self.finals[repo, component] = final.get(component)
            claims += [(index, component) for component in final]
        self.pending.clear()
        return claims

    def final(self, repo: str, component: str) -> RepositoryPlan | None:
        return self.finals.pop((repo, component))


class TokenizeRepoShards(beam.DoFn):
    """Input data shards laid out by repository (`outputs.SHARD_LAYOUT`: placed by a hash of the
    repository, sorted by it) -> the token shards of the same indices, one per mixture component,
    with no shuffle. Records stream from the files a repository at a time through decontamination
    and the mixture into `write_token_shards`, so reading, scanning and planning overlap the
    encoding of the previous batch, and a worker holds one repository's records, not a shard's.
    An element is a group of shards (all of them in one local process, so the encoder does not
    idle at shard boundaries; one each on a distributed runner). The shuffle path (`Tokenize`)
    writes the same bytes."""

    def __init__(
        self,
        tokenizer_path: str,
        config: TokenizeConfig,
        out_dir: str,
        dtype: str,
        batch_chars: int = 4_000_000,
        read_rows: int = 1024,
    ) -> None:
        self.tokenizer_path, self.config, self.out_dir, self.dtype = tokenizer_path, config, out_dir, dtype
        self.batch_chars, self.read_rows = batch_chars, read_rows

    def setup(self) -> None:
        self.matcher = _matcher_in_background(self.config.decontam)
        self.tokenizer = load_tokenizer(self.tokenizer_path)

    def _index(self, path: str) -> int:
        named = parse_shard_name(path)
        if named is None or named[1] != self.config.num_shards:
            raise InputLayoutError(f"{path}: expected a shard named part-NNNNN-of-{self.config.num_shards:05d}.parquet")
        return named[0]

    def process(self, paths: tuple[str, ...]) -> Iterator[tuple]:
        config = self.config
        shards = sorted((self._index(path), path) for path in paths)
        side: list[tuple] = []  # events and contaminated records, emitted when the shards are done
        decontaminated = _Decontaminated(config, self.matcher, side)

        def items() -> Iterator[PlannedRepository]:
            for index, path in shards:
                previous = None
                for repo, records in _repositories(path, self.read_rows):
                    if previous is not None and repo <= previous:
                        raise InputLayoutError(
                            f"{path}: repository {repo!r} comes after {previous!r}, so the shard "
                            "is not sorted by repository; re-run the stage that wrote it"
                        )
                    if shard_of(repo, config.num_shards) != index:
                        raise InputLayoutError(
                            f"{path}: repository {repo!r} belongs to shard "
                            f"{shard_of(repo, config.num_shards)}; re-run the stage that wrote it"
                        )
                    previous = repo
                    yield from decontaminated.plan(index, repo, records)

        events = list(
            write_token_shards(
                items(),
                self.tokenizer,
                config.documents,
                self.out_dir,
                config.num_shards,
                np.dtype(self.dtype).type,
                self.batch_chars,
                decontaminated,
            )
        )
        yield from side
        for event in events:
            yield "event", event


class Tokenize(beam.PTransform):
    """Records -> {'contaminated': dropped records, 'events': stats events}; writes the shards."""

    def __init__(
        self, config: TokenizeConfig, tokenizer_path: str, out_dir: str, dtype: str, processes: int = 1
    ) -> None:
        super().__init__()
        self.config, self.tokenizer_path, self.out_dir, self.dtype = config, tokenizer_path, out_dir, dtype
        self.processes = processes

    def expand(self, records):
        config = self.config
        checked = (
            records
            | "Kept" >> beam.Filter(lambda r: r.kept and r.content is not None)
            | "Progress" >> beam.ParDo(ProgressBar(None, "tokenize: decontaminate", " files"))
            # Threads, not processes: the matcher's scan releases the GIL, and a process pool would
            # pickle every record there and back and build the matcher once per process. The
            # matcher (~1.5 s) is built while the first records are read.
            | "Decontaminate"
            >> beam.ParDo(
                PooledDoFn(decontaminate_record, (config.decontam,), self.processes, threads=True, warmup=warm_matcher)
            )
        )
        assigned = (
            checked
            | "Clean" >> beam.FlatMap(tagged, "clean")
            | "Shard" >> beam.FlatMap(_assign_shard, config.mixture, config.num_shards)
        )
        shard_events = (
            assigned
            | "ToShard" >> beam.FlatMap(tagged, "record")
            | "GroupShard" >> beam.GroupByKey()
            | "WriteShard"
            >> beam.ParDo(
                WriteTokenShard(self.tokenizer_path, config.documents, self.out_dir, config.num_shards, self.dtype)
            )
        )
        events = (
            checked | "CheckEvents" >> beam.FlatMap(tagged, "event"),
            assigned | "MixEvents" >> beam.FlatMap(tagged, "event"),
            shard_events,
        ) | "Events" >> beam.Flatten()
        return {"contaminated": checked | "Contaminated" >> beam.FlatMap(tagged, "contaminated"), "events": events}


class TokenizeByRepository(beam.PTransform):
    """Groups of paths of input data shards laid out by repository -> {'contaminated', 'events'};
    writes the token shards of the same indices (`TokenizeRepoShards`)."""

    def __init__(self, config: TokenizeConfig, tokenizer_path: str, out_dir: str, dtype: str) -> None:
        super().__init__()
        self.config, self.tokenizer_path, self.out_dir, self.dtype = config, tokenizer_path, out_dir, dtype

    def expand(self, groups):
        tagged_outputs = (
            groups
            | "Spread" >> beam.Reshuffle()  # one group per worker on a distributed runner
            | "TokenizeShards"
            >> beam.ParDo(TokenizeRepoShards(self.tokenizer_path, self.config, self.out_dir, self.dtype))
        )
        return {
            "contaminated": tagged_outputs | "Contaminated" >> beam.FlatMap(tagged, "contaminated"),
            "events": tagged_outputs | "Events" >> beam.FlatMap(tagged, "event"),
        }


@dataclass
class TokenizeResult:
    out_dir: StoragePath
    report: dict
    seconds: float


def run_tokenize(
    in_dir: StoragePath | str,
    out_dir: StoragePath | str,
    tokenizer: StoragePath | str,
    config: TokenizeConfig = TokenizeConfig(),
    pipeline_args: list[str] | None = None,
    processes: int = 1,
    shuffle: bool = False,
) -> TokenizeResult:
    """`codemill tokenize IN OUT --tokenizer T`: kept records of a curation or dedup output -> token
    shards. An input laid out by repository with `config.num_shards` shards is read shard by shard
    without a shuffle, unless `shuffle` (the same bytes either way)."""
    in_dir, out_dir = resolved(in_dir), resolved(out_dir)
    if not (in_dir / SUCCESS_MARKER).exists():
        raise FileNotFoundError(f"{in_dir} is not a finished curation or dedup output (no {SUCCESS_MARKER})")
    source = resolved(tokenizer)
    loaded = load_tokenizer(source)  # fails early, naming the problem
    dtype = token_dtype(loaded.get_vocab_size(), config.dtype)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / SUCCESS_MARKER).unlink(missing_ok=True)
    for name in ("tokens", "contaminated", "tokenizer"):
        rmtree(out_dir / name)
    for name in (REPORT, "blend.json"):
        (out_dir / name).unlink(missing_ok=True)
    # The shards travel with the tokenizer that made them.
    if source.is_dir():
        copy_tree(source, out_dir / "tokenizer")
    else:
        copy_file(source, out_dir / "tokenizer" / "tokenizer.json")

    options, runner = default_pipeline_options(pipeline_args)
    if not is_single_process(options, runner):
        processes = 1
    started = time.monotonic()
    pipeline = beam.Pipeline(runner=runner, options=options)
    paths = [str(p) for p in shard_paths(in_dir / "data")]
    by_repository = not shuffle and repo_layout_shards(in_dir) == config.num_shards == len(paths)
    if by_repository:
        # One process here: every shard in one element, so batches flow over shard boundaries.
        groups = [tuple(paths)] if is_single_process(options, runner) else [(path,) for path in paths]
        outputs = (
            pipeline
            | "InputShards" >> beam.Create(groups)
            | "Tokenize" >> TokenizeByRepository(config, str(out_dir / "tokenizer"), str(out_dir), dtype.__name__)
        )
    else:
        log.info(
            "tokenize: %s is not laid out by repository in %d shards; shuffling its records", in_dir, config.num_shards
        )
        outputs = read_records(pipeline, in_dir, "data") | "Tokenize" >> Tokenize(
            config, str(out_dir / "tokenizer"), str(out_dir), dtype.__name__, processes
        )
    outputs["contaminated"] | "WriteContaminated" >> WriteShards(
        str(out_dir), (("contaminated", MANIFEST_SCHEMA, "all"),), config.num_shards
    )
    report_path = out_dir / REPORT
    (
        outputs["events"]
        | "Stats" >> beam.CombineGlobally(StatsCombine(TokenizeStats))
        | "WriteReport" >> beam.Map(lambda stats: write_json(report_path, stats))
    )
    result = pipeline.run()
    result.wait_until_finish()
    seconds = time.monotonic() - started
    report = _check(out_dir, config.num_shards)
    shard_tokens: dict[str, dict[str, int]] = {}
    for name, info in report["shards"].items():
        component = name.split("/", 1)[0]
        shard_tokens.setdefault(component, {})[str(out_dir / "tokens" / name)] = info["tokens"]
    write_json(out_dir / "blend.json", blend(config.mixture, shard_tokens, config.train_tokens))
    report["dtype"] = dtype.__name__
    report["input_read"] = "by repository, no shuffle" if by_repository else "shuffled"
    report["tokenizer"] = str(out_dir / "tokenizer")
    write_json(report_path, report)
    write_json(out_dir / SUCCESS_MARKER, {"stage": "tokenize", "seconds": round(seconds, 2), "input": str(in_dir)})
    return TokenizeResult(out_dir, report, seconds)


def _check(out_dir: StoragePath, num_shards: int) -> dict:
    if not (out_dir / REPORT).exists():
        raise IncompleteOutputError(f"the pipeline finished but {out_dir / REPORT} was not written")
    report = read_json(out_dir / REPORT)
    missing = [
        f"{name}{suffix}"
        for name in report["shards"]
        for suffix in (".bin", ".idx", ".trace.parquet")
        if not (out_dir / "tokens" / f"{name}{suffix}").exists()
    ]
    missing += [
        f"contaminated/{shard_name(i, num_shards)}"
        for i in range(num_shards)
        if not (out_dir / "contaminated" / shard_name(i, num_shards)).exists()
    ]
    if missing:
        raise IncompleteOutputError(
            f"tokenize output under {out_dir} is incomplete (missing: {', '.join(missing[:4])})"
        )
    if not report["shards"]:
        raise IncompleteOutputError(
            f"no documents were made from the records under {out_dir}: every file was empty, "
            "contaminated or dropped before this stage"
        )
    return report
