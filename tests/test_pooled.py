"""The local process pool behind --workers: same outputs as inline, and a dead worker fails the
run instead of hanging it."""

from __future__ import annotations

import os

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from codemill.pipelines.common import default_pipeline_options
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
        outputs = pipeline | beam.Create(values) | beam.ParDo(
            PooledDoFn(function, (), processes, batch_size=4, threads=threads))
        if expected is not None:
            assert_that(outputs, equal_to(expected))


@pytest.mark.parametrize("processes,threads", [(1, False), (2, False), (2, True)])
def test_pool_gives_the_inline_outputs(processes: int, threads: bool) -> None:
    run(square, processes, range(50), expected=[x * x for x in range(50)], threads=threads)


def test_a_dead_worker_fails_the_run() -> None:
    with pytest.raises(Exception, match="(?i)terminated abruptly|BrokenProcessPool"):
        run(die_on_seven, 2, range(20))
