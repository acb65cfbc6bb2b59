"""Causal depthwise convolution of the Mamba-2 mixer: a torch reference and causal-conv1d's CUDA
kernel when it imports and tensors are on CUDA.

x (batch, channels, length), weight (channels, width), bias (channels,) or None. The state for
decoding is the last width - 1 inputs, (batch, channels, width - 1).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from codemill.training.kernels.choice import chosen, fell_back


def causal_conv1d_ref(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    activation: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(y like x, final state). Output t sees inputs t - width + 1 .. t (zeros, or the given
    state, before the start); silu applied when `activation`."""
    width = weight.shape[-1]
    history = x.new_zeros(x.shape[0], x.shape[1], width - 1) if initial_state is None else initial_state.to(x.dtype)
    padded = torch.cat([history, x], dim=-1)
    y = F.conv1d(padded, weight.unsqueeze(1), bias, groups=x.shape[1])
    return (F.silu(y) if activation else y), padded[..., padded.shape[-1] - (width - 1) :]


def causal_conv1d_step_ref(
    state: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step: x (batch, channels) -> (y (batch, channels), new state)."""
    window = torch.cat([state.to(x.dtype), x[..., None]], dim=-1)  # (b, d, width)
    y = (window * weight).sum(-1)
    if bias is not None:
        y = y + bias
    return (F.silu(y) if activation else y), window[..., 1:]


@functools.lru_cache(maxsize=None)
def _cuda_kernel():
    """causal-conv1d's kernel, or None; tried once per process, the outcome logged once."""
    try:
        from causal_conv1d import causal_conv1d_fn
    except Exception as err:  # not installed, or built for another torch
        return chosen("causal conv", None, f"causal-conv1d did not import ({type(err).__name__}: {err})")
    return chosen("causal conv", causal_conv1d_fn, "causal-conv1d's CUDA kernel")


def kernel_refusal(channels: int, width: int) -> str | None:
    """Why causal-conv1d's kernel cannot take this shape, or None: it needs a width of 2 to 4 and
    (for its fast channel-last path) channels divisible by 8."""
    if not 2 <= width <= 4:
        return f"conv_width {width} (the kernel takes 2 to 4)"
    if channels % 8:
        return f"{channels} conv channels (the kernel needs a multiple of 8: ssm_dim + 2 x ssm_groups x ssm_state)"
    return None


def causal_conv1d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, initial_state: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """silu(causal depthwise conv); causal-conv1d's kernel on CUDA when installed (prefill from
    a zero state), else the reference."""
    if x.is_cuda and initial_state is None:
        kernel = _cuda_kernel()
        refusal = kernel_refusal(x.shape[1], weight.shape[-1]) if kernel is not None else None
        if refusal is not None:
            fell_back("causal conv", refusal)
        elif kernel is not None:
            width = weight.shape[-1]
            final = F.pad(x, (max(0, width - 1 - x.shape[-1]), 0))[..., -(width - 1) :]
            return kernel(x, weight, bias, activation="silu"), final
    return causal_conv1d_ref(x, weight, bias, initial_state)
