"""What a local pool worker runs (see pooled.py). Kept free of Beam imports: a spawned worker
imports this module to unpickle its task, and Beam's import costs ~1.5 s and prints warnings."""

from __future__ import annotations

from typing import Callable, Iterable


def run_batch(args: tuple[Callable[..., Iterable], tuple, list]) -> list:
    function, extra, batch = args
    out: list = []
    for element in batch:
        out.extend(function(element, *extra))
    return out
