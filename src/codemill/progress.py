"""Progress bars for long work (tqdm: counts, rate and ETA), one switch for all of them:
CODEMILL_PROGRESS=0 turns every bar off (tests, logs that are not terminals)."""

from __future__ import annotations

import os


def enabled() -> bool:
    return os.environ.get("CODEMILL_PROGRESS", "1") != "0"


def bar(iterable=None, *, disable: bool = False, **kwargs):
    """A tqdm bar (pass-through when progress is off or `disable` is set)."""
    from tqdm import tqdm

    return tqdm(iterable, disable=disable or not enabled(), **kwargs)
