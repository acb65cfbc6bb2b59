"""The tokenize stage as Beam PTransforms, and its driver.

Input laid out by repository (every curate and dedup output: `outputs.SHARD_LAYOUT`), the default:

    data/part-i ─TokenizeRepoShards─> tokens/<component>/part-i.{bin,idx,trace.parquet}, + contaminated, events

Each input shard is read a repository at a time, decontaminated, assigned to mixture components,
and tokenized into the token shards of the same index: no shuffle, and the reading and scanning
overlap the encoder (which also runs on over shard boundaries, and through the matcher's build:
`tokenize/repo_planner.py`). Any other input (or `shuffle=True`) goes through one shuffle of records:

    records (kept) ─Decontaminate─> clean ─GroupByKey((component, shard), SourceText bytes)─WriteTokenShard─>
                 └─> contaminated (manifest rows, drop reason contaminated:<benchmark>:<task>)

Both write the same bytes: a repository goes to a shard by a hash of its name, and a shard's
repositories are made into documents in name order, so shards are byte-identical on any runner
with any number of workers. The shuffle path holds a shard's records in memory while it is
written (`num_shards` bounds the memory per worker); the repository path holds one repository's.
"""

from __future__ import annotations

import logging
import pickle
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Iterator

import apache_beam as beam
import numpy as np

from codemill.jsonl import read_json
from codemill.pipelines.common import (
    ProgressBar,
    StatsCombine,
    read_records,
    tagged,
    write_json,
)
from codemill.pipelines.driver import BeamDriver, require_finished
from codemill.pipelines.outputs import (
    SUCCESS_MARKER,
    IncompleteOutputError,
    InputLayoutError,
    WriteShards,
    repo_layout_shards,
)
from codemill.pipelines.pooled import PooledDoFn
from codemill.records import MANIFEST_SCHEMA, FileRecord
from codemill.shards import parse_shard_name, shard_name, shard_of, shard_paths
from codemill.storage import StoragePath, copy_file, copy_tree, resolved, rmtree
from codemill.tokenize import repo_planner
from codemill.tokenize.config import TokenizeConfig
from codemill.tokenize.decontam import decontaminate_record, warm_matcher
from codemill.tokenize.documents import (
    DocumentConfig,
    SourceText,
    plan_repository,
)
from codemill.tokenize.indexed import token_dtype
from codemill.tokenize.mixture import MixtureSpec, blend
from codemill.tokenize.shard_writer import PlannedRepository, source_text, write_token_shards
from codemill.tokenize.stats import OutsideMixture, TokenizeStats
from codemill.tokenize.tokenizer import load_tokenizer

log = logging.getLogger(__name__)

REPORT = "tokenize.json"


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


def _assign_shard(record: FileRecord, mixture: MixtureSpec, num_shards: int) -> Iterator[tuple]:
    """A record goes to its mixture component, and to a shard by its repository: a repository's
    files meet in one place, where its documents are made. Only what the documents need travels
    (a SourceText, far cheaper to pickle than the whole FileRecord), pickled to bytes here: the
    local runner decodes and re-encodes every shuffled value to group it, which for bytes is a copy
    and for a tuple of strings a UTF-8 transcoding each time."""
    component = mixture.component_of(record)
    if component is None:
        yield "event", OutsideMixture()
    else:
        source = source_text(record)
        yield "record", ((component, shard_of(record.repo, num_shards)), pickle.dumps(tuple(source), protocol=5))


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
        self.matcher = repo_planner.matcher_in_background(self.config.decontam)
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
        decontaminated = repo_planner.DecontaminatedPlanner(config, self.matcher, side)

        def items() -> Iterator[PlannedRepository]:
            for index, path in shards:
                previous = None
                for repo, records in repo_planner.repositories_of(path, self.read_rows):
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


def _prepare(out_dir: StoragePath, source: StoragePath) -> None:
    """Clear an earlier run's outputs; the shards travel with the tokenizer that made them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / SUCCESS_MARKER).unlink(missing_ok=True)
    for name in ("tokens", "contaminated", "tokenizer"):
        rmtree(out_dir / name)
    for name in (REPORT, "blend.json"):
        (out_dir / name).unlink(missing_ok=True)
    if source.is_dir():
        copy_tree(source, out_dir / "tokenizer")
    else:
        copy_file(source, out_dir / "tokenizer" / "tokenizer.json")


def _build(
    driver: BeamDriver,
    in_dir: StoragePath,
    out_dir: StoragePath,
    config: TokenizeConfig,
    dtype: str,
    by_repository: bool,
) -> beam.Pipeline:
    pipeline = driver.pipeline()
    tokenizer = str(out_dir / "tokenizer")
    if by_repository:
        # One process here: every shard in one element, so batches flow over shard boundaries.
        paths = [str(p) for p in shard_paths(in_dir / "data")]
        groups = [tuple(paths)] if driver.single_process else [(path,) for path in paths]
        outputs = (
            pipeline
            | "InputShards" >> beam.Create(groups)
            | "Tokenize" >> TokenizeByRepository(config, tokenizer, str(out_dir), dtype)
        )
    else:
        log.info(
            "tokenize: %s is not laid out by repository in %d shards; shuffling its records", in_dir, config.num_shards
        )
        outputs = read_records(pipeline, in_dir, "data") | "Tokenize" >> Tokenize(
            config, tokenizer, str(out_dir), dtype, driver.processes
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
    return pipeline


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
    require_finished(in_dir, "curation or dedup", "run `codemill curate` (or `codemill dedup`) into it first")
    source = resolved(tokenizer)
    loaded = load_tokenizer(source)  # fails early, naming the problem
    dtype = token_dtype(loaded.get_vocab_size(), config.dtype)
    _prepare(out_dir, source)
    driver = BeamDriver.from_args(pipeline_args, processes)
    layout_shards = repo_layout_shards(in_dir)
    by_repository = not shuffle and layout_shards == config.num_shards == len(shard_paths(in_dir / "data"))
    seconds = driver.timed(_build(driver, in_dir, out_dir, config, dtype.__name__, by_repository))
    report = _check(out_dir, config.num_shards)
    shard_tokens: dict[str, dict[str, int]] = {}
    for name, info in report["shards"].items():
        component = name.split("/", 1)[0]
        shard_tokens.setdefault(component, {})[str(out_dir / "tokens" / name)] = info["tokens"]
    write_json(out_dir / "blend.json", blend(config.mixture, shard_tokens, config.train_tokens))
    report["dtype"] = dtype.__name__
    report["input_read"] = "by repository, no shuffle" if by_repository else "shuffled"
    report["tokenizer"] = str(out_dir / "tokenizer")
    write_json(out_dir / REPORT, report)
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
