"""Whether one training step fits in memory, checked before the model is built: a step that does
not fit is killed by the kernel's OOM killer on CPU (no exception to report) or fails deep inside
CUDA, so a `--seq-len 100000` mistake is named here instead, with what to change."""

from __future__ import annotations

import os

import torch

from codemill.errors import UserError
from codemill.training.model_config import ModelConfig


def step_activation_bytes(model: ModelConfig, seq_len: int, micro_batch: int, checkpointing: bool) -> int:
    """A lower bound on what one micro-batch's forward keeps for the backward, in float32: the
    logits with their gradient, and per layer the inputs and outputs of the projections (attention,
    the Mamba-2 mixer's in/out projections and scan, the MLP). Real use is higher; a step over
    this bound cannot run."""
    tokens = seq_len * micro_batch
    logits = 2 * tokens * model.vocab_size
    attention = 2 * model.num_heads * model.head_dim + 2 * model.num_kv_heads * model.head_dim
    mixer = 3 * model.ssm_dim + 2 * model.ssm_groups * model.ssm_state + model.ssm_heads
    per_layer = tokens * (4 * model.hidden_size + attention + mixer + 3 * model.intermediate_size)
    layers = (
        per_layer + (model.num_layers - 1) * tokens * model.hidden_size
        if checkpointing
        else (per_layer * model.num_layers)
    )
    return 4 * (logits + layers)


def available_bytes(device: torch.device) -> int | None:
    """Free memory on the device (for CPU, the kernel's MemAvailable); None when it cannot tell."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None


def check_step_fits(
    model: ModelConfig, seq_len: int, micro_batch: int, checkpointing: bool, device: torch.device
) -> None:
    needed = step_activation_bytes(model, seq_len, micro_batch, checkpointing)
    free = available_bytes(device)
    if free is not None and needed > free:
        raise UserError(
            f"one micro-batch of {micro_batch} x {seq_len} tokens needs at least {needed / 1e9:.1f} GB for its "
            f"logits and activations, and this {device.type} has {free / 1e9:.1f} GB free: lower --seq-len or "
            "--micro-batch (raise --grad-accum to keep the batch), or turn on --activation-checkpointing"
        )
