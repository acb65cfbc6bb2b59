"""The tokenize stage as Beam PTransforms, and its driver.

    records (kept) ─Decontaminate─> clean ─GroupByKey(repo)─BuildDocuments─> documents
                                 └─> contaminated (manifest rows, contaminated_by <benchmark>:<task>)
    documents ─GroupByKey(shard)─WriteTokenShards─> tokens/part-NNNNN-of-MMMMM.{bin,idx,trace.parquet}

Documents go to a shard by a hash of (repository, document index) and are sorted inside it, so
shards are byte-identical on any runner with any number of workers.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import apache_beam as beam
import numpy as np
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from codemill.pipelines.common import (
    StatsCombine,
    default_pipeline_options,
    is_single_process,
    read_records,
    register,
    tagged,
    write_json,
)
from codemill.pipelines.outputs import (
    SUCCESS_MARKER,
    IncompleteOutputError,
    WriteShards,
)
from codemill.pipelines.pooled import PooledDoFn
from codemill.records import MANIFEST_SCHEMA, FileRecord
from codemill.shards import shard_name, shard_of
from codemill.tokenize.config import TokenizeConfig
from codemill.tokenize.mixture import MixtureSpec, blend
from codemill.tokenize.decontam import decontaminate_record
from codemill.tokenize.documents import (
    Document,
    DocumentConfig,
    SourceText,
    assemble_documents,
    encode_pieces,
    plan_repository,
)
from codemill.tokenize.indexed import token_dtype, write_shard
from codemill.tokenize.stats import TokenizeStats
from codemill.tokenize.tokenizer import load_tokenizer

log = logging.getLogger(__name__)

REPORT = "tokenize.json"


class BuildDocuments(beam.DoFn):
    """(repo, records) -> ('doc', (shard, Document)) and stats events. Repositories are buffered up
    to `batch_chars` characters and tokenised in one encode_batch call: per-repository calls are
    too small to keep the tokenizer's threads busy."""

    def __init__(self, tokenizer_path: str, config: DocumentConfig, num_shards: int, dtype: str,
                 batch_chars: int = 4_000_000) -> None:
        self.tokenizer_path, self.config, self.num_shards = tokenizer_path, config, num_shards
        self.dtype = dtype  # documents cross the shard shuffle in the shard's dtype (uint16: 1/4 of int64)
        self.batch_chars = batch_chars

    def setup(self) -> None:
        self.tokenizer = load_tokenizer(Path(self.tokenizer_path))

    def start_bundle(self) -> None:
        self.plans: list = []
        self.buffered = 0

    def process(self, grouped: tuple[tuple[str, str], list]) -> Iterator[tuple]:
        (component, repo), records = grouped
        files = [SourceText(r.swhid, r.qualified_swhid, r.repo, r.path, r.content, r.license_spdx, r.license_type)
                 for r in records]
        plan = plan_repository(repo, files, self.config)
        if plan is not None:
            self.plans.append((component, plan))
            self.buffered += sum(len(piece) for piece in plan.pieces)
        if self.buffered >= self.batch_chars:
            yield from self._flush()

    def finish_bundle(self) -> Iterator[WindowedValue]:
        for output in self._flush():
            yield WindowedValue(output, MIN_TIMESTAMP, [GlobalWindow()])

    def _flush(self) -> Iterator[tuple]:
        plans, self.plans, self.buffered = self.plans, [], 0
        ids = encode_pieces(self.tokenizer, [piece for _, plan in plans for piece in plan.pieces])
        at = 0
        for component, plan in plans:
            own = ids[at: at + len(plan.pieces)]
            at += len(plan.pieces)
            for doc in assemble_documents(plan, own, self.tokenizer, self.config):
                yield "event", ("document", component, len(doc.tokens), sum(1 for s in doc.spans if s.fim),
                                len(doc.spans), doc.split_file)
                if int(doc.tokens.max()) > np.iinfo(self.dtype).max:
                    raise ValueError(f"{doc.repo}: token id {int(doc.tokens.max())} does not fit {self.dtype} shards")
                doc.tokens = doc.tokens.astype(self.dtype)
                yield "doc", ((component, shard_of(f"{doc.repo}#{doc.index}", self.num_shards)), doc)


def _assign_component(record: FileRecord, mixture: MixtureSpec) -> Iterator[tuple]:
    component = mixture.component_of(record)
    if component is None:
        yield "event", ("outside_mixture",)
    else:
        yield "record", ((component, record.repo), record)


@dataclass(frozen=True)
class ShardWriterFn:
    out_dir: str
    num_shards: int
    dtype: str  # numpy dtype name

    def __call__(self, grouped: tuple[tuple[str, int], list]) -> Iterator[tuple]:
        (component, index), docs = grouped
        docs = sorted(docs, key=lambda d: (d.repo, d.index))
        name = f"{component}/{shard_name(index, self.num_shards).removesuffix('.parquet')}"
        info = write_shard(Path(self.out_dir) / "tokens" / name, docs, np.dtype(self.dtype).type)
        yield "shard", name, info.documents, info.tokens


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
            | "Decontaminate" >> beam.ParDo(PooledDoFn(decontaminate_record, (config.decontam,), self.processes))
        )
        assigned = (
            checked
            | "Clean" >> beam.FlatMap(tagged, "clean")
            | "Component" >> beam.FlatMap(_assign_component, config.mixture)
        )
        built = (
            assigned
            | "ToMix" >> beam.FlatMap(tagged, "record")
            | "GroupRepo" >> beam.GroupByKey()
            | "Documents" >> beam.ParDo(BuildDocuments(self.tokenizer_path, config.documents, config.num_shards,
                                                       self.dtype))
        )
        shard_events = (
            built
            | "Docs" >> beam.FlatMap(tagged, "doc")
            | "GroupShard" >> beam.GroupByKey()
            | "WriteShard" >> beam.FlatMap(ShardWriterFn(self.out_dir, config.num_shards, self.dtype))
        )
        events = (
            (checked | "CheckEvents" >> beam.FlatMap(tagged, "event"),
             assigned | "MixEvents" >> beam.FlatMap(tagged, "event"),
             built | "DocEvents" >> beam.FlatMap(tagged, "event"), shard_events)
            | "Events" >> beam.Flatten()
        )
        return {"contaminated": checked | "Contaminated" >> beam.FlatMap(tagged, "contaminated"), "events": events}


register(Document)


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
