"""LSH banding: the choice of bands x rows for a threshold, and the band keys of a signature.

Two documents become candidates when all `rows` values of at least one of `bands` bands agree;
for Jaccard s that happens with probability 1 - (1 - s^rows)^bands. The pair (bands, rows) is
chosen, as datasketch and the StarCoder2 scripts do, by minimising the weighted area of false
positives (the curve below the threshold) plus false negatives (one minus the curve above it).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np

from codemill.errors import UserError

_GRID = 2001  # integration points per area; the chosen pair is stable well before this


def _area(bands: int, rows: int, lo: float, hi: float, false_negative: bool) -> float:
    s = np.linspace(lo, hi, _GRID)
    p = 1.0 - (1.0 - s**rows) ** bands
    return float(np.trapezoid(1.0 - p if false_negative else p, s))


@lru_cache(maxsize=32)
def optimal_bands_rows(
    threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5
) -> tuple[int, int]:
    """(bands, rows) with bands * rows <= num_perm minimising fp_weight*FP + fn_weight*FN."""
    if not 0.0 < threshold < 1.0:
        raise UserError(f"LSH threshold must be strictly between 0 and 1, got {threshold}")
    best, best_error = (1, 1), float("inf")
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            error = fp_weight * _area(bands, rows, 0.0, threshold, False) + fn_weight * _area(
                bands, rows, threshold, 1.0, True
            )
            if error < best_error:
                best, best_error = (bands, rows), error
    return best


def band_keys(signature: np.ndarray, bands: int, rows: int) -> list[bytes]:
    """One key per band: the band index and a 128-bit digest of the band's values."""
    values = np.ascontiguousarray(signature[: bands * rows]).reshape(bands, rows)
    return [
        band.to_bytes(2, "big") + hashlib.blake2b(values[band].tobytes(), digest_size=16).digest()
        for band in range(bands)
    ]
