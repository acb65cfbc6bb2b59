"""Sequence-mixing kernels of the hybrid model: each pure-torch reference (the CPU path, tested)
next to its optional CUDA twin (mamba-ssm, causal-conv1d, flash-attn), chosen once per process
when the CUDA package imports and the tensors are on a GPU, and logged (kernels/choice.py)."""

from codemill.training.kernels.attention import attention
from codemill.training.kernels.conv import (
    causal_conv1d,
    causal_conv1d_ref,
    causal_conv1d_step_ref,
)
from codemill.training.kernels.ssd import (
    ssd,
    ssd_chunked_ref,
    ssd_sequential_ref,
    ssd_step_ref,
)

__all__ = [
    "attention",
    "causal_conv1d",
    "causal_conv1d_ref",
    "causal_conv1d_step_ref",
    "ssd",
    "ssd_chunked_ref",
    "ssd_sequential_ref",
    "ssd_step_ref",
]
