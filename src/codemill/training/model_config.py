"""The model's shape and its named configs (tiny, small, falcon-h1-0.5b). No torch here: a config
is read, checked and printed without it."""

from __future__ import annotations

import math
import typing
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from codemill.errors import UserError
from codemill.settings import load_section

Mixer = Literal["hybrid", "mamba", "attention"]
MIXERS: tuple[str, ...] = typing.get_args(Mixer)
MULTIPLIER_KINDS = ("scalar", "row", "col")
MATRICES = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "in_proj",
    "out_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
    "lm_head",
)


class ConfigError(UserError):
    """A model configuration that cannot describe a model (names the fields and why)."""


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 8192
    hidden_size: int = 128
    num_layers: int = 4
    intermediate_size: int = 384
    mixer: Mixer = "hybrid"  # each block's mixer: attention and Mamba-2 in parallel, or one of them
    rms_eps: float = 1e-5
    init_std: float = 0.02
    # attention
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 32
    rope_theta: float = 1e11
    # Mamba-2
    ssm_dim: int = 256  # d_ssm = ssm_heads * ssm_head_dim
    ssm_heads: int = 8
    ssm_head_dim: int = 32
    ssm_state: int = 16
    ssm_groups: int = 1
    conv_width: int = 4
    chunk_size: int = 64
    ssm_norm: bool = True  # gated RMSNorm before out_proj; False: y * silu(z) (Falcon-H1-0.5B)
    ssm_norm_before_gate: bool = False
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_limit: tuple[float, float] = (0.0, math.inf)
    # Falcon-H1 muP multipliers (forward-pass constants)
    embedding_multiplier: float = 1.0
    lm_head_multiplier: float = 1.0
    key_multiplier: float = 1.0
    attention_in_multiplier: float = 1.0
    attention_out_multiplier: float = 1.0
    ssm_in_multiplier: float = 1.0
    ssm_out_multiplier: float = 1.0
    ssm_multipliers: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0)  # z, x, B, C, dt
    mlp_multipliers: tuple[float, ...] = (1.0, 1.0)  # gate, down
    # learnable multipliers: which kinds, on which matrices
    learnable_multipliers: tuple[str, ...] = ()
    learnable_matrices: tuple[str, ...] = MATRICES

    def __post_init__(self) -> None:
        problems = []
        for name in ("vocab_size", "hidden_size", "num_layers", "intermediate_size"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1 (got {getattr(self, name)})")
        if self.mixer not in MIXERS:
            problems.append(f"mixer must be one of {MIXERS} (got {self.mixer!r})")
        if self.uses_attention:
            if self.num_heads < 1 or self.num_kv_heads < 1 or self.num_heads % self.num_kv_heads:
                problems.append(
                    f"num_heads ({self.num_heads}) must be a positive multiple of num_kv_heads ({self.num_kv_heads})"
                )
            if self.head_dim < 2 or self.head_dim % 2:
                problems.append(f"head_dim must be even for RoPE (got {self.head_dim})")
        if self.uses_mamba:
            if self.ssm_heads * self.ssm_head_dim != self.ssm_dim:
                problems.append(
                    f"ssm_heads x ssm_head_dim = {self.ssm_heads} x {self.ssm_head_dim} = "
                    f"{self.ssm_heads * self.ssm_head_dim}, but ssm_dim is {self.ssm_dim}"
                )
            if self.ssm_groups < 1 or self.ssm_heads % self.ssm_groups:
                problems.append(f"ssm_heads ({self.ssm_heads}) must be a multiple of ssm_groups ({self.ssm_groups})")
            if self.ssm_state < 1 or self.conv_width < 2 or self.chunk_size < 1:
                problems.append("ssm_state and chunk_size must be >= 1 and conv_width >= 2")
            if not 0 < self.dt_min <= self.dt_max:
                problems.append(f"need 0 < dt_min <= dt_max (got {self.dt_min}, {self.dt_max})")
        if len(self.ssm_multipliers) != 5:
            problems.append(f"ssm_multipliers needs 5 values (z, x, B, C, dt), got {len(self.ssm_multipliers)}")
        if len(self.mlp_multipliers) != 2:
            problems.append(f"mlp_multipliers needs 2 values (gate, down), got {len(self.mlp_multipliers)}")
        unknown = set(self.learnable_multipliers) - set(MULTIPLIER_KINDS)
        if unknown:
            problems.append(f"learnable_multipliers: unknown kind(s) {sorted(unknown)}; choose from {MULTIPLIER_KINDS}")
        unknown = set(self.learnable_matrices) - set(MATRICES)
        if unknown:
            problems.append(f"learnable_matrices: unknown matrix name(s) {sorted(unknown)}; choose from {MATRICES}")
        if problems:
            raise ConfigError("inconsistent model config: " + "; ".join(problems))

    @property
    def uses_attention(self) -> bool:
        return self.mixer in ("hybrid", "attention")

    @property
    def uses_mamba(self) -> bool:
        return self.mixer in ("hybrid", "mamba")

    @property
    def conv_dim(self) -> int:
        return self.ssm_dim + 2 * self.ssm_groups * self.ssm_state

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> ModelConfig:
        return load_section(cls, values, "model")


# Falcon-H1-0.5B's multipliers (its published config), reused by the small shapes so they train
# with the same relative scales.
_FALCON_H1_MULTIPLIERS: dict[str, Any] = dict(
    embedding_multiplier=5.656854249492381,
    lm_head_multiplier=0.0390625,
    key_multiplier=0.390625,
    attention_in_multiplier=1.0,
    attention_out_multiplier=0.9375,
    ssm_in_multiplier=1.25,
    ssm_out_multiplier=0.23570226039551587,
    ssm_multipliers=(0.3535533905932738, 0.25, 0.3535533905932738, 0.5, 0.3535533905932738),
    mlp_multipliers=(0.8838834764831844, 0.5859375),
)

CONFIGS: dict[str, ModelConfig] = {
    # tests: hidden 128, 4 layers (the shape of the benchmark's transformers anchor)
    "tiny": ModelConfig(),
    # 45.7M parameters with an 8k vocabulary: trains here in minutes
    "small": ModelConfig(
        hidden_size=512,
        num_layers=8,
        intermediate_size=1536,
        num_heads=8,
        num_kv_heads=2,
        head_dim=64,
        ssm_dim=1024,
        ssm_heads=16,
        ssm_head_dim=64,
        ssm_state=64,
        chunk_size=64,
        **_FALCON_H1_MULTIPLIERS,
    ),
    # the published Falcon-H1-0.5B shape (instantiated on the meta device in tests, not trained here)
    "falcon-h1-0.5b": ModelConfig(
        vocab_size=32784,
        hidden_size=1024,
        num_layers=36,
        intermediate_size=2048,
        num_heads=8,
        num_kv_heads=2,
        head_dim=64,
        ssm_dim=1536,
        ssm_heads=24,
        ssm_head_dim=64,
        ssm_state=128,
        chunk_size=128,
        ssm_norm=False,
        **_FALCON_H1_MULTIPLIERS,
    ),
}


def named_config(name: str, **overrides) -> ModelConfig:
    if name not in CONFIGS:
        raise ConfigError(f"unknown model config {name!r}; named configs: {', '.join(CONFIGS)}")
    return replace(CONFIGS[name], **overrides)
