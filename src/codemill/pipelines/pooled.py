"""A DoFn that runs its per-element work in a local process pool.

Why: Beam's local FnApiRunner scales poorly across processes (`--direct_num_workers=2
--direct_running_mode=multi_processing` gains little on a CPU-bound Map, since every stage's data
crosses the runner process; RESULTS.md has the measurement).
For the local default we therefore run the pipeline in-process and fan the CPU-heavy per-element
cores (record building, ScanCode) out to `processes` pool workers. On a cluster runner each SDK
worker already owns a core, so `processes` stays 1 there and the work runs inline.

Pool workers are started with "spawn", so the calling program must be importable (a script or
the `codemill` command; not code piped into `python -`, where spawn cannot re-import __main__).

With `threads=True` the pool is threads in this process instead: for functions whose heavy part
releases the GIL (a `nogil` numba kernel), where shipping every element to another process and
back would cost more than the work (the tokenize stage's decontamination: 200 MB of records
pickled both ways, and the matcher built once per process).

Outputs are emitted as the pool finishes them, so order differs from input order; every stage
downstream is keyed or sorted, so the written output does not depend on it.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections import deque
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from codemill.pipelines.pool_worker import exit_with_parent, run_batch


def _quietly(function: Callable[..., None], extra: tuple) -> None:
    try:
        function(*extra)
    except Exception:  # noqa: BLE001 - the first real call raises it where it can be reported
        pass


class PooledDoFn(beam.DoFn):
    """Apply `function(element, *extra) -> iterable of outputs` to each element, in `processes`
    pool workers when processes > 1 (batches of `batch_size`, a bounded number in flight); the
    workers are threads of this process with `threads=True`."""

    def __init__(
        self,
        function: Callable[..., Iterable],
        extra: tuple = (),
        processes: int = 1,
        batch_size: int = 64,
        threads: bool = False,
        warmup: Callable[..., None] | None = None,
    ) -> None:
        self.function = function
        self.extra = extra
        self.processes = processes
        self.batch_size = batch_size
        self.threads = threads
        # Run once at setup in a background thread (inline and thread modes), so a slow one-off
        # such as building a matcher overlaps the reading of the first elements. Its errors are
        # left to the first real call, which raises them with the element's context.
        self.warmup = warmup

    def setup(self) -> None:
        self.pool: Executor | None = None
        if self.warmup is not None and (self.threads or self.processes == 1):
            threading.Thread(
                target=_quietly, args=(self.warmup, self.extra), daemon=True, name="codemill-warmup"
            ).start()
        if self.processes > 1 and self.threads:
            self.pool = ThreadPoolExecutor(self.processes, thread_name_prefix="codemill-pool")
        elif self.processes > 1:
            # spawn, not fork: the in-process runner holds gRPC threads that must not be forked.
            # An executor, not multiprocessing.Pool: when a worker dies (killed for memory, say)
            # its futures fail with BrokenProcessPool instead of waiting forever.
            self.pool = ProcessPoolExecutor(
                self.processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=exit_with_parent,
                initargs=(os.getpid(),),
            )

    def start_bundle(self) -> None:
        self.batch: list = []
        self.pending: deque = deque()

    def _submit(self) -> None:
        if self.batch and self.pool is not None:
            self.pending.append(self.pool.submit(run_batch, (self.function, self.extra, self.batch)))
            self.batch = []

    def _ready(self, block: bool) -> Iterator[Any]:
        while self.pending and (block or self.pending[0].done() or len(self.pending) > 2 * self.processes):
            yield from self.pending.popleft().result()

    def process(self, element: Any) -> Iterator[Any]:
        if self.pool is None:
            yield from self.function(element, *self.extra)
            return
        self.batch.append(element)
        if len(self.batch) >= self.batch_size:
            self._submit()
        yield from self._ready(block=False)

    def finish_bundle(self) -> Iterator[WindowedValue]:
        if self.pool is None:
            return
        self._submit()
        for output in self._ready(block=True):
            yield WindowedValue(output, MIN_TIMESTAMP, (GlobalWindow(),))

    def teardown(self) -> None:
        pool = getattr(self, "pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None
