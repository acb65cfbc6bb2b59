"""Likelihood metrics and signal quality."""

from __future__ import annotations

import math
import random

import pytest
import torch

from codemill.eval.likelihood import Pair, answer_logprob, likelihood_metrics, logits_fn
from codemill.eval.signal import autocorrelation, signal_quality, signal_to_noise, spearman
from codemill.training.model import HybridLM, named_config


def test_spearman_and_autocorrelation_match_their_definitions() -> None:
    rng = random.Random(1)
    for _ in range(20):  # without ties: 1 - 6 sum d^2 / (n (n^2 - 1))
        x = rng.sample(range(1000), 15)
        y = rng.sample(range(1000), 15)
        rank_x = {v: i for i, v in enumerate(sorted(x))}
        rank_y = {v: i for i, v in enumerate(sorted(y))}
        d2 = sum((rank_x[a] - rank_y[b]) ** 2 for a, b in zip(x, y, strict=True))
        assert spearman(x, y) == pytest.approx(1 - 6 * d2 / (15 * (15**2 - 1)), abs=1e-12)
    # With ties (mean ranks): ranks of y = [1.5, 1.5, 3, 4] against x = [1, 2, 3, 4] -> Pearson of ranks.
    assert spearman([1, 2, 3, 4], [5, 5, 6, 7]) == pytest.approx(0.9486832980505138)
    assert spearman([1, 2, 3], [2, 2, 2]) == 0.0
    series = [math.sin(i / 3) for i in range(40)]
    assert autocorrelation(series, 1) > 0.9 and abs(autocorrelation(series, 9)) < autocorrelation(series, 1)


def test_signal_quality_prefers_a_smooth_rising_metric_to_noise() -> None:
    steps = list(range(0, 200, 10))
    rising = [1 - math.exp(-s / 60) for s in steps]
    rng = random.Random(0)
    noise = [rng.random() for _ in steps]
    assert signal_quality(steps, rising) > 0.7 and signal_quality(steps, rising) > signal_quality(steps, noise) + 0.4
    assert signal_quality(steps, noise) < 0.5
    assert signal_quality(steps, [-v for v in rising]) < signal_quality(steps, rising)  # falling: no Spearman credit
    assert signal_to_noise([0.2, 0.5, 0.8], [0.79, 0.8, 0.81]) > signal_to_noise([0.2, 0.5, 0.8], [0.6, 0.8, 1.0])


def test_answer_likelihood_is_the_model_s_own_log_probability() -> None:
    torch.manual_seed(0)
    model = HybridLM(named_config("tiny", vocab_size=300)).eval()
    encode = lambda text: [b for b in text.encode()]  # noqa: E731  bytes as tokens
    pair = Pair("def add(a, b):\n", "    return a + b\n")
    logprob, size = answer_logprob(logits_fn(model), encode, pair, max_tokens=512)
    ids = torch.tensor([encode(pair.prompt + pair.answer)])
    answer_len = len(encode(pair.answer))
    with torch.no_grad():
        logits = model(ids[:, :-1])
        expected = -torch.nn.functional.cross_entropy(logits[0, -answer_len:], ids[0, -answer_len:], reduction="sum")
    assert logprob == pytest.approx(float(expected), rel=1e-5) and size == len(pair.answer.encode())
    metrics = likelihood_metrics(logits_fn(model), encode, [pair, Pair("", "x = 1\n")])
    assert metrics["bpb"] > 0 and metrics["answers"] == 2
    scored = [answer_logprob(logits_fn(model), encode, p, 512) for p in (pair, Pair("", "x = 1\n"))]
    assert scored[1][1] == 5  # without a prompt the first token has no context: 5 of the 6 bytes are scored
    assert metrics["bpb"] == pytest.approx(-sum(lp for lp, _ in scored) / math.log(2) / sum(n for _, n in scored))
