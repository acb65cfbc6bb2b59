"""Bytes -> text: UTF-8 first, then charset detection (charset-normalizer), else undecodable."""

from __future__ import annotations

from dataclasses import dataclass

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
