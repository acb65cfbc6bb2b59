"""Helpers shared by the stage configs (typed dataclasses read from YAML mappings)."""

from __future__ import annotations

from dataclasses import fields


def reject_unknown(config_class: type, values: dict, what: str) -> None:
    """A clear error naming the unknown keys and the known ones (typos must not pass silently)."""
    known = {f.name for f in fields(config_class)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown {what} setting(s) {sorted(unknown)}; known: {', '.join(sorted(known))}")
