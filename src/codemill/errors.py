"""The base of errors codemill reports to a person: the message says what happened and what to do,
and `codemill` turns it into that message and the error's exit code (no traceback)."""

from __future__ import annotations


class CodemillError(Exception):
    exit_code = 1


class ClusterError(CodemillError):
    """The cluster engine was lost or cannot run the pipeline."""
