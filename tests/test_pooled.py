"""The local process pool behind --workers: same outputs as inline, and a dead worker fails the
run instead of hanging it."""

from __future__ import annotations

import os

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from codemill.pipelines.driver import default_pipeline_options
from codemill.pipelines.pooled import PooledDoFn


def square(x: int) -> list[int]:
    return [x * x]


def die_on_seven(x: int) -> list[int]:
    if x == 7:
        os._exit(9)  # what the kernel's OOM killer does to a worker
    return [x]


def run(function, processes: int, values, expected=None, threads: bool = False) -> None:
    options, runner = default_pipeline_options([])
    with beam.Pipeline(runner=runner, options=options) as pipeline:
        outputs = (
            pipeline
            | beam.Create(values)
            | beam.ParDo(PooledDoFn(function, (), processes, batch_size=4, threads=threads))
        )
        if expected is not None:
            assert_that(outputs, equal_to(expected))


@pytest.mark.parametrize("processes,threads", [(1, False), (2, False), (2, True)])
def test_pool_gives_the_inline_outputs(processes: int, threads: bool) -> None:
    run(square, processes, range(50), expected=[x * x for x in range(50)], threads=threads)


def test_a_dead_worker_fails_the_run() -> None:
    with pytest.raises(Exception, match="(?i)terminated abruptly|BrokenProcessPool"):
        run(die_on_seven, 2, range(20))


def test_record_coder_round_trips_dataclasses_frozen_or_not() -> None:
    import pickle

    import codemill.pipelines.curate  # noqa: F401 - registers the record coders
    import codemill.pipelines.dedup  # noqa: F401
    from codemill.dedup.ranking import DedupEntry
    from codemill.records import FileRecord

    record = FileRecord(
        "swh:1:cnt:" + "0" * 40,
        "a/b.py",
        "org/repo",
        content="x = 1\n",
        filters=["long_lines"],
        pii_types=["email"],
        kept=False,
        drop_reason="long_lines",
    )
    coder = beam.coders.registry.get_coder(FileRecord)
    assert coder.decode(coder.encode(record)) == record
    assert pickle.loads(pickle.dumps(coder)) == coder  # runners ship coders to workers
    entry = DedupEntry.of(record)  # frozen: rebuilt without __init__ or __setattr__
    entry_coder = beam.coders.registry.get_coder(DedupEntry)
    assert entry_coder != coder and entry_coder.decode(entry_coder.encode(entry)) == entry


def test_records_from_a_table_equal_records_from_its_rows() -> None:
    """The column-at-a-time reader gives the records `from_dict` gives row by row, and the
    dataclass defaults for columns a table lacks."""
    import pyarrow as pa

    from codemill.records import FILE_RECORD_SCHEMA, FileRecord, records_from_table

    records = [
        FileRecord(
            "swh:1:cnt:" + "1" * 40,
            "a.py",
            "org/one",
            content="print(1)\n",
            stars=3,
            filters=["x"],
            pii_types=["email", "key"],
            parse_error_ratio=0.25,
        ),
        FileRecord(None, "b.bin", "org/two", kept=False, drop_reason="binary"),
    ]
    table = pa.Table.from_pylist([r.to_dict() for r in records], schema=FILE_RECORD_SCHEMA)
    assert list(records_from_table(table)) == records
    assert list(records_from_table(table)) == [FileRecord.from_dict(row) for row in table.to_pylist()]
    partial = table.drop_columns(["stars", "filters", "kept"])
    assert list(records_from_table(partial)) == [FileRecord.from_dict(row) for row in partial.to_pylist()]
    assert [r.filters for r in records_from_table(partial)] == [[], []]
    assert list(records_from_table(table.slice(0, 0))) == []
