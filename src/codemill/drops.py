"""Why a record was dropped, in one grammar for every stage: `<kind>` or `<kind>:<detail>`.

The kind is one word (snake_case, no colon or space). For the kinds in LABELLED the detail is one
of a few labels (which filter fired, which path rule, which binary test), counted in the stats
with the kind (`filter:long_lines`); for every other kind the detail is free text for a person
(an error, the survivor a duplicate was dropped for, a link target) and the stats count the kind.
"""

from __future__ import annotations

LABELLED = frozenset({"filter", "unsafe_path", "binary"})


def drop_reason(kind: str, detail: object = None) -> str:
    if not kind or ":" in kind or " " in kind:
        raise ValueError(f"a drop kind is one word, got {kind!r}")
    return kind if detail is None or detail == "" else f"{kind}:{detail}"


def reason_kind(reason: str) -> str:
    return reason.split(":", 1)[0]


def stats_key(reason: str) -> str:
    """What the stats count a drop under: the kind, with its label for the LABELLED kinds."""
    kind, _, detail = reason.partition(":")
    return f"{kind}:{detail.split(':', 1)[0]}" if kind in LABELLED and detail else kind
