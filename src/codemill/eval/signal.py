"""How good a metric is as a training signal, from its curve over checkpoints.

- E2LM signal quality (arXiv 2506.07731): SQ = mean(max(0, Spearman(step, score)), mean |autocorrelation|
  of the score series over lags 1 .. n/4 - 1 (lag 1 when the curve is shorter)): monotone in
  training and smooth scores both count.
- AI2 signal-to-noise ratio: signal = spread of the final score across models (max - min, relative
  to the mean), noise = standard deviation over a run's last checkpoints (relative to their mean).
  With one run, the spread is taken across the run's checkpoints (what it moved over training).

Scores where higher is better; pass bits-per-byte through `-bpb`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def _ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    for value in np.unique(values):  # ties share their mean rank
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    a, b = _ranks(np.asarray(x, float)), _ranks(np.asarray(y, float))
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def autocorrelation(series: Sequence[float], lag: int) -> float:
    x = np.asarray(series, float) - np.mean(series)
    denominator = float((x * x).sum())
    if denominator == 0 or lag >= len(x):
        return 0.0
    return float((x[:-lag] * x[lag:]).sum() / denominator)


def signal_quality(steps: Sequence[int], scores: Sequence[float]) -> float:
    n = len(scores)
    if n < 2:
        return 0.0
    lags = range(1, max(2, n // 4))
    smooth = float(np.mean([abs(autocorrelation(scores, lag)) for lag in lags]))
    return 0.5 * (max(0.0, spearman(steps, scores)) + smooth)


def signal_to_noise(final_scores: Sequence[float], last_checkpoint_scores: Sequence[float]) -> float:
    finals = np.asarray(final_scores, float)
    last = np.asarray(last_checkpoint_scores, float)
    scale = abs(float(finals.mean())) or 1.0
    signal = float(finals.max() - finals.min()) / scale
    noise = float(last.std()) / (abs(float(last.mean())) or 1.0)
    if noise == 0:  # a flat end: no noise; a flat curve has no signal either
        return 0.0 if signal == 0 else float("inf")
    return signal / noise


def _finite(value: float) -> float | None:
    return value if np.isfinite(value) else None  # JSON has no infinity


def curve_report(steps: Sequence[int], curves: Mapping[str, Sequence[float]], last: int = 3) -> dict[str, dict]:
    """Per metric: the curve, SQ, and SNR with the spread across this run's checkpoints."""
    report = {}
    for name, scores in curves.items():
        report[name] = {
            "steps": list(steps),
            "scores": list(scores),
            "sq": signal_quality(steps, scores),
            "snr": _finite(signal_to_noise(scores, scores[-last:])) if len(scores) >= 2 else None,
        }
    return report


def plot_curves(report: dict[str, dict], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report)
    fig, axes = plt.subplots(len(names), 1, figsize=(6, 2.2 * len(names)), squeeze=False)
    for axis, name in zip(axes[:, 0], names, strict=False):
        entry = report[name]
        axis.plot(entry["steps"], entry["scores"], marker="o")
        snr = entry["snr"]
        axis.set_title(f"{name}: SQ {entry['sq']:.2f}, SNR {snr:.1f}" if snr is not None else name, fontsize=9)
        axis.set_xlabel("step", fontsize=8)
        axis.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
