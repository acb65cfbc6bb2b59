"""Bytes -> text: UTF-8 first, then charset detection (charset-normalizer), else undecodable."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Iterator

import enry


@dataclass(frozen=True)
class Decoded:
    text: str | None
    encoding: str | None
    reason: str | None  # why there is no text


def decode(data: bytes, min_coherence: float = 0.5) -> Decoded:
    try:
        return Decoded(data.decode("utf-8"), "utf-8", None)
    except UnicodeDecodeError:
        pass
    if enry.is_binary(data[:8000]):
        return Decoded(None, None, "binary")
    from charset_normalizer import from_bytes

    best = from_bytes(data[: 1 << 20]).best()
    # A guess with much chaos (mojibake) is worse than no text: drop rather than keep garbage.
    if best is None or best.chaos > 1 - min_coherence:
        return Decoded(None, None, "undecodable")
    try:
        return Decoded(data.decode(best.encoding), best.encoding, None)
    except (UnicodeDecodeError, LookupError):
        return Decoded(None, None, "undecodable")


def line_spans(text: str, ranges: Iterable[tuple[int, int]], spill_to_next_line: bool = False) -> list[tuple[int, int]]:
    """Merged (start, end) spans of whole lines covering the given (start, end) character ranges,
    in order. With spill_to_next_line, each span also takes the next non-blank line, for
    patterns whose matches may continue across a line break.

    Lets a slow regex run only on the lines a cheap necessary-condition scan flagged."""
    spans: list[tuple[int, int]] = []
    length = len(text)
    for first, last in ranges:
        if spans and last <= spans[-1][1]:
            continue
        start = text.rfind("\n", 0, first) + 1
        end = text.find("\n", max(last - 1, first))
        end = length if end < 0 else end
        if spill_to_next_line and end < length:
            nxt = end
            while nxt < length and text[nxt].isspace():
                nxt += 1
            following = text.find("\n", nxt)
            end = length if following < 0 else following
        if spans and start <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(end, spans[-1][1]))
        else:
            spans.append((start, end))
    return spans


def ascii_class_table(members: bytes) -> bytes:
    """A `bytes.translate` table marking a class of ASCII characters: members -> b"a", else b" "."""
    return bytes(ord("a") if byte in members else ord(" ") for byte in range(256))


def ascii_bytes(text: str) -> bytes:
    """One byte per character of text: ASCII as itself, anything else as "?" (errors="replace"),
    so offsets into the result are offsets into text.

    Translated by a table of ASCII classes (`bytes.translate`), it lets C-speed bytes searches
    (`in`, a regex with a literal prefix) stand in for a Python regex whose classes are ASCII:
    `re` pays ~25 ns a position for a class-led pattern, the encode and translate ~1 ns a
    character."""
    return text.encode("ascii", "replace")


_RUN_PATTERNS: dict[int, re.Pattern] = {}


def ascii_class_runs(marked: bytes, min_length: int) -> Iterator[re.Match]:
    """Maximal runs of at least min_length b"a" bytes (an `ascii_class_table` class). The
    pattern is a literal prefix (min_length a's), which `re` finds with its fast substring search
    rather than trying the pattern at every position."""
    pattern = _RUN_PATTERNS.get(min_length)
    if pattern is None:
        pattern = _RUN_PATTERNS[min_length] = re.compile(b"a" * min_length + b"a*")
    return pattern.finditer(marked)


def finditer_on_lines(
    pattern: re.Pattern, hint: re.Pattern, text: str, spill_to_next_line: bool = False
) -> Iterator[re.Match]:
    """pattern.finditer over text, restricted to the lines where `hint` matches.

    Exact when every match of `pattern` contains a match of `hint` and lies within the flagged
    lines (one line, or with spill_to_next_line a run of flagged lines plus the next one)."""
    ranges = ((m.start(), m.end()) for m in hint.finditer(text))
    for start, end in line_spans(text, ranges, spill_to_next_line):
        yield from pattern.finditer(text, start, end)
