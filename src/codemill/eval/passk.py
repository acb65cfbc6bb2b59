"""The unbiased pass@k estimator (Chen et al. 2021): per problem with n samples of which c pass,
pass@k = 1 - C(n - c, k) / C(n, k), averaged over problems; reported only when every problem has
at least k samples (a smaller n cannot estimate it)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from codemill.errors import UserError


def pass_at_k(n: int, c: int, k: int) -> float:
    if n < k:
        raise UserError(f"pass@{k} needs at least {k} samples per problem, got {n}")
    if n - c < k:
        return 1.0
    # 1 - prod_{i = n - c + 1}^{n} (1 - k / i): the ratio of binomials without overflowing
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def mean_pass_at_k(samples: Sequence[int], correct: Sequence[int], ks: Sequence[int]) -> dict[str, float]:
    """{"pass@k": mean} for each k that every problem's sample count supports."""
    out = {}
    for k in ks:
        if samples and min(samples) >= k:
            out[f"pass@{k}"] = float(np.mean([pass_at_k(n, c, k) for n, c in zip(samples, correct, strict=False)]))
    return out
