"""A Beam runner on dask.distributed, owned by codemill: `--runner=DaskRunner --dask_client_address=tcp://HOST:PORT`.

Why our own: Beam 2.77's DaskRunner returns success and silently drops work (only the last leaf
is computed, unknown transforms become no-ops, tagged outputs are merged, finish_bundle outputs are
lost, side inputs run outside the graph, no metrics, no combiner lifting; issue 19 lists them).

How it runs a pipeline. The transform tree is walked from its root before anything runs; a
transform that is not translated below stops the run there, naming it. Composites that have a
better plan than their expansion run whole:

  Create         the values spread over partitions, one each up to 4x `partitions` (parallelism
                 follows the data)
  Reshuffle      every partition's elements dealt round-robin over `partitions` partitions
  CombinePerKey  lifted: each partition folds its elements into one accumulator per key, only the
                 accumulators are shuffled by key, then merged and extracted

Every other composite is expanded to the primitives Impulse, ParDo, GroupByKey and Flatten. A
PCollection is a list of partitions; a partition is one task of a plain dask graph whose result
is a list of elements. A ParDo runs once per input partition as one bundle (setup, start_bundle,
process, finish_bundle; outputs of finish_bundle kept), its tagged outputs kept apart, its side
inputs passed in as graph dependencies, and its counters returned with its outputs. A shuffle
(GroupByKey, Reshuffle, the lifted combine) routes every element by an int (a stable hash of the
key's pickle, or a round-robin count) so that equal keys meet in one output partition, which one
task reduces. A small shuffle is plain tasks, one per pair of input and output partitions; above
`P2P_ABOVE` pairs (or always, with `--dask_shuffle=p2p`) it goes through dask's P2P shuffle, which
moves the pickled elements worker to worker, spills them to disk, and costs O(inputs + outputs)
tasks, so neither a task nor the scheduler holds more than its share.

The driver asks the scheduler for the counters of every ParDo task, which makes every branch run
(a writer at the end of a branch included) while no element comes back to the driver. A worker
that dies mid-job costs only a recomputation of the tasks it held (the stages' writes are
atomic, so a repeated side effect is harmless, and counters travel with results, so they are
not counted twice); a lost scheduler or client is an error that says to rerun (the stages resume).
"""

from __future__ import annotations

import itertools
import operator
import os
import time
import typing
import uuid
from collections import defaultdict
from concurrent.futures import CancelledError
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Literal

from apache_beam.metrics.execution import MetricKey, MetricResult
from apache_beam.metrics.metric import MetricResults
from apache_beam.runners.runner import PipelineResult, PipelineRunner, PipelineState

from codemill.errors import ClusterError, UserError
from codemill.pipelines import dask_tasks

DEFAULT_PARTITIONS_PER_THREAD = 2


class DaskRunnerError(ClusterError):
    """The cluster was lost or cannot run the pipeline (names the address or the transform)."""


class UnsupportedTransformError(DaskRunnerError):
    """A transform this runner has no translation for (named with its label)."""


# ------------------------------------------------------------------------------- translation
ShuffleMode = Literal["auto", "tasks", "p2p"]
P2P_ABOVE = 4096  # (input x output) partition pairs above which a shuffle goes through dask's P2P shuffle


@dataclass
class _Graph:
    partitions: int
    shuffle_mode: ShuffleMode = "auto"  # p2p above P2P_ABOVE partition pairs with auto
    tasks: dict = field(default_factory=dict)
    pcollections: dict = field(default_factory=dict)  # PCollection -> [task key of each partition]
    metric_keys: list = field(default_factory=list)
    token: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    counter: itertools.count = field(default_factory=itertools.count)

    def name(self, label: str) -> str:
        return f"{label}-{next(self.counter)}-{self.token}"

    def add(self, name: str, index: int, task: tuple) -> tuple:
        key = (name, index)
        self.tasks[key] = task
        return key

    def constant(self, label: str, parts: list[list]) -> list[tuple]:
        name = self.name(label)
        return [self.add(name, i, (partial(dask_tasks.values, part),)) for i, part in enumerate(parts)]

    def shuffle(self, label: str, inputs: list[tuple], route: Callable, reducer: Callable) -> list[tuple]:
        """Elements of every input partition routed by `route(i)` (an int per element: equal ones
        meet); each output partition's elements reduced by `reducer`. Small shuffles are plain
        tasks, one per (input, output) pair; larger ones (or all, with shuffle="p2p") go through
        dask's P2P shuffle: disk-backed, O(inputs + outputs) tasks."""
        tasks_wide = max(self.partitions, min(len(inputs), 4 * self.partitions))
        if self.shuffle_mode == "p2p" or (self.shuffle_mode == "auto" and len(inputs) * tasks_wide > P2P_ABOVE):
            return self._p2p(label, inputs, route, reducer, max(self.partitions, len(inputs)))
        n = tasks_wide
        name = self.name(label)
        split = [
            self.add(f"{name}-split", i, (partial(dask_tasks.split, route(i)), key, n)) for i, key in enumerate(inputs)
        ]
        pieces = [
            [self.add(f"{name}-piece-{j}", i, (operator.getitem, s, j)) for i, s in enumerate(split)] for j in range(n)
        ]
        return [self.add(name, j, (reducer, *pieces[j])) for j in range(n)]

    def _p2p(self, label: str, inputs: list[tuple], route: Callable, reducer: Callable, n: int) -> list[tuple]:
        import dask
        import dask.dataframe as dd
        import pandas as pd
        from dask.delayed import Delayed

        name = self.name(label)
        frames = []
        for i, key in enumerate(inputs):
            frame_key = (f"{name}-frame", i)
            frames.append(Delayed(frame_key, {frame_key: (partial(dask_tasks.frame, route(i)), key)}))
        meta = pd.DataFrame({"route": pd.Series(dtype="int64"), "payload": pd.Series(dtype=object)})
        with dask.config.set({"dataframe.convert-string": False}):  # payloads are pickles, not text
            shuffled = dd.from_delayed(frames, meta=meta, verify_meta=False).shuffle(
                on="route", npartitions=n, shuffle_method="p2p"
            )
            parts = shuffled.to_delayed()
            for part in parts:
                self.tasks.update(dict(part.__dask_graph__()))
        return [self.add(name, j, (partial(dask_tasks.unframe, reducer), part.key)) for j, part in enumerate(parts)]

    # ---------------------------------------------------------------- walking the tree
    def translate(self, node) -> None:
        import apache_beam as beam
        from apache_beam.transforms import core

        transform = node.transform
        if transform is None or (node.parts and not self._whole(node)):
            for part in node.parts:
                self.translate(part)
            return
        if self._whole(node):
            return self._composite(node)
        if isinstance(transform, core.Impulse):
            self._outputs(node, self.constant("impulse", [[b""]]))
        elif isinstance(transform, beam.ParDo):
            self._pardo(node)
        elif isinstance(transform, beam.Flatten):
            parts = [key for pcoll in node.inputs for key in self.pcollections[pcoll]]
            self._outputs(node, parts or self.constant("empty", [[]]))
        else:
            raise UnsupportedTransformError(
                f"the dask runner has no translation for {node.full_label!r} ({type(transform).__name__}); "
                "run this pipeline with the default local runner, or add a translation in pipelines/dask_runner.py"
            )

    @staticmethod
    def _whole(node) -> bool:
        import apache_beam as beam

        return isinstance(node.transform, (beam.Create, beam.Reshuffle, beam.CombinePerKey, beam.GroupByKey))

    def _input(self, node) -> list[tuple]:
        (pcoll,) = [p for p in node.inputs]  # one main input
        return self.pcollections[pcoll]

    def _outputs(self, node, keys: list[tuple]) -> None:
        (pcoll,) = node.outputs.values()
        self.pcollections[pcoll] = keys

    def _composite(self, node) -> None:
        import apache_beam as beam
        from apache_beam.internal import pickler

        transform = node.transform
        if isinstance(transform, beam.Create):
            values = list(transform.values)
            n = max(1, min(len(values), 4 * self.partitions))  # an element a partition, up to 4x the default
            self._outputs(node, self.constant(node.full_label, [values[i::n] for i in range(n)]))
        elif isinstance(transform, beam.GroupByKey):
            self._outputs(
                node,
                self.shuffle(node.full_label, self._input(node), lambda i: dask_tasks.route_by_key, dask_tasks.group),
            )
        elif isinstance(transform, beam.Reshuffle):
            self._outputs(
                node,
                self.shuffle(
                    node.full_label,
                    self._input(node),
                    lambda i: partial(dask_tasks.route_round_robin, i),
                    dask_tasks.concat,
                ),
            )
        else:  # CombinePerKey
            if transform.args or transform.kwargs:
                raise UnsupportedTransformError(f"{node.full_label!r}: CombinePerKey with extra arguments")
            fn = beam.CombineFn.maybe_from_callable(transform.fn)
            payload = pickler.dumps(fn)
            self._outputs(
                node,
                self.shuffle(
                    node.full_label,
                    self._input(node),
                    lambda i: partial(dask_tasks.route_combined, payload),
                    partial(dask_tasks.combine_merge, payload),
                ),
            )

    def _pardo(self, node) -> None:
        from apache_beam.internal import pickler
        from apache_beam.runners.common import DoFnSignature
        from apache_beam.transforms.userstate import is_stateful_dofn
        from apache_beam.transforms.window import GlobalWindows

        transform = node.transform
        main = node.inputs[0]
        # Bundles here are partitions in the global window: anything that needs more is refused,
        # never run with other semantics.
        windowfn = getattr(getattr(transform, "windowing", None), "windowfn", None)
        why = (
            "a splittable DoFn (reading a source)"
            if DoFnSignature(transform.fn).is_splittable_dofn()
            else "a stateful DoFn"
            if is_stateful_dofn(transform.fn)
            else "windowing other than the global window"
            if not isinstance(main.windowing.windowfn, GlobalWindows)
            or (windowfn is not None and not isinstance(windowfn, GlobalWindows))
            else None
        )
        if why:
            raise UnsupportedTransformError(
                f"the dask runner cannot run {node.full_label!r}: {why}; run this pipeline with the default "
                "local runner"
            )
        side_inputs = list(node.side_inputs)
        spec = dask_tasks.ParDoSpec(
            label=node.full_label,
            fn=pickler.dumps(transform.fn),
            args=tuple(transform.args or ()),
            kwargs=dict(transform.kwargs or {}),
            sides=tuple((type(s), s._view_options()) for s in side_inputs),
            windowing=main.windowing,
            tags=tuple(node.outputs),
            env=tuple((name, os.environ[name]) for name in dask_tasks.SHIPPED_ENV if name in os.environ),
        )
        side_keys = [list(self.pcollections[s.pvalue]) for s in side_inputs]
        name = self.name(node.full_label)
        outputs: dict = {tag: [] for tag in node.outputs}
        for i, key in enumerate(self.pcollections[main]):
            task = self.add(name, i, (partial(dask_tasks.run_pardo, spec), key, *side_keys))
            for tag in node.outputs:
                outputs[tag].append(self.add(f"{name}-out-{tag}", i, (operator.getitem, task, tag)))
            self.metric_keys.append(self.add(f"{name}-metrics", i, (operator.getitem, task, "__metrics__")))
        for tag, pcoll in node.outputs.items():
            self.pcollections[pcoll] = outputs[tag]


# ------------------------------------------------------------------------------- the runner
class _Metrics(MetricResults):
    def __init__(self, counters: dict) -> None:
        self.counters = counters

    def query(self, filter=None) -> dict:
        counters = [
            MetricResult(key, value, value) for key, value in self.counters.items() if self.matches(filter, key)
        ]
        return {
            self.COUNTERS: counters,
            self.DISTRIBUTIONS: [],
            self.GAUGES: [],
            self.STRINGSETS: [],
            self.BOUNDED_TRIES: [],
        }


class DaskResult(PipelineResult):
    def __init__(self, counters: dict) -> None:
        super().__init__(PipelineState.DONE)
        self._metrics = _Metrics(counters)

    def wait_until_finish(self, duration=None):
        return self.state

    def metrics(self) -> MetricResults:
        return self._metrics


class DaskRunner(PipelineRunner):
    """Runs a Beam pipeline on a dask.distributed cluster (the scheduler at `address`)."""

    def __init__(
        self,
        address: str | None = None,
        partitions: int | None = None,
        timeout: float = 30,
        scheduler_file: str | None = None,
        shuffle: ShuffleMode = "auto",
    ) -> None:
        if shuffle not in ("auto", "tasks", "p2p"):
            raise DaskRunnerError(f"--dask_shuffle must be auto, tasks or p2p, not {shuffle!r}")
        self.address, self.partitions, self.timeout = address, partitions, timeout
        self.scheduler_file, self.shuffle = scheduler_file, shuffle

    def run_pipeline(self, pipeline, options) -> DaskResult:
        from distributed import Client

        try:
            client = Client(
                self.address, timeout=self.timeout, set_as_default=False, scheduler_file=self.scheduler_file
            )
            scheduler = client.scheduler
            assert scheduler is not None  # a connected client has its scheduler's address
            self.address = self.address or scheduler.address
        except (OSError, TimeoutError, ValueError) as err:
            where = self.address or f"the address in {self.scheduler_file}"
            raise DaskRunnerError(
                f"cannot reach the dask scheduler at {where}: {err}; start it "
                "(`dask scheduler`) or give another --dask_client_address"
            ) from None
        try:
            threads = sum(client.nthreads().values()) or 1
            graph = _Graph(self.partitions or DEFAULT_PARTITIONS_PER_THREAD * threads, self.shuffle)
            graph.translate(pipeline.transforms_stack[0])  # everything translated before anything runs
            started = time.monotonic()
            try:
                results = client.get(graph.tasks, graph.metric_keys, sync=True)
            except (OSError, TimeoutError, CancelledError) as err:  # CancelledError: the scheduler went away
                raise DaskRunnerError(
                    f"lost the dask cluster at {self.address} during the job ({type(err).__name__}: {err}); "
                    "nothing unfinished is marked finished: rerun the same command to resume"
                ) from err
            _report(len(graph.tasks), graph.partitions, threads, time.monotonic() - started)
        finally:
            client.close()
        counters: dict[MetricKey, int] = defaultdict(int)
        for updates in results:
            for key, value in updates.items():
                counters[key] += value
        return DaskResult(dict(counters))


REPORT_ENV = "CODEMILL_DASK_REPORT"  # a JSON Lines file: one line per pipeline run (benchmarks read it)


def _report(tasks: int, partitions: int, threads: int, seconds: float) -> None:
    import json
    import logging

    line = {"tasks": tasks, "partitions": partitions, "threads": threads, "seconds": round(seconds, 2)}
    logging.getLogger(__name__).info("dask runner: %s", line)
    if os.environ.get(REPORT_ENV):
        with open(os.environ[REPORT_ENV], "a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")


DASK_FLAGS = ("--dask_client_address", "--dask_scheduler_file", "--dask_partitions", "--dask_shuffle")


def runner_from_args(args: list[str]) -> tuple[DaskRunner | None, list[str]]:
    """(our DaskRunner, the remaining args) when args name `--runner=DaskRunner`, else (None, args).
    The short name resolves to this runner, never to Beam's own."""
    values: dict[str, str] = {}
    rest: list[str] = []
    items = iter(args)
    for arg in items:
        name, _, value = arg.partition("=")
        if name in DASK_FLAGS + ("--runner",):
            values[name] = value if _ else next(items, "")
        else:
            rest.append(arg)
    runner = values.get("--runner")
    if runner is None or runner.rsplit(".", 1)[-1] != "DaskRunner":
        return None, list(args)
    partitions = values.get("--dask_partitions")
    shuffle = values.get("--dask_shuffle") or "auto"
    if shuffle not in typing.get_args(ShuffleMode):
        raise UserError(f"--dask_shuffle must be one of {', '.join(typing.get_args(ShuffleMode))}, got {shuffle!r}")
    return DaskRunner(
        values.get("--dask_client_address") or None,
        int(partitions) if partitions else None,
        scheduler_file=values.get("--dask_scheduler_file") or None,
        shuffle=typing.cast(ShuffleMode, shuffle),
    ), rest
