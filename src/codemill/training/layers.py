"""The model's building blocks that know nothing of its config: the linear layer with muP scales
and learnable multipliers, the RMS norms, rotary embeddings, and the decoding caches."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F


class Linear(nn.Linear):
    """nn.Linear whose effective weight is diag(scale * s * r) W diag(c):
    - `scale`, a constant per output row (or scalar): the muP multipliers around this matrix
      (Falcon-H1 applies them to activations; applied to the weight they cost a pass over the
      weight instead of over every token's activations, and give the same function);
    - learnable multipliers s (scalar), r (rows), c (columns), starting at 1, named `multiplier_*`
      so the optimiser puts them in their own group."""

    scale: torch.Tensor | None

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = False,
        kinds: tuple[str, ...] = (),
        scale: float | torch.Tensor = 1.0,
    ):
        super().__init__(in_features, out_features, bias=bias)
        # The constant is kept on the CPU beside its buffer: a model built on the meta device and
        # moved with `to_empty` gets uninitialised buffers, which `reset_scale` fills again.
        if isinstance(scale, torch.Tensor):
            self._scale_value: torch.Tensor | None = (
                scale.detach().to("cpu", torch.float32).expand(out_features).clone()
            )
        else:
            self._scale_value = None if scale == 1.0 else torch.full((out_features,), float(scale), device="cpu")
        constant = None if self._scale_value is None else self._scale_value.to(self.weight.device)
        self.register_buffer("scale", constant, persistent=False)
        self.multiplier_scalar = nn.Parameter(torch.ones(1)) if "scalar" in kinds else None
        self.multiplier_row = nn.Parameter(torch.ones(out_features)) if "row" in kinds else None
        self.multiplier_col = nn.Parameter(torch.ones(in_features)) if "col" in kinds else None

    @torch.no_grad()
    def reset_scale(self) -> None:
        if self.scale is not None and self._scale_value is not None:
            self.scale.copy_(self._scale_value)

    def _row_factor(self, learnable_only: bool = False) -> torch.Tensor | None:
        factor: torch.Tensor | None = None if learnable_only else self.scale
        for multiplier in (self.multiplier_row, self.multiplier_scalar):
            if multiplier is not None:
                factor = multiplier if factor is None else factor * multiplier
        return factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Each factor goes where it is cheaper: on the weight (out x in) when many tokens pass
        # (training), on the activations when few do (decoding one token at a time).
        weight, bias, row, col = self.weight, self.bias, self._row_factor(), self.multiplier_col
        tokens = x.numel() // max(1, x.shape[-1])
        if col is not None:
            if tokens < self.out_features:
                x = x * col.to(x.dtype)
            else:
                weight = weight * col.to(weight.dtype)[None, :]
        if row is None:
            return F.linear(x, weight, bias)
        if tokens < self.in_features:
            return (
                F.linear(x, weight, bias) * row.to(x.dtype)
                if bias is None
                else (F.linear(x, weight) + bias) * row.to(x.dtype)
            )
        weight = weight * row.to(weight.dtype)[:, None]
        return F.linear(x, weight, None if bias is None else bias * row.to(bias.dtype))

    @torch.no_grad()
    def fold_multipliers(self) -> None:
        """W <- s diag(r) W diag(c), b <- s r b; the learnable multipliers are removed (the constant
        muP scale stays: exported configs carry it as FalconH1's multipliers)."""
        row = self._row_factor(learnable_only=True)
        if row is not None:
            self.weight.mul_(row.expand(self.out_features)[:, None])
            if self.bias is not None:
                self.bias.mul_(row)
        if self.multiplier_col is not None:
            self.weight.mul_(self.multiplier_col[None, :])
        self.multiplier_scalar = self.multiplier_row = self.multiplier_col = None


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:  # torch's fused kernel: one pass instead of five
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        normed = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)


class GatedRMSNorm(nn.Module):
    """Mamba-2's output norm, per group of channels, with the silu(z) gate before or after it."""

    def __init__(self, size: int, groups: int, eps: float, norm_before_gate: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.groups, self.eps, self.norm_before_gate = groups, eps, norm_before_gate

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        if not self.norm_before_gate:
            x = x * F.silu(z.float())
        grouped = x.view(*x.shape[:-1], self.groups, x.shape[-1] // self.groups)
        x = self.weight * F.rms_norm(grouped, (grouped.shape[-1],), None, self.eps).view_as(x)
        if self.norm_before_gate:
            x = x * F.silu(z.float())
        return x.to(dtype)


def rope_tables(head_dim: int, theta: float, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape (length, head_dim), rotate-half layout."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=positions.device) / head_dim))
    freqs = positions.float()[:, None] * inv_freq[None, :]
    angles = torch.cat([freqs, freqs], dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


@dataclass
class LayerCache:
    """Decoding state of one block: attention keys/values, the conv window and the SSM state."""

    keys: torch.Tensor | None = None  # (batch, kv_heads, length, head_dim)
    values: torch.Tensor | None = None
    conv: torch.Tensor | None = None  # (batch, conv_dim, conv_width - 1)
    ssm: torch.Tensor | None = None  # (batch, ssm_heads, ssm_head_dim, ssm_state), float32


@dataclass
class InferenceCache:
    layers: list[LayerCache] = field(default_factory=list)
    length: int = 0  # tokens consumed so far
