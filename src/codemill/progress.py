"""Progress bars for long work (tqdm: counts, rate and ETA), one switch for all of them:
CODEMILL_PROGRESS=0 turns every bar off (tests; `codemill -q`). When stderr is not a terminal (a
log file, a CI job), a bar writes a plain line every 30 seconds instead of redrawing itself with
carriage returns, so a log stays readable."""

from __future__ import annotations

import os
import sys


def enabled() -> bool:
    return os.environ.get("CODEMILL_PROGRESS", "1") != "0"


class _Lines:
    """A file for tqdm that turns each redraw into one line of its own."""

    def __init__(self, stream) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        text = text.replace("\r", "").replace("\x1b[A", "").strip()
        if text:
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


def bar(iterable=None, *, disable: bool = False, **kwargs):
    """A tqdm bar (pass-through when progress is off or `disable` is set)."""
    from tqdm import tqdm

    if not sys.stderr.isatty() and "file" not in kwargs:
        kwargs.update(file=_Lines(sys.stderr), mininterval=max(30.0, kwargs.get("mininterval", 0.0)), ascii=True)
        kwargs.setdefault("ncols", 100)
    return tqdm(iterable, disable=disable or not enabled(), **kwargs)
