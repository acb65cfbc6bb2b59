"""The Mamba-2 state-space scan (SSD): a chunked pure-torch reference, a naive sequential twin for
tests and single-step decoding, and mamba-ssm's Triton kernel when it imports and tensors are on
CUDA.

Shapes (one convention for every function here):
    x   (batch, length, heads, head_dim)   input
    dt  (batch, length, heads)             step sizes, already through bias + softplus + clamp
    A   (heads,)                           negative decay rates (-exp(A_log))
    B,C (batch, length, groups, state)     input / output projections, shared by heads/groups heads
    D   (heads,) or None                   skip connection
    initial_state, final state (batch, heads, head_dim, state)

The recurrence, per head:  h_t = exp(dt_t * A) h_{t-1} + dt_t * B_t x_t^T,   y_t = C_t h_t + D x_t.

The chunked form is the einsum formulation of mamba-ssm's `ssd_minimal_discrete` (Dao & Gu 2024,
listing 1): within a chunk the output is a masked "attention" C B^T weighted by the decays, between
chunks the states are carried by a small recurrence over chunk boundaries. Memory is
O(batch * length * chunk * heads) for the intra-chunk weights, not the O(length^2) of a naive
quadratic form, and every step is a batched matmul, which is what a CPU does well.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from codemill.training.kernels.choice import chosen


def segment_sum(a: torch.Tensor) -> torch.Tensor:
    """out[..., i, j] = a[..., j+1] + ... + a[..., i] for j <= i, -inf above the diagonal.

    Built from a masked cumulative sum rather than a difference of two cumulative sums, which
    cancels catastrophically in float32 over long chunks."""
    size = a.shape[-1]
    expanded = a[..., None].expand(*a.shape, size)  # [..., i, j] = a[i]
    below = torch.tril(torch.ones(size, size, dtype=torch.bool, device=a.device), diagonal=-1)
    sums = torch.cumsum(expanded.masked_fill(~below, 0), dim=-2)
    on_or_below = torch.tril(torch.ones(size, size, dtype=torch.bool, device=a.device), diagonal=0)
    return sums.masked_fill(~on_or_below, float("-inf"))


def fp32_island(function):
    """Run `function` with autocast off: under bf16 autocast its einsums would otherwise run as
    bf16 matmuls (an error of 0.23 on outputs up to 49 was measured on the scan), and the state it
    returns must stay float32 for decoding."""

    @functools.wraps(function)
    def island(*args, **kwargs):
        with torch.autocast("cuda", enabled=False), torch.autocast("cpu", enabled=False):
            return function(*args, **kwargs)

    return island


@fp32_island
def ssd_chunked_ref(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk_size: int,
    D: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(y like x, final state). Computes in float32 (or float64 if given) under any autocast and
    returns x's dtype, and the final state in float32 (float64)."""
    batch, length, heads, head_dim = x.shape
    groups, state = B.shape[2], B.shape[3]
    if heads % groups:
        raise ValueError(f"SSD: {heads} heads cannot share {groups} groups of B/C")
    per_group = heads // groups
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    pad = (-length) % chunk_size
    chunks = (length + pad) // chunk_size

    def chunked(t: torch.Tensor) -> torch.Tensor:  # (b, l, ...) -> (b, c, chunk, ...), zero-padded
        t = t.to(compute)
        if pad:
            t = F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad))
        return t.reshape(batch, chunks, chunk_size, *t.shape[2:])

    # Padding positions get dt = 0: no decay and no input, so the final state is exact.
    xs = chunked(x.to(compute) * dt.to(compute)[..., None])  # discretised input, (b, c, l, h, p)
    a = chunked(A.to(compute) * dt)  # log decay per step, (b, c, l, h)
    Bc = chunked(B).reshape(batch, chunks, chunk_size, groups, 1, state)
    Cc = chunked(C).reshape(batch, chunks, chunk_size, groups, 1, state)
    xs = xs.reshape(batch, chunks, chunk_size, groups, per_group, head_dim)

    a = a.permute(0, 3, 1, 2)  # (b, h, c, l)
    a_cumsum = torch.cumsum(a, dim=-1)
    a_g = lambda t: t.reshape(batch, groups, per_group, *t.shape[2:])  # noqa: E731  split heads into groups

    # 1. Within each chunk: y_l = sum_{s <= l} (C_l . B_s) exp(a_{s+1} + ... + a_l) x_s. The decay is
    # exp(cumsum_l - cumsum_s), as mamba-ssm's fp32 kernels compute it: one subtraction and one exp
    # over (l, s) instead of segment_sum's masked cumulative sum (a chunk spans at most chunk_size
    # steps, so the cancellation stays within float32's reach).
    scores = torch.einsum("bclgzn,bcsgzn->bcgls", Cc, Bc)  # (b, c, g, l, s), shared by a group's heads
    causal = torch.ones(chunk_size, chunk_size, dtype=torch.bool, device=x.device).tril()
    decay = (a_cumsum[..., :, None] - a_cumsum[..., None, :]).masked_fill(~causal, float("-inf")).exp()
    weights = scores[:, :, :, None] * a_g(decay).permute(0, 3, 1, 2, 4, 5)  # (b, c, g, hg, l, s)
    y_diag = torch.einsum("bcgzls,bcsgzp->bclgzp", weights, xs)

    # 2. The state each chunk leaves behind, from its own inputs only.
    decay_to_end = torch.exp(a_cumsum[..., -1:] - a_cumsum)  # (b, h, c, l)
    states = torch.einsum("bclgyn,bgzcl,bclgzp->bcgzpn", Bc, a_g(decay_to_end), xs)

    # 3. Carry states across chunk boundaries (a recurrence over chunks, done as one masked product).
    if initial_state is None:
        start = torch.zeros_like(states[:, :1])
    else:
        start = initial_state.to(compute).reshape(batch, 1, groups, per_group, head_dim, state)
    states = torch.cat([start, states], dim=1)  # (b, c+1, g, hg, p, n)
    chunk_decay = torch.exp(segment_sum(F.pad(a_cumsum[..., -1], (1, 0))))  # (b, h, c+1, c+1)
    carried = torch.einsum("bgzij,bjgzpn->bigzpn", a_g(chunk_decay), states)
    states, final = carried[:, :-1], carried[:, -1]

    # 4. Each chunk's output from the state it starts with.
    decay_from_start = torch.exp(a_cumsum)  # (b, h, c, l)
    y_off = torch.einsum("bclgyn,bcgzpn,bgzcl->bclgzp", Cc, states, a_g(decay_from_start))

    y = (y_diag + y_off).reshape(batch, chunks * chunk_size, heads, head_dim)[:, :length]
    if D is not None:
        y = y + x.to(compute) * D.to(compute)[:, None]
    return y.to(x.dtype), final.reshape(batch, heads, head_dim, state)


@fp32_island
def ssd_step_ref(
    state: torch.Tensor,
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of the recurrence: x (b, h, p), dt (b, h), B/C (b, g, n), state (b, h, p, n).
    Returns (y (b, h, p), new state)."""
    heads, groups = x.shape[1], B.shape[1]
    Bh = B.repeat_interleave(heads // groups, dim=1).to(state.dtype)  # (b, h, n)
    Ch = C.repeat_interleave(heads // groups, dim=1).to(state.dtype)
    dt = dt.to(state.dtype)
    decay = torch.exp(dt * A.to(state.dtype))[..., None, None]  # (b, h, 1, 1)
    state = state * decay + (dt[..., None] * x.to(state.dtype))[..., None] * Bh[:, :, None, :]
    y = torch.einsum("bhpn,bhn->bhp", state, Ch)
    if D is not None:
        y = y + x.to(state.dtype) * D.to(state.dtype)[:, None]
    return y.to(x.dtype), state


def ssd_sequential_ref(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The recurrence one step at a time: slow, obviously right; the parity tests' ground truth."""
    batch, length, heads, head_dim = x.shape
    state = (
        torch.zeros(
            batch,
            heads,
            head_dim,
            B.shape[-1],
            dtype=torch.float64 if x.dtype == torch.float64 else torch.float32,
            device=x.device,
        )
        if initial_state is None
        else initial_state.clone()
    )
    ys = []
    for t in range(length):
        y, state = ssd_step_ref(state, x[:, t], dt[:, t], A, B[:, t], C[:, t], D)
        ys.append(y)
    return torch.stack(ys, dim=1), state


@functools.lru_cache(maxsize=None)
def _cuda_kernel():
    """mamba-ssm's fused scan, or None; tried once per process, the outcome logged once with its reason."""
    try:
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    except Exception as err:  # not installed, or one of its optional modules broken
        return chosen("SSD scan", None, f"mamba-ssm's Triton kernel did not import ({type(err).__name__}: {err})")
    return chosen("SSD scan", mamba_chunk_scan_combined, "mamba-ssm's Triton kernel (mamba_chunk_scan_combined)")


def ssd(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk_size: int,
    D: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The chunked scan: mamba-ssm's fused Triton kernel on CUDA when installed, else the reference."""
    if x.is_cuda:
        kernel = _cuda_kernel()
        if kernel is not None:
            # dt is already discretised (bias, softplus, clamp applied by the caller).
            return kernel(x, dt, A, B, C, chunk_size, D=D, initial_states=initial_state, return_final_states=True)
    return ssd_chunked_ref(x, dt, A, B, C, chunk_size, D, initial_state)
