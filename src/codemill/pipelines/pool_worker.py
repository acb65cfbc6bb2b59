"""What a local pool worker runs (see pooled.py). Kept free of Beam imports: a spawned worker
imports this module to unpickle its task, and Beam's import costs ~1.5 s and prints warnings."""

from __future__ import annotations

import os
import threading
import time
from typing import Callable, Iterable


def run_batch(args: tuple[Callable[..., Iterable], tuple, list]) -> list:
    function, extra, batch = args
    out: list = []
    for element in batch:
        out.extend(function(element, *extra))
    return out


def exit_with_parent(parent: int) -> None:
    """A process initializer: leave when the process that started this one is gone (killed, say),
    instead of waiting forever for work that will not come."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="codemill-parent-watch").start()
