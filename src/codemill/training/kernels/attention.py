"""Causal grouped-query attention: torch's scaled_dot_product_attention (which picks its own fused
CPU/CUDA kernel), or flash-attn on CUDA when it imports.

q (batch, heads, q_len, head_dim), k/v (batch, kv_heads, k_len, head_dim). When q_len < k_len
(decoding with a cache) the queries are the last q_len positions.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from codemill.training.kernels.choice import chosen


@functools.lru_cache(maxsize=None)
def _flash():
    """flash-attn, or None (torch's SDPA then picks its own fused kernel); logged once."""
    try:
        from flash_attn import flash_attn_func
    except Exception as err:
        return chosen(
            "attention",
            None,
            f"flash-attn did not import ({type(err).__name__}: {err}); torch's scaled_dot_product_attention instead",
        )
    return chosen("attention", flash_attn_func, "flash-attn 2")


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Output (batch, heads, q_len, head_dim)."""
    q_len, k_len = q.shape[2], k.shape[2]
    if q.is_cuda and q.dtype in (torch.float16, torch.bfloat16):
        flash = _flash()
        if flash is not None:  # flash-attn aligns the causal mask to the bottom right, as we need
            out = flash(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), softmax_scale=scale, causal=True)
            return out.transpose(1, 2)
    if q_len == k_len:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=True)
    # Queries at the end of the keys: each sees every key up to its own position.
    mask = torch.ones(q_len, k_len, dtype=torch.bool, device=q.device).tril(diagonal=k_len - q_len)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=True)
