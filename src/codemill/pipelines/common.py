"""Pieces every stage's Beam layer shares: coders, a stats CombineFn, pipeline options, JSON output."""

from __future__ import annotations

import dataclasses
import pickle

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from codemill.jsonl import write_json  # noqa: F401 (the stages import it from here)
from codemill.records import rebuild, records_from_table


class DataclassCoder(beam.coders.Coder):
    """A record dataclass as the pickled tuple of its field values, rebuilt without __init__.
    Pickling the instance itself would carry a dict of field names with every element, which costs
    more to encode and far more to decode; Beam's fallback coder for unknown types costs more
    again. `register` maps a type to it; Beam asks `from_type_hint` for an instance bound to the
    type."""

    def __init__(self, record_type: type) -> None:
        self.record_type = record_type
        self.names = tuple(f.name for f in dataclasses.fields(record_type))

    @classmethod
    def from_type_hint(cls, typehint, registry) -> "DataclassCoder":  # type: ignore[override]  # Beam's stub: CoderT
        return cls(typehint)

    def encode(self, value) -> bytes:
        return pickle.dumps(tuple([getattr(value, name) for name in self.names]), protocol=5)

    def decode(self, encoded: bytes):
        return rebuild(self.record_type, self.names, pickle.loads(encoded))

    def is_deterministic(self) -> bool:
        return False

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.record_type is other.record_type

    def __hash__(self) -> int:
        return hash((type(self), self.record_type))


def register(*types: type) -> None:
    for record_type in types:
        beam.coders.registry.register_coder(record_type, DataclassCoder)


class StatsCombine(beam.CombineFn):
    """Folds elements into any accumulator with add(element), merge(other) and to_json()."""

    def __init__(self, factory) -> None:
        self.factory = factory

    def create_accumulator(self):
        return self.factory()

    def add_input(self, acc, element):
        return acc.add(element)

    def merge_accumulators(self, accs):
        merged = self.factory()
        for acc in accs:
            merged.merge(acc)
        return merged

    def extract_output(self, acc) -> dict:
        return acc.to_json()


class MergedStats(StatsCombine):
    """StatsCombine over partial accumulators (one per shard, say) rather than elements."""

    def add_input(self, acc, partial):
        acc.merge(partial)
        return acc


def unknown_pipeline_args(args: list[str]) -> list[str]:
    """The arguments that no Beam pipeline option and no option of codemill's runner takes. Beam
    itself drops them with a warning and runs on, so a misspelt flag (`--no_pii` for `--no-pii`)
    or a stray path would change nothing while the run looked fine: the commands refuse them."""
    from apache_beam.options.pipeline_options import _BeamArgumentParser

    from codemill.pipelines.dask_runner import DASK_FLAGS

    parser = _BeamArgumentParser(allow_abbrev=False)
    # As PipelineOptions.get_all_options builds its parser: one instance of each subclass.
    for cls in {str(cls): cls for cls in PipelineOptions.__subclasses__()}.values():
        cls._add_argparse_args(parser)
    for flag in DASK_FLAGS:
        parser.add_argument(flag)
    return parser.parse_known_args(args)[1]


class ProgressBar(beam.DoFn):
    """Pass-through that draws a tqdm bar of the elements seen by this worker."""

    def __init__(self, total: int | None, desc: str, unit: str, position: int = 0) -> None:
        self.total, self.desc, self.unit, self.position = total, desc, unit, position

    def setup(self) -> None:
        from codemill.progress import bar

        self.bar = bar(
            total=self.total, unit=self.unit, desc=self.desc, mininterval=2.0, leave=False, position=self.position
        )

    def process(self, element):
        self.bar.update(1)
        yield element

    def teardown(self) -> None:
        self.bar.close()


def tagged(element: tuple, tag: str):
    """Splits a ('tag', value) stream: one output per step rather than Beam's tagged outputs, which
    the DaskRunner routes into the main output (seen with apache-beam 2.77)."""
    if element[0] == tag:
        yield element[1]


def _shard_records(path: str):
    from codemill.shards import parquet_file

    for batch in parquet_file(path).iter_batches(batch_size=1024):
        yield from records_from_table(batch)


def read_records(pipeline, in_dir, table: str):
    """FileRecords from a stage output's table (data, dropped, ...) on any storage, read a shard per
    element in Arrow batches and turned into records a column at a time (`records_from_table`).
    (Not Beam's ReadFromParquet: its S3 filesystem reads neither fsspec's settings nor ours.)"""
    from codemill.shards import shard_paths
    from codemill.storage import location

    paths = [str(p) for p in shard_paths(location(in_dir) / table)]
    return (
        pipeline
        | f"Shards{table}" >> beam.Create(paths)
        | f"Spread{table}" >> beam.Reshuffle()
        | f"Records{table}" >> beam.FlatMap(_shard_records)
    )
