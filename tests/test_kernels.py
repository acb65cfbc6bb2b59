"""Kernel parity: the chunked SSD scan and the causal conv against their sequential definitions in
float64, over many shapes, chunk sizes and initial states; CUDA twins against the references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from codemill.training.kernels import (
    attention,
    causal_conv1d_ref,
    causal_conv1d_step_ref,
    ssd_chunked_ref,
    ssd_sequential_ref,
)


def _ssd_inputs(batch, length, heads, head_dim, groups, state, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, heads, head_dim, generator=g, dtype=dtype)
    dt = F.softplus(torch.randn(batch, length, heads, generator=g, dtype=dtype) - 1)
    A = -torch.exp(torch.rand(heads, generator=g, dtype=dtype) * 2)
    B = torch.randn(batch, length, groups, state, generator=g, dtype=dtype)
    C = torch.randn(batch, length, groups, state, generator=g, dtype=dtype)
    D = torch.randn(heads, generator=g, dtype=dtype)
    h0 = torch.randn(batch, heads, head_dim, state, generator=g, dtype=dtype)
    return x, dt, A, B, C, D, h0


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 2),
    length=st.integers(1, 40),
    groups=st.sampled_from([1, 2]),
    per_group=st.integers(1, 3),
    head_dim=st.integers(1, 5),
    state=st.integers(1, 6),
    chunk=st.sampled_from([1, 3, 8, 16, 64]),
    with_state=st.booleans(),
    with_d=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_chunked_scan_equals_sequential_recurrence(
    batch, length, groups, per_group, head_dim, state, chunk, with_state, with_d, seed
) -> None:
    x, dt, A, B, C, D, h0 = _ssd_inputs(batch, length, groups * per_group, head_dim, groups, state, seed)
    D = D if with_d else None
    h0 = h0 if with_state else None
    y_ref, final_ref = ssd_sequential_ref(x, dt, A, B, C, D, h0)
    y, final = ssd_chunked_ref(x, dt, A, B, C, chunk, D, h0)
    torch.testing.assert_close(y, y_ref, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(final, final_ref, rtol=1e-9, atol=1e-9)


def test_chunked_scan_float32_and_state_handoff() -> None:
    """Float32 on a realistic shape stays close to float64, and scanning a sequence in two halves
    with the state handed over equals scanning it whole (what prefill-then-decode relies on)."""
    x, dt, A, B, C, D, _ = _ssd_inputs(2, 300, 8, 16, 1, 32, seed=3)
    y64, final64 = ssd_chunked_ref(x, dt, A, B, C, 64, D)
    y32, final32 = ssd_chunked_ref(*(t.float() for t in (x, dt, A, B, C)), 64, D.float())
    assert y32.dtype == torch.float32
    torch.testing.assert_close(y32.double(), y64, rtol=1e-4, atol=1e-4)
    first, state = ssd_chunked_ref(x[:, :130], dt[:, :130], A, B[:, :130], C[:, :130], 64, D)
    second, final = ssd_chunked_ref(x[:, 130:], dt[:, 130:], A, B[:, 130:], C[:, 130:], 64, D, state)
    torch.testing.assert_close(torch.cat([first, second], dim=1), y64)
    torch.testing.assert_close(final, final64)


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 2),
    channels=st.integers(1, 6),
    length=st.integers(1, 20),
    width=st.integers(2, 5),
    with_state=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_causal_conv_equals_its_definition_and_its_step(batch, channels, length, width, with_state, seed) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, length, generator=g, dtype=torch.float64)
    w = torch.randn(channels, width, generator=g, dtype=torch.float64)
    b = torch.randn(channels, generator=g, dtype=torch.float64)
    s0 = torch.randn(batch, channels, width - 1, generator=g, dtype=torch.float64) if with_state else None
    y, final = causal_conv1d_ref(x, w, b, s0)
    history = torch.cat([s0 if s0 is not None else torch.zeros(batch, channels, width - 1, dtype=torch.float64), x], -1)
    expected = torch.stack([F.silu((history[..., t : t + width] * w).sum(-1) + b) for t in range(length)], dim=-1)
    torch.testing.assert_close(y, expected)
    torch.testing.assert_close(final, history[..., -(width - 1) :])
    state = history[..., : width - 1]
    for t in range(length):
        out, state = causal_conv1d_step_ref(state, x[..., t], w, b)
        torch.testing.assert_close(out, y[..., t])
    torch.testing.assert_close(state, final)


def test_attention_with_cache_offsets_matches_full_causal() -> None:
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 9, 8, generator=g)
    k = torch.randn(2, 2, 9, 8, generator=g)
    v = torch.randn(2, 2, 9, 8, generator=g)
    full = attention(q, k, v, scale=8**-0.5)
    tail = attention(q[:, :, 6:], k, v, scale=8**-0.5)  # the last 3 queries against all 9 keys
    torch.testing.assert_close(tail, full[:, :, 6:])
    kr, vr = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
    scores = (q @ kr.transpose(-1, -2)) * 8**-0.5
    scores = scores.masked_fill(~torch.ones(9, 9, dtype=torch.bool).tril(), float("-inf"))
    torch.testing.assert_close(full, scores.softmax(-1) @ vr)


cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device: the CUDA kernels are optional fast paths"
)


@cuda
def test_cuda_ssd_matches_reference() -> None:
    pytest.importorskip("mamba_ssm", reason="mamba-ssm is not installed (pip install codemill[cuda])")
    from codemill.training.kernels import ssd

    x, dt, A, B, C, D, h0 = (t.float().cuda() for t in _ssd_inputs(2, 256, 8, 64, 1, 64, seed=1))
    y, final = ssd(x, dt, A, B, C, 64, D, h0)
    y_ref, final_ref = ssd_chunked_ref(x, dt, A, B, C, 64, D, h0)
    torch.testing.assert_close(y, y_ref, rtol=2e-3, atol=2e-3)
    torch.testing.assert_close(final, final_ref, rtol=2e-3, atol=2e-3)


@cuda
def test_cuda_conv_matches_reference() -> None:
    pytest.importorskip("causal_conv1d", reason="causal-conv1d is not installed (pip install codemill[cuda])")
    from codemill.training.kernels import causal_conv1d

    x = torch.randn(2, 64, 100, device="cuda")
    w = torch.randn(64, 4, device="cuda")
    b = torch.randn(64, device="cuda")
    y, final = causal_conv1d(x, w, b)
    y_ref, final_ref = causal_conv1d_ref(x, w, b)
    torch.testing.assert_close(y, y_ref, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(final, final_ref)


@cuda
def test_flash_attention_matches_sdpa() -> None:
    pytest.importorskip("flash_attn", reason="flash-attn is not installed (pip install codemill[cuda])")
    q = torch.randn(2, 4, 64, 64, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(2, 2, 64, 64, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(2, 2, 64, 64, device="cuda", dtype=torch.bfloat16)
    out = attention(q, k, v, scale=0.125)
    ref = attention(q.float().cpu(), k.float().cpu(), v.float().cpu(), scale=0.125)
    torch.testing.assert_close(out.float().cpu(), ref, rtol=2e-2, atol=2e-2)


def test_kernel_choices_are_made_once_and_said_with_their_reason(caplog) -> None:
    """Without the CUDA packages (these machines) each fast path is looked up once per process and
    its absence is logged once, naming the package; a shape causal-conv1d cannot take is named."""
    import importlib
    import logging

    from codemill.training.kernels import choice, conv

    # (the package re-exports functions named like these modules)
    ssd = importlib.import_module("codemill.training.kernels.ssd")
    attention_module = importlib.import_module("codemill.training.kernels.attention")

    for lookup in (ssd._cuda_kernel, conv._cuda_kernel, attention_module._flash):
        lookup.cache_clear()
    with caplog.at_level(logging.INFO, logger="codemill.kernels"):
        for _ in range(3):
            found = (ssd._cuda_kernel(), conv._cuda_kernel(), attention_module._flash())
    messages = [r.getMessage() for r in caplog.records]
    names = (("SSD scan", "mamba-ssm"), ("causal conv", "causal-conv1d"), ("attention", "flash-attn"))
    for (kernel, package), fast in zip(names, found, strict=True):
        said = [m for m in messages if m.startswith(kernel)]
        assert len(said) == 1, said
        assert fast is not None or package in said[0], said
    assert conv.kernel_refusal(64, 4) is None
    assert "conv_width 5" in conv.kernel_refusal(64, 5)
    assert "multiple of 8" in conv.kernel_refusal(60, 4)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="codemill.kernels"):
        choice.fell_back("causal conv", "conv_width 5 (test)")
        choice.fell_back("causal conv", "conv_width 5 (test)")
    assert len(caplog.records) == 1
