"""The tokenize stage as Beam PTransforms, and its driver.

    records (kept) ─Decontaminate─> clean ─GroupByKey((component, shard), SourceText bytes)─WriteTokenShard─>
                 │                      tokens/<component>/part-NNNNN-of-MMMMM.{bin,idx,trace.parquet}
                 └─> contaminated (manifest rows, contaminated_by <benchmark>:<task>)

A repository goes to a shard by a hash of its name, and a shard's repositories are made into
documents in name order, so shards are byte-identical on any runner with any number of workers.
One shuffle, of records: documents are written where they are made (a second shuffle of the
documents by shard cost ~3 s of a 97 s run on 200 MB). A shard's records are held in memory
while it is written, so `num_shards` bounds the memory per worker as well as the parallelism of
this step: choose it so a shard's text fits a worker (e.g. ~1 GB of text per shard).
"""

from __future__ import annotations

import logging
import pickle
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import apache_beam as beam
import numpy as np

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
)
from codemill.pipelines.pooled import PooledDoFn
from codemill.progress import bar
from codemill.records import MANIFEST_SCHEMA, FileRecord
from codemill.shards import shard_name, shard_of
from codemill.tokenize.config import TokenizeConfig
from codemill.tokenize.decontam import decontaminate_record, warm_matcher
from codemill.tokenize.documents import (
    Document,
    DocumentConfig,
    SourceText,
    assemble_documents,
    encode_plans,
    plan_repository,
)
from codemill.tokenize.indexed import token_dtype, write_shard
from codemill.tokenize.mixture import MixtureSpec, blend
from codemill.tokenize.stats import TokenizeStats
from codemill.tokenize.tokenizer import load_tokenizer

log = logging.getLogger(__name__)

REPORT = "tokenize.json"


class WriteTokenShard(beam.DoFn):
    """((component, shard), records) -> the shard's .bin/.idx/.trace.parquet written, plus stats
    events. Repositories come in name order and their documents in order, so the shard is the same
    bytes on any runner with any number of workers. Planning, assembly and writing overlap the
    encoding of the next batch (`encode_plans`); documents stream to disk one at a time."""

    def __init__(self, tokenizer_path: str, config: DocumentConfig, out_dir: str, num_shards: int, dtype: str,
                 batch_chars: int = 4_000_000) -> None:
        self.tokenizer_path, self.config, self.out_dir = tokenizer_path, config, out_dir
        self.num_shards, self.dtype, self.batch_chars = num_shards, dtype, batch_chars

    def setup(self) -> None:
        self.tokenizer = load_tokenizer(Path(self.tokenizer_path))

    def process(self, grouped: tuple[tuple[str, int], Iterable[bytes]]) -> Iterator[tuple]:
        (component, index), sources = grouped
        by_repo: dict[str, list[SourceText]] = defaultdict(list)
        for blob in sources:
            source = SourceText(*pickle.loads(blob))  # shuffled as bytes (see _assign_shard)
            by_repo[source.repo].append(source)
        plans = (plan for plan in (plan_repository(repo, by_repo.pop(repo), self.config) for repo in sorted(by_repo))
                 if plan is not None)
        events: list[tuple] = []
        dtype = np.dtype(self.dtype).type

        def documents() -> Iterator[Document]:
            for plan, ids in encode_plans(self.tokenizer, plans, self.batch_chars):
                for doc in assemble_documents(plan, ids, self.tokenizer, self.config):
                    events.append(("document", component, len(doc.tokens), sum(1 for s in doc.spans if s.fim),
                                   len(doc.spans), doc.split_file))
                    yield doc

        name = f"{component}/{shard_name(index, self.num_shards).removesuffix('.parquet')}"
        progress = bar(desc=f"tokenize {name}", unit=" docs", mininterval=2.0, leave=False)

        def counted(docs: Iterator[Document]) -> Iterator[Document]:
            for doc in docs:
                progress.update(1)
                yield doc

        try:
            info = write_shard(Path(self.out_dir) / "tokens" / name, counted(documents()), dtype)
        finally:
            progress.close()
        yield from events
        if info.documents:
            yield "shard", name, info.documents, info.tokens


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
        source = SourceText(record.swhid, record.qualified_swhid, record.repo, record.path, record.content,
                            record.license_spdx, record.license_type)
        yield "record", ((component, shard_of(record.repo, num_shards)), pickle.dumps(tuple(source), protocol=5))


class Tokenize(beam.PTransform):
    """Records -> {'contaminated': dropped records, 'events': stats events}; writes the shards."""

    def __init__(self, config: TokenizeConfig, tokenizer_path: str, out_dir: str, dtype: str,
                 processes: int = 1) -> None:
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
            | "Decontaminate" >> beam.ParDo(PooledDoFn(decontaminate_record, (config.decontam,), self.processes,
                                                       threads=True, warmup=warm_matcher))
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
            | "WriteShard" >> beam.ParDo(WriteTokenShard(self.tokenizer_path, config.documents, self.out_dir,
                                                         config.num_shards, self.dtype))
        )
        events = (
            (checked | "CheckEvents" >> beam.FlatMap(tagged, "event"),
             assigned | "MixEvents" >> beam.FlatMap(tagged, "event"), shard_events)
            | "Events" >> beam.Flatten()
        )
        return {"contaminated": checked | "Contaminated" >> beam.FlatMap(tagged, "contaminated"), "events": events}




@dataclass
class TokenizeResult:
    out_dir: Path
    report: dict
    seconds: float


def run_tokenize(in_dir: Path, out_dir: Path, tokenizer: Path, config: TokenizeConfig = TokenizeConfig(),
                 pipeline_args: list[str] | None = None, processes: int = 1) -> TokenizeResult:
    """`codemill tokenize IN OUT --tokenizer T`: kept records of a curation or dedup output -> token shards."""
    in_dir, out_dir = Path(in_dir).resolve(), Path(out_dir).resolve()
    if not (in_dir / SUCCESS_MARKER).exists():
        raise FileNotFoundError(f"{in_dir} is not a finished curation or dedup output (no {SUCCESS_MARKER})")
    loaded = load_tokenizer(Path(tokenizer))  # fails early, naming the problem
    dtype = token_dtype(loaded.get_vocab_size(), config.dtype)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / SUCCESS_MARKER).unlink(missing_ok=True)
    for name in ("tokens", "contaminated", "tokenizer"):
        shutil.rmtree(out_dir / name, ignore_errors=True)
    for name in (REPORT, "blend.json"):
        (out_dir / name).unlink(missing_ok=True)
    # The shards travel with the tokenizer that made them.
    source = Path(tokenizer)
    if source.is_dir():
        shutil.copytree(source, out_dir / "tokenizer")
    else:
        (out_dir / "tokenizer").mkdir()
        shutil.copy2(source, out_dir / "tokenizer" / "tokenizer.json")

    options, runner = default_pipeline_options(pipeline_args)
    if not is_single_process(options, runner):
        processes = 1
    started = time.monotonic()
    pipeline = beam.Pipeline(runner=runner, options=options)
    outputs = read_records(pipeline, in_dir, "data") | "Tokenize" >> Tokenize(
        config, str(out_dir / "tokenizer"), str(out_dir), dtype.__name__, processes)
    outputs["contaminated"] | "WriteContaminated" >> WriteShards(
        str(out_dir), (("contaminated", MANIFEST_SCHEMA, "all"),), config.num_shards)
    report_path = out_dir / REPORT
    (outputs["events"] | "Stats" >> beam.CombineGlobally(StatsCombine(TokenizeStats))
     | "WriteReport" >> beam.Map(lambda stats: write_json(report_path, stats)))
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
    report["tokenizer"] = str(out_dir / "tokenizer")
    write_json(report_path, report)
    write_json(out_dir / SUCCESS_MARKER, {"stage": "tokenize", "seconds": round(seconds, 2), "input": str(in_dir)})
    return TokenizeResult(out_dir, report, seconds)


def _check(out_dir: Path, num_shards: int) -> dict:
    import json

    if not (out_dir / REPORT).exists():
        raise IncompleteOutputError(f"the pipeline finished but {out_dir / REPORT} was not written")
    report = json.loads((out_dir / REPORT).read_text())
    missing = [f"{name}{suffix}" for name in report["shards"] for suffix in (".bin", ".idx", ".trace.parquet")
               if not (out_dir / "tokens" / f"{name}{suffix}").exists()]
    missing += [f"contaminated/{shard_name(i, num_shards)}" for i in range(num_shards)
                if not (out_dir / "contaminated" / shard_name(i, num_shards)).exists()]
    if missing:
        raise IncompleteOutputError(f"tokenize output under {out_dir} is incomplete (missing: {', '.join(missing[:4])})")
    if not report["shards"]:
        raise IncompleteOutputError(f"no documents were made from the records under {out_dir}: every file was empty, "
                                    "contaminated or dropped before this stage")
    return report
