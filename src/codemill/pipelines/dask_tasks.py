"""The tasks of the DaskRunner's graphs (pipelines/dask_runner.py): a ParDo run as one bundle over
a partition, with its DoFn kept set up between bundles on a worker, and the halves of a shuffle
(route, split or frame, group). Module-level functions, so a worker imports them by name."""

from __future__ import annotations

import functools
import hashlib
import itertools
import os
import pickle
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

from apache_beam.metrics.execution import MetricsContainer

# Per worker process: DoFns set up and free for the next bundle, by pickled DoFn, least recently
# used first; beyond _KEPT_FNS kinds the oldest are torn down (a worker serves job after job).
_FNS: OrderedDict[bytes, list] = OrderedDict()
_FNS_LOCK = threading.Lock()
_KEPT_FNS = 64


def _stable_hash(key: Any) -> int:
    """The same 63-bit hash for equal keys in every process (Python's str hash is salted per process)."""
    digest = hashlib.blake2b(pickle.dumps(key, protocol=4), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def _global(value):
    from apache_beam.transforms.window import GlobalWindow
    from apache_beam.utils.timestamp import MIN_TIMESTAMP
    from apache_beam.utils.windowed_value import WindowedValue

    return WindowedValue(value, MIN_TIMESTAMP, (GlobalWindow(),))


@functools.lru_cache(maxsize=1)
def _collector():
    """A DoFnRunner receiver that keeps the plain values (a subclass of Beam's compiled Receiver,
    made on first use so that importing this module does not import Beam's runner internals)."""
    from apache_beam.runners.common import Receiver

    class Collect(Receiver):
        def __init__(self) -> None:
            self.values: list = []

        def receive(self, windowed_value) -> None:
            self.values.append(windowed_value.value)

    return Collect


@dataclass(frozen=True)
class ParDoSpec:
    label: str
    fn: bytes  # the DoFn, pickled with Beam's pickler
    args: tuple
    kwargs: dict
    sides: tuple  # (view class, view options) per side input, in the order of the placeholders
    windowing: Any
    tags: tuple  # output tags, None for the main output
    env: tuple = ()  # codemill's settings from the driver's environment, for workers started without them


# What a worker needs from the driver's environment (workers are started on their own, by `dask worker`).
SHIPPED_ENV = ("CODEMILL_STORAGE_OPTIONS", "CODEMILL_PROGRESS")


def _borrow_fn(spec: ParDoSpec):
    """A DoFn already set up in this process if one is free (Beam reuses DoFn instances across
    bundles, never across concurrent ones), else a fresh one."""
    from apache_beam.internal import pickler

    with _FNS_LOCK:
        free = _FNS.get(spec.fn)
        if free:
            _FNS.move_to_end(spec.fn)
            return free.pop(), False
    return pickler.loads(spec.fn), True


def _give_back(spec: ParDoSpec, fn) -> None:
    with _FNS_LOCK:
        _FNS.setdefault(spec.fn, []).append(fn)
        _FNS.move_to_end(spec.fn)
        evicted = [_FNS.popitem(last=False)[1] for _ in range(max(0, len(_FNS) - _KEPT_FNS))]
    for fns in evicted:
        for old in fns:
            try:
                old.teardown()
            except Exception:  # best effort, as Beam's own teardown  # noqa: BLE001
                pass


def _metric_updates(container: MetricsContainer) -> dict:
    cumulative = container.get_cumulative()
    return {key: value for key, value in cumulative.counters.items() if value}


def run_pardo(spec: ParDoSpec, elements: list, *sides: list) -> dict:
    """One bundle of a ParDo: {tag: outputs} plus "__metrics__": {MetricKey: count}."""
    from apache_beam.runners.common import DoFnRunner
    from apache_beam.runners.worker import statesampler
    from apache_beam.transforms.sideinputs import SideInputMap
    from apache_beam.utils.counters import CounterFactory

    for name, value in spec.env:
        if os.environ.get(name) != value:
            os.environ[name] = value
    container = MetricsContainer(spec.label)
    sampler = statesampler.StateSampler("", CounterFactory())
    statesampler.set_current_tracker(sampler)
    collect = _collector()
    receivers = {tag: collect() for tag in spec.tags}
    side_maps = [
        SideInputMap(view, options, [_global(v) for part in parts for v in part])
        for (view, options), parts in zip(spec.sides, sides, strict=False)
    ]
    fn, fresh = _borrow_fn(spec)
    try:
        with sampler.scoped_state(spec.label, "process", metrics_container=container):
            runner = DoFnRunner(
                fn,
                list(spec.args),
                dict(spec.kwargs),
                side_maps,
                spec.windowing,
                tagged_receivers=receivers,
                step_name=spec.label,
            )
            if fresh:
                runner.setup()
            runner.start()
            for element in elements:
                runner.process(_global(element))
            runner.finish()
    finally:
        statesampler.set_current_tracker(None)
    _give_back(spec, fn)  # set up, ready for the next bundle here
    out: dict = {tag: receiver.values for tag, receiver in receivers.items()}
    out["__metrics__"] = _metric_updates(container)
    return out


# A shuffle routes each element by an int: equal routes meet in one output partition.
def route_by_key(elements: list) -> list[tuple[int, Any]]:
    return [(_stable_hash(element[0]), element) for element in elements]


def route_round_robin(offset: int, elements: list) -> list[tuple[int, Any]]:
    return [(offset * 1_000_003 + position, element) for position, element in enumerate(elements)]


def route_combined(fn_payload: bytes, elements: list) -> list[tuple[int, Any]]:
    """Lifted combine, first half: one accumulator per key of this partition."""
    from apache_beam.internal import pickler

    fn = pickler.loads(fn_payload)
    fn.setup()
    accumulators: dict = {}
    for key, value in elements:
        accumulators[key] = fn.add_input(accumulators[key] if key in accumulators else fn.create_accumulator(), value)
    fn.teardown()
    return route_by_key([(key, fn.compact(acc)) for key, acc in accumulators.items()])


def split(route: Callable, elements: list, buckets: int) -> list[list]:
    """The task-based shuffle's first half: the partition's elements in `buckets` lists."""
    out: list[list] = [[] for _ in range(buckets)]
    for hashed, element in route(elements):
        out[hashed % buckets].append(element)
    return out


def frame(route: Callable, elements: list):
    """The P2P shuffle's input: a frame of (route, pickled element) rows."""
    import pandas as pd

    rows = route(elements)
    return pd.DataFrame(
        {
            "route": pd.Series([r for r, _ in rows], dtype="int64"),
            "payload": pd.Series([pickle.dumps(e, protocol=5) for _, e in rows], dtype=object),
        }
    )


def unframe(reducer: Callable, frame) -> list:
    return reducer([pickle.loads(payload) for payload in frame["payload"]])


def group(*buckets: list) -> list:
    groups: dict = {}
    for bucket in buckets:
        for key, value in bucket:
            groups.setdefault(key, []).append(value)
    return list(groups.items())


def concat(*parts: list) -> list:
    return list(itertools.chain.from_iterable(parts))


def combine_merge(fn_payload: bytes, *buckets: list) -> list:
    """Second half: merge each key's accumulators from every partition, then extract."""
    from apache_beam.internal import pickler

    fn = pickler.loads(fn_payload)
    fn.setup()
    merged = [(key, fn.extract_output(fn.merge_accumulators(accs))) for key, accs in group(*buckets)]
    fn.teardown()
    return merged


def values(*parts: list) -> list:
    return [value for part in parts for value in part]
