"""The base of errors codemill reports to a person: the message says what happened and what to do,
and `codemill` turns it into that message and the error's exit code (no traceback).

Exit codes mean the same in every command: 0 done, 1 the work failed (a lost cluster, storage,
a run that aborted itself: rerun or fix the environment), 2 the input cannot be used (arguments,
config, data: fix them and run again).
"""

from __future__ import annotations


class CodemillError(Exception):
    exit_code = 1


class UserError(CodemillError, ValueError):
    """Input that cannot be used: arguments, a config, data. A ValueError too, for callers that
    catch those."""

    exit_code = 2


class ClusterError(CodemillError):
    """The cluster engine was lost or cannot run the pipeline."""


class MissingInputError(UserError, FileNotFoundError):
    """An input path that is not there, or not the finished output a command needs (names it)."""
