"""Tests that need a CUDA device, with tolerances fit for what runs there: bf16 autocast (8 bits
of mantissa: about 1e-2 relative on a loss, a few 1e-2 on logits) and TF32 matmuls (10 bits:
about 1e-3). The rest of the suite runs on the CPU on every machine (CODEMILL_DEVICE, set to
`cpu` by conftest unless given), where its comparisons are exact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from codemill.training.loop import TrainConfig, load_model, train
from codemill.training.model import HybridLM, masked_cross_entropy, named_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: these tests need a GPU")

BF16_LOSS_RTOL = 2e-2  # relative error of a mean cross-entropy computed under bf16 autocast
BF16_LOGITS_RTOL = 5e-2  # norm of the logits' error over the logits' norm
TF32_RTOL = 5e-3


def _relative(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    return float((got - want).norm() / want.norm().clamp(min=1e-30))


def _twins(vocab: int = 512) -> tuple[HybridLM, HybridLM, torch.Tensor]:
    config = named_config("tiny", vocab_size=vocab)
    cpu = HybridLM(config)
    cpu.reset_parameters(seed=0)
    gpu = HybridLM(config).cuda()
    gpu.load_state_dict(cpu.state_dict())
    tokens = torch.randint(0, vocab, (2, 257), generator=torch.Generator().manual_seed(0))
    return cpu, gpu, tokens


def test_bf16_on_cuda_matches_fp32_on_cpu() -> None:
    cpu, gpu, tokens = _twins()
    want_logits = cpu(tokens[:, :-1])
    want = masked_cross_entropy(want_logits, tokens[:, 1:])
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = gpu(tokens[:, :-1].cuda())
        loss = masked_cross_entropy(logits, tokens[:, 1:].cuda())
    assert logits.dtype == torch.float32  # the head's output leaves autocast in float32
    assert abs(float(loss) - float(want)) / float(want) <= BF16_LOSS_RTOL
    assert _relative(logits, want_logits) <= BF16_LOGITS_RTOL
    want.backward()
    loss.backward()
    errors = [
        _relative(b.grad, a.grad)
        for a, b in zip(cpu.parameters(), gpu.parameters(), strict=True)
        if a.grad is not None and a.grad.norm() > 0
    ]
    assert sorted(errors)[len(errors) // 2] <= 0.05 and max(errors) <= 0.25, errors


def test_tf32_on_cuda_matches_fp32_on_cpu() -> None:
    cpu, gpu, tokens = _twins()
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        logits = gpu(tokens[:, :-1].cuda())
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved
    assert _relative(logits, cpu(tokens[:, :-1])) <= TF32_RTOL


def test_a_cuda_run_trains_in_bf16_by_default_and_keeps_float32_weights(tmp_path: Path, monkeypatch) -> None:
    from test_training import _config
    from token_data import make_token_dataset

    monkeypatch.setenv("CODEMILL_DEVICE", "cuda")
    data = make_token_dataset(tmp_path / "tokens")

    def config(out: str, precision: str) -> TrainConfig:
        return _config(data, tmp_path / out, steps=12, checkpoint_every=12, precision=precision)

    bf16 = train(config("auto", "auto"))
    rows = [json.loads(line) for line in (tmp_path / "auto" / "metrics.jsonl").read_text().splitlines()]
    assert {row["precision"] for row in rows} == {"bf16"}
    model = load_model(tmp_path / "auto")
    assert all(p.dtype == torch.float32 for p in model.parameters())
    monkeypatch.setenv("CODEMILL_DEVICE", "cpu")
    fp32 = train(config("cpu", "fp32"))
    # The same batches and weights: bf16 on the GPU follows fp32 on the CPU step by step.
    for step, want in fp32.losses.items():
        assert abs(bf16.losses[step] - want) / want <= 3 * BF16_LOSS_RTOL, (step, bf16.losses[step], want)
    assert bf16.losses[12] < bf16.losses[1]
