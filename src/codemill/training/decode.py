"""Fast token-by-token decoding of a HybridLM: the same function as `HybridLM.step`, rearranged
for few tokens at a time.

At batch 1 a decoding step reads every weight once (a matrix-vector product per matrix) and runs
a few hundred tiny operations; on a CPU the tiny operations cost as much as the weight reads.
`Decoder` takes a snapshot of a model's weights arranged so a block needs ~35 operations:
- every matrix that reads the block's normed input (Mamba in_proj, q, k, v) is one matrix, and so
  are the two that write the residual (out_proj, o_proj) and the MLP's gate and up;
- the muP and learnable multipliers, the norm weights that precede a matrix, the gated norm's
  weight and attention's 1/sqrt(head_dim) are folded into those matrices;
- q and k rows are permuted within each head from the rotate-half RoPE layout to pairs, so RoPE
  is one complex multiply (q.k is unchanged: both sides get the same permutation);
- keys and values live in buffers preallocated for the whole generation; the RoPE table too.

The snapshot does not follow later changes to the model's parameters: make a new Decoder after
training. Tests check its logits against `HybridLM.step` step by step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from codemill.training.model import HybridLM, InferenceCache, Linear, rope_tables


def _effective(linear: Linear) -> torch.Tensor:
    """The matrix `linear` applies, every multiplier folded in (the module is left untouched)."""
    weight = linear.weight.detach()
    row = linear._row_factor()
    if row is not None:
        weight = weight * row.detach().to(weight.dtype).expand(linear.out_features)[:, None]
    if linear.multiplier_col is not None:
        weight = weight * linear.multiplier_col.detach().to(weight.dtype)[None, :]
    if linear.bias is not None:
        raise ValueError("Decoder expects bias-free projections")
    return weight


def _pair_layout(head_dim: int) -> torch.Tensor:
    """Index that reorders one head from rotate-half (x_i pairs with x_{i+d/2}) to adjacent pairs."""
    half = head_dim // 2
    return torch.stack([torch.arange(half), torch.arange(half) + half], dim=1).reshape(-1)


@dataclass
class _Block:
    norm_eps: float
    # Matrices stored transposed, (in, out) contiguous: a vector times such a matrix streams it
    # row by row, measured 2-3x faster here than F.linear's (out, in) for matrices out of cache.
    w_in: torch.Tensor  # outputs: q, k (pair layout, q pre-scaled), v, z, xBC, dt; input norm folded in
    sizes: list[int]
    w_out: torch.Tensor  # inputs: Mamba out_proj's (gated-norm weight folded in), attention o_proj's
    w_gate_up: torch.Tensor
    w_down: torch.Tensor
    # The Mamba mixer's (empty in a block without one).
    conv_weight: torch.Tensor = field(default_factory=lambda: torch.empty(0))  # (conv_dim, width)
    conv_bias: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    dt_bias: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    A: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    D: torch.Tensor = field(default_factory=lambda: torch.empty(0))


@dataclass
class DecodeState:
    """Per block: key/value buffers (batch, kv_heads, capacity, head_dim), conv window
    (batch, conv_dim, width - 1), SSM state (batch, heads, head_dim, state) in float32."""

    keys: list[torch.Tensor | None]
    values: list[torch.Tensor | None]
    conv: list[torch.Tensor | None]
    ssm: list[torch.Tensor | None]
    length: int
    capacity: int
    rope: torch.Tensor | None  # (capacity, head_dim / 2) complex: e^(i * position * frequency)


class Decoder:
    def __init__(self, model: HybridLM):
        c = self.config = model.config
        self.embed = model.embed.weight.detach() * c.embedding_multiplier  # muP multiplier folded in
        self.final_eps = model.final_norm.eps
        self.head_t = (_effective(model.lm_head) * model.final_norm.weight.detach()[None, :]).t().contiguous()
        self.pair = _pair_layout(c.head_dim)
        self.blocks = [self._block(layer) for layer in model.layers]

    @torch.no_grad()
    def _block(self, layer) -> _Block:
        c = self.config
        rows: list[torch.Tensor] = []
        sizes: list[int] = []
        out_cols: list[torch.Tensor] = []
        empty = torch.empty(0)
        block = _Block(layer.norm.eps, empty, [], empty, empty, empty)
        if layer.attn is not None:
            attn = layer.attn
            heads_q = _effective(attn.q_proj).view(c.num_heads, c.head_dim, -1)[:, self.pair] * c.head_dim**-0.5
            heads_k = _effective(attn.k_proj).view(c.num_kv_heads, c.head_dim, -1)[:, self.pair]
            rows += [heads_q.reshape(-1, c.hidden_size), heads_k.reshape(-1, c.hidden_size), _effective(attn.v_proj)]
            sizes += [(c.num_heads + c.num_kv_heads) * c.head_dim, c.num_kv_heads * c.head_dim]
        if layer.mamba is not None:
            mamba = layer.mamba
            rows.append(_effective(mamba.in_proj))
            sizes += [c.ssm_dim, c.conv_dim, c.ssm_heads]
            out = _effective(mamba.out_proj)
            if mamba.norm is not None:
                out = out * mamba.norm.weight.detach()[None, :]
            out_cols.append(out)
            block.conv_weight = mamba.conv1d.weight.detach().squeeze(1)
            block.conv_bias = mamba.conv1d.bias.detach()
            block.dt_bias = mamba.dt_bias.detach().float()
            block.A = -torch.exp(mamba.A_log.detach().float())
            block.D = mamba.D.detach().float()
        if layer.attn is not None:
            out_cols.append(_effective(layer.attn.o_proj))
        block.w_in = (torch.cat(rows) * layer.norm.weight.detach()[None, :]).t().contiguous()
        block.sizes = sizes
        block.w_out = torch.cat(out_cols, dim=1).t().contiguous()
        mlp = layer.mlp
        block.w_gate_up = (
            (torch.cat([_effective(mlp.gate_proj), _effective(mlp.up_proj)]) * layer.ff_norm.weight.detach()[None, :])
            .t()
            .contiguous()
        )
        block.w_down = _effective(mlp.down_proj).t().contiguous()
        return block

    @torch.no_grad()
    def start(self, model: HybridLM, tokens: torch.Tensor, max_new_tokens: int) -> tuple[torch.Tensor, DecodeState]:
        """Prefill with the model's own forward; returns the last position's logits and the state
        with room for `max_new_tokens` more tokens."""
        cache = model.new_cache()
        logits = model(tokens, cache)[:, -1]
        return logits, self.state_from(cache, max_new_tokens)

    def state_from(self, cache: InferenceCache, max_new_tokens: int) -> DecodeState:
        c = self.config
        capacity = cache.length + max_new_tokens
        keys: list[torch.Tensor | None] = []
        values: list[torch.Tensor | None] = []
        conv: list[torch.Tensor | None] = []
        ssm: list[torch.Tensor | None] = []
        for layer in cache.layers:
            if layer.keys is not None and layer.values is not None:
                batch, kv_heads, length, head_dim = layer.keys.shape
                k = layer.keys.new_empty(batch, kv_heads, capacity, head_dim)
                v = layer.values.new_empty(batch, kv_heads, capacity, head_dim)
                k[:, :, :length] = layer.keys[..., self.pair.to(layer.keys.device)]
                v[:, :, :length] = layer.values
                keys.append(k)
                values.append(v)
            else:
                keys.append(None)
                values.append(None)
            conv.append(None if layer.conv is None else layer.conv.clone())
            ssm.append(None if layer.ssm is None else layer.ssm.float().clone())
        rope = None
        if c.uses_attention:  # the model's own tables (same rounding), as complex rotations
            device = self.embed.device
            cos, sin = rope_tables(c.head_dim, c.rope_theta, torch.arange(capacity, device=device))
            half = c.head_dim // 2
            rope = torch.complex(cos[:, :half].contiguous(), sin[:, :half].contiguous())
        return DecodeState(keys, values, conv, ssm, cache.length, capacity, rope)

    @torch.no_grad()
    def step(self, tokens: torch.Tensor, state: DecodeState) -> torch.Tensor:
        """tokens (batch,) -> next-token logits (batch, vocab); advances `state` by one token."""
        if state.length >= state.capacity:
            raise ValueError(f"the decode state holds {state.capacity} tokens; start it with a larger max_new_tokens")
        c = self.config
        pos = state.length
        x = F.embedding(tokens, self.embed)
        batch = x.shape[0]
        freqs = state.rope[pos] if state.rope is not None else None
        for i, block in enumerate(self.blocks):
            h = F.rms_norm(x, (x.shape[-1],), None, block.norm_eps)
            parts = torch.matmul(h, block.w_in).split(block.sizes, dim=-1)
            mixed = []
            if c.uses_mamba:
                z, xbc, dt = parts[-3:]
                mixed.append(self._mamba(block, state, i, z, xbc, dt, batch))
            if c.uses_attention:
                mixed.append(self._attention(state, i, parts[0], parts[1], freqs, pos, batch))
            x = torch.addmm(x, mixed[0] if len(mixed) == 1 else torch.cat(mixed, dim=-1), block.w_out)
            gate, up = torch.matmul(F.rms_norm(x, (x.shape[-1],), None, block.norm_eps), block.w_gate_up).chunk(2, -1)
            x = torch.addmm(x, F.silu(gate).mul_(up), block.w_down)
        state.length += 1
        return torch.matmul(F.rms_norm(x, (x.shape[-1],), None, self.final_eps), self.head_t)

    def _mamba(self, block: _Block, state: DecodeState, i: int, z, xbc, dt, batch: int) -> torch.Tensor:
        c = self.config
        conv, ssm = state.conv[i], state.ssm[i]  # ssm: (b, heads, p, n)
        assert conv is not None and ssm is not None, "a Mamba block's decode state"
        window = torch.cat([conv, xbc[..., None]], dim=-1)  # (b, conv_dim, width)
        state.conv[i] = window[..., 1:]
        xbc = F.silu(torch.linalg.vecdot(window, block.conv_weight) + block.conv_bias)
        heads_per_group = c.ssm_heads // c.ssm_groups
        xs, B, C = xbc.split([c.ssm_dim, c.ssm_groups * c.ssm_state, c.ssm_groups * c.ssm_state], dim=-1)
        dt = F.softplus(dt.float() + block.dt_bias)  # (b, heads)
        if c.dt_limit != (0.0, math.inf):  # softplus is already >= 0
            dt = dt.clamp(*c.dt_limit)
        ssm.mul_(torch.exp(dt * block.A)[..., None, None])
        xs = xs.float().view(batch, c.ssm_heads, c.ssm_head_dim)
        grouped = ssm.view(batch, c.ssm_groups, heads_per_group * c.ssm_head_dim, c.ssm_state)
        dtx = (dt[..., None] * xs).view(batch, c.ssm_groups, heads_per_group * c.ssm_head_dim, 1)
        grouped.addcmul_(dtx, B.float().view(batch, c.ssm_groups, 1, c.ssm_state))
        y = torch.matmul(grouped, C.float().view(batch, c.ssm_groups, c.ssm_state, 1))
        y = torch.addcmul(y.view(batch, c.ssm_heads, c.ssm_head_dim), xs, block.D[:, None]).view(batch, c.ssm_dim)
        y = y.to(z.dtype)
        if self.config.ssm_norm:
            groups = c.ssm_groups
            if not c.ssm_norm_before_gate:
                y = y * F.silu(z)
            y = F.rms_norm(y.view(batch, groups, -1), (c.ssm_dim // groups,), None, c.rms_eps).view(batch, -1)
            if c.ssm_norm_before_gate:
                y = y * F.silu(z)
            return y
        return y * F.silu(z)

    def _attention(self, state: DecodeState, i: int, qk, v, freqs, pos: int, batch: int) -> torch.Tensor:
        c = self.config
        heads, kv_heads, head_dim = c.num_heads, c.num_kv_heads, c.head_dim
        rotated = torch.view_as_complex(qk.float().reshape(batch, heads + kv_heads, head_dim // 2, 2).contiguous())
        rotated = torch.view_as_real(rotated * freqs).view(batch, heads + kv_heads, head_dim).to(qk.dtype)
        keys, values = state.keys[i], state.values[i]
        assert keys is not None and values is not None, "an attention block's decode state"
        keys[:, :, pos] = rotated[:, heads:]
        values[:, :, pos] = v.view(batch, kv_heads, head_dim)
        q = rotated[:, :heads].view(batch, kv_heads, heads // kv_heads, head_dim)
        scores = torch.matmul(q, keys[:, :, : pos + 1].transpose(-1, -2))  # (b, kv, groups, length)
        out = torch.matmul(torch.softmax(scores.float(), dim=-1).to(q.dtype), values[:, :, : pos + 1])
        return out.view(batch, heads * head_dim)
