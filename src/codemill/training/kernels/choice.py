"""Which path each kernel takes: a CUDA fast path or the pure-torch reference, said once, with why.

Each fast path is chosen once per process, the first time a CUDA tensor needs it, and the choice
is logged once with its reason (`chosen`), so a broken optional install is visible instead of a
silent, slower run. A shape a kernel cannot take falls back to the reference deliberately, logged
once per reason (`fell_back`).
"""

from __future__ import annotations

import logging

log = logging.getLogger("codemill.kernels")
_SAID: set[tuple[str, str]] = set()


def chosen(kernel: str, fast, reason: str):
    """Log which path `kernel` takes in this process, and why; returns `fast` (None: the reference)."""
    if fast is None:
        log.warning("%s: the pure-torch reference on CUDA, because %s", kernel, reason)
    else:
        log.info("%s: %s", kernel, reason)
    return fast


def fell_back(kernel: str, reason: str) -> None:
    """A call that the fast kernel cannot take runs the reference; said once per reason."""
    if (kernel, reason) not in _SAID:
        _SAID.add((kernel, reason))
        log.warning("%s: the pure-torch reference for %s", kernel, reason)
