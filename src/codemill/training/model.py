"""The hybrid code model, top to bottom: Falcon-H1's parallel attention + Mamba-2 block.

    x = embed(tokens) * embedding_multiplier
    for each block:
        h = norm(x)
        x = x + mamba(h) * ssm_out_multiplier + attention(h * attention_in_multiplier) * attention_out_multiplier
        x = x + mlp(ff_norm(x))
    logits = lm_head(final_norm(x)) * lm_head_multiplier

Attention is grouped-query with RoPE; the Mamba-2 mixer projects to (z, x, B, C, dt), runs a causal
depthwise conv over (x, B, C), the chunked SSD scan, a gated RMSNorm (or a plain silu gate, as in
Falcon-H1-0.5B), and projects back. Either mixer can be switched off per model (`mixer`), for the
pure Mamba-2 (Falcon Mamba) and pure attention ablations. The muP multipliers are Falcon-H1's (they
map one to one onto transformers' FalconH1Config); learnable multipliers (arXiv 2601.04890) wrap
any linear layer as s * diag(r) W diag(c) and fold back into W for export.

The model holds no parallelism (distributed.py applies DDP / FSDP2) and no training logic.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from codemill.training.kernels import (
    attention,
    causal_conv1d,
    causal_conv1d_step_ref,
    ssd,
    ssd_step_ref,
)
from codemill.training.layers import (
    GatedRMSNorm,
    InferenceCache,
    LayerCache,
    Linear,
    RMSNorm,
    apply_rope,
    rope_tables,
)
from codemill.training.model_config import (  # noqa: F401 (re-exported: the model's config lives beside it)
    CONFIGS,
    MATRICES,
    MIXERS,
    MULTIPLIER_KINDS,
    ConfigError,
    ModelConfig,
    named_config,
)
from codemill.training.precision import Precision


# ---------------------------------------------------------------------------------------- layers
class Attention(nn.Module):
    def __init__(self, c: ModelConfig, kinds: dict[str, tuple[str, ...]]):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = c.num_heads, c.num_kv_heads, c.head_dim
        # The block's attention_in/out multipliers and the key multiplier, as weight scales.
        scale_in = c.attention_in_multiplier
        self.q_proj = Linear(c.hidden_size, c.num_heads * c.head_dim, kinds=kinds["q_proj"], scale=scale_in)
        self.k_proj = Linear(
            c.hidden_size, c.num_kv_heads * c.head_dim, kinds=kinds["k_proj"], scale=scale_in * c.key_multiplier
        )
        self.v_proj = Linear(c.hidden_size, c.num_kv_heads * c.head_dim, kinds=kinds["v_proj"], scale=scale_in)
        self.o_proj = Linear(
            c.num_heads * c.head_dim, c.hidden_size, kinds=kinds["o_proj"], scale=c.attention_out_multiplier
        )

    def forward(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], cache: LayerCache | None = None
    ) -> torch.Tensor:
        batch, length, _ = x.shape
        q = self.q_proj(x).view(batch, length, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, length, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, length, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if cache is not None:
            if cache.keys is not None and cache.values is not None:
                k, v = torch.cat([cache.keys, k], dim=2), torch.cat([cache.values, v], dim=2)
            cache.keys, cache.values = k, v
        out = attention(q, k, v, scale=self.head_dim**-0.5)
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, self.heads * self.head_dim))


def mup_vector(c: ModelConfig) -> torch.Tensor:
    """Falcon-H1's per-channel multipliers of the mixer's in_proj output: z, x, B, C, dt."""
    sizes = (c.ssm_dim, c.ssm_dim, c.ssm_groups * c.ssm_state, c.ssm_groups * c.ssm_state, c.ssm_heads)
    # On the CPU even under a `torch.device("meta")` context: it is a constant, not a parameter.
    return torch.cat([torch.full((n,), float(m), device="cpu") for n, m in zip(sizes, c.ssm_multipliers, strict=False)])


class Mamba2Mixer(nn.Module):
    def __init__(self, c: ModelConfig, kinds: dict[str, tuple[str, ...]]):
        super().__init__()
        self.c = c
        # ssm_in_multiplier and the per-channel mup_vector scale in_proj; ssm_out_multiplier out_proj.
        self.in_proj = Linear(
            c.hidden_size,
            2 * c.ssm_dim + 2 * c.ssm_groups * c.ssm_state + c.ssm_heads,
            kinds=kinds["in_proj"],
            scale=mup_vector(c) * c.ssm_in_multiplier,
        )
        self.conv1d = nn.Conv1d(c.conv_dim, c.conv_dim, c.conv_width, groups=c.conv_dim, bias=True)
        self.dt_bias = nn.Parameter(torch.zeros(c.ssm_heads))
        self.A_log = nn.Parameter(torch.zeros(c.ssm_heads))
        self.D = nn.Parameter(torch.ones(c.ssm_heads))
        self.norm = GatedRMSNorm(c.ssm_dim, c.ssm_groups, c.rms_eps, c.ssm_norm_before_gate) if c.ssm_norm else None
        self.out_proj = Linear(c.ssm_dim, c.hidden_size, kinds=kinds["out_proj"], scale=c.ssm_out_multiplier)

    def forward(self, x: torch.Tensor, cache: LayerCache | None = None) -> torch.Tensor:
        """The chunked scan over a whole sequence; with a cache that already holds a state and one
        new token, the recurrent step (as mamba-ssm splits `forward` and `step`)."""
        if cache is not None and cache.ssm is not None and cache.conv is not None and x.shape[1] == 1:
            return self.step(x, cache, cache.conv, cache.ssm)
        c = self.c
        batch, length, _ = x.shape
        z, xbc, dt = self.in_proj(x).split([c.ssm_dim, c.conv_dim, c.ssm_heads], dim=-1)
        xbc, conv_state = causal_conv1d(
            xbc.transpose(1, 2), self.conv1d.weight.squeeze(1), self.conv1d.bias, None if cache is None else cache.conv
        )
        xs, B, C = self._split(xbc.transpose(1, 2))
        y, final = ssd(
            xs.view(batch, length, c.ssm_heads, c.ssm_head_dim),
            self._dt(dt),
            self._A(),
            B.view(batch, length, c.ssm_groups, c.ssm_state),
            C.view(batch, length, c.ssm_groups, c.ssm_state),
            c.chunk_size,
            self.D,
            None if cache is None else cache.ssm,
        )
        if cache is not None:
            cache.conv, cache.ssm = conv_state, final.float()
        return self._out(y.reshape(batch, length, c.ssm_dim), z, x.dtype)

    def step(self, x: torch.Tensor, cache: LayerCache, conv: torch.Tensor, ssm: torch.Tensor) -> torch.Tensor:
        """One token (x: batch x 1 x hidden) from the cached conv window and SSM state."""
        c = self.c
        batch = x.shape[0]
        z, xbc, dt = self.in_proj(x).split([c.ssm_dim, c.conv_dim, c.ssm_heads], dim=-1)
        mixed, cache.conv = causal_conv1d_step_ref(conv, xbc[:, 0], self.conv1d.weight.squeeze(1), self.conv1d.bias)
        xs, B, C = self._split(mixed)
        y, cache.ssm = ssd_step_ref(
            ssm,
            xs.view(batch, c.ssm_heads, c.ssm_head_dim),
            self._dt(dt)[:, 0],
            self._A(),
            B.view(batch, c.ssm_groups, c.ssm_state),
            C.view(batch, c.ssm_groups, c.ssm_state),
            self.D,
        )
        return self._out(y.reshape(batch, 1, c.ssm_dim), z, x.dtype)

    def _split(self, xbc: torch.Tensor) -> list[torch.Tensor]:
        c = self.c
        return list(xbc.split([c.ssm_dim, c.ssm_groups * c.ssm_state, c.ssm_groups * c.ssm_state], dim=-1))

    def _dt(self, dt: torch.Tensor) -> torch.Tensor:
        return F.softplus(dt.float() + self.dt_bias.float()).clamp(*self.c.dt_limit)

    def _A(self) -> torch.Tensor:
        return -torch.exp(self.A_log.float())

    def _out(self, y: torch.Tensor, z: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        y = self.norm(y, z) if self.norm is not None else y * F.silu(z)
        return self.out_proj(y.to(dtype))


class MLP(nn.Module):
    def __init__(self, c: ModelConfig, kinds: dict[str, tuple[str, ...]]):
        super().__init__()
        gate, down = c.mlp_multipliers
        self.gate_proj = Linear(c.hidden_size, c.intermediate_size, kinds=kinds["gate_proj"], scale=gate)
        self.up_proj = Linear(c.hidden_size, c.intermediate_size, kinds=kinds["up_proj"])
        self.down_proj = Linear(c.intermediate_size, c.hidden_size, kinds=kinds["down_proj"], scale=down)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.up_proj(x) * F.silu(self.gate_proj(x)))


class Block(nn.Module):
    def __init__(self, c: ModelConfig, kinds: dict[str, tuple[str, ...]]):
        super().__init__()
        self.c = c
        self.norm = RMSNorm(c.hidden_size, c.rms_eps)
        self.mamba = Mamba2Mixer(c, kinds) if c.uses_mamba else None
        self.attn = Attention(c, kinds) if c.uses_attention else None
        self.ff_norm = RMSNorm(c.hidden_size, c.rms_eps)
        self.mlp = MLP(c, kinds)

    def forward(self, x: torch.Tensor, rope, cache: LayerCache | None = None) -> torch.Tensor:
        h = self.norm(x)
        if self.mamba is not None:
            x = x + self.mamba(h, cache)  # the mixers' multipliers live in their projections
        if self.attn is not None:
            x = x + self.attn(h, rope, cache)
        return x + self.mlp(self.ff_norm(x))


# ------------------------------------------------------------------------------------------ model
class HybridLM(nn.Module):
    # The precision of the run it was loaded from (`loop.load_model`): evaluation runs under it.
    precision: Precision | None = None

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = c = config
        kinds = {m: tuple(config.learnable_multipliers) if m in config.learnable_matrices else () for m in MATRICES}
        self.embed = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList([Block(c, kinds) for _ in range(c.num_layers)])
        self.final_norm = RMSNorm(c.hidden_size, c.rms_eps)
        self.lm_head = Linear(c.hidden_size, c.vocab_size, kinds=kinds["lm_head"], scale=c.lm_head_multiplier)
        if self.embed.weight.device.type != "meta":
            self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, seed: int | None = None) -> None:
        """Normal(0, init_std) matrices; Mamba-2's dt (log-uniform in [dt_min, dt_max], stored as
        its softplus inverse), A in [1, 16], D = 1; norms and multipliers at 1; the constant muP
        scales of the matrices. Complete on its own, so that a model built on the meta device,
        moved with `to_empty` (FSDP2's usual path) and reset equals one built directly."""
        c = self.config
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        for module in self.modules():
            if isinstance(module, Linear):
                module.reset_scale()
            if isinstance(module, (nn.Linear, nn.Embedding)):
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * c.init_std)
                bias = getattr(module, "bias", None)
                if bias is not None:
                    bias.zero_()
            elif isinstance(module, nn.Conv1d):
                bound = 1.0 / math.sqrt(module.weight.shape[-1])
                module.weight.copy_(torch.rand(module.weight.shape, generator=generator) * 2 * bound - bound)
                if module.bias is not None:
                    module.bias.zero_()
            if isinstance(module, Mamba2Mixer):
                u = torch.rand(c.ssm_heads, generator=generator)
                dt = torch.exp(u * (math.log(c.dt_max) - math.log(c.dt_min)) + math.log(c.dt_min)).clamp(min=1e-4)
                module.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
                module.A_log.copy_(torch.log(1 + 15 * torch.rand(c.ssm_heads, generator=generator)))
                module.D.fill_(1.0)
        for name, param in self.named_parameters():
            if name.rsplit(".", 1)[-1].startswith("multiplier_") or name.endswith("norm.weight"):
                param.fill_(1.0)

    def new_cache(self) -> InferenceCache:
        return InferenceCache([LayerCache() for _ in self.layers])

    def forward(self, tokens: torch.Tensor, cache: InferenceCache | None = None) -> torch.Tensor:
        """Logits (batch, length, vocab). With a cache, consumes the tokens after those already in it."""
        c = self.config
        start = 0 if cache is None else cache.length
        x = self.embed(tokens) * c.embedding_multiplier
        rope = (
            rope_tables(c.head_dim, c.rope_theta, torch.arange(start, start + tokens.shape[1], device=tokens.device))
            if c.uses_attention
            else None
        )
        for i, layer in enumerate(self.layers):
            x = layer(x, rope, None if cache is None else cache.layers[i])
        if cache is not None:
            cache.length += tokens.shape[1]
        return self.lm_head(self.final_norm(x))

    def loss(self, tokens: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mean next-token cross-entropy over the positions where mask is 1 (all by default)."""
        return masked_cross_entropy(self(tokens), targets, mask)

    @torch.no_grad()
    def step(self, tokens: torch.Tensor, cache: InferenceCache) -> torch.Tensor:
        """One decoding step: tokens (batch,) -> next-token logits (batch, vocab)."""
        return self(tokens[:, None], cache)[:, -1]

    @torch.no_grad()
    def fold_multipliers(self) -> None:
        for module in self.modules():
            if isinstance(module, Linear):
                module.fold_multipliers()

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        total = sum(p.numel() for p in self.parameters())
        return total - self.embed.weight.numel() if exclude_embeddings else total


def masked_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean next-token cross-entropy (in float32) over the positions where mask is 1."""
    logits = logits.float()
    losses = F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    if mask is None:
        return losses.mean()
    mask = mask.reshape(-1).to(losses.dtype)
    return (losses * mask).sum() / mask.sum().clamp(min=1)


def flops_per_token(c: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward = 3x forward): 6 per matrix parameter, plus the
    sequence mixing that parameters do not count: causal attention scores and values (2 matmuls
    of seq_len/2 average length), and the SSD scan's intra-chunk (chunk/2 average) and state terms."""
    matrices = c.hidden_size * c.vocab_size  # lm_head (the embedding lookup is not a matmul)
    per_layer = 3 * c.hidden_size * c.intermediate_size
    mixing = 0.0
    if c.uses_attention:
        per_layer += c.hidden_size * (2 * c.num_heads + 2 * c.num_kv_heads) * c.head_dim
        mixing += 2 * 2 * c.num_heads * c.head_dim * seq_len / 2
    if c.uses_mamba:
        per_layer += c.hidden_size * (2 * c.ssm_dim + 2 * c.ssm_groups * c.ssm_state + c.ssm_heads)
        per_layer += c.ssm_dim * c.hidden_size
        chunk = min(c.chunk_size, seq_len)
        mixing += 2 * c.ssm_heads * (chunk / 2) * (c.ssm_state + c.ssm_head_dim)  # C.B^T and weights.x
        mixing += 2 * 3 * c.ssm_dim * c.ssm_state  # chunk states in and out, state carry
    return 6.0 * (matrices + c.num_layers * per_layer) + 3.0 * c.num_layers * mixing
