"""One kernel each for the decoder's small per-token operations on the GPU.

A decode step at a small batch is bounded by how many kernels it launches, not by the bytes it
reads: each RMSNorm was eight torch kernels, each rotary embedding ten, each expert sort eight, for
microseconds of work on a few rows. Each function here does in one Triton kernel what its torch
version beside it does in several, with torch's rounding points written out (each bf16 product
and sum cast to bf16 where torch casts it). Triton may fold such a cast into the sum that follows,
sums run in another order, and exp and rsqrt are the GPU's fast fp32 ones, so results are within
rounding of torch's in fp32 and within one rounding step in bf16 (tests/test_fused.py).
The torch version is the reference: it runs on the CPU, under torch.compile (Inductor fuses it
itself), for shapes a kernel is not made for, and wherever `use_kernels(False)` says so (tests).
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

try:
    import triton
    import triton.language as tl

    from .triton_dot import dot
except ImportError:  # CPU-only installs run the torch versions
    triton = None

ROUTE_BLOCK = 64   # hidden sizes the router kernel walks in blocks of
SORT_BLOCK = 128   # expert picks a sorting program takes
MAX_SORTED = 64 * SORT_BLOCK  # picks (tokens x top-k) the kernels sort: 1,365 rows of 6; torch's sort beyond
_enabled = True


@contextlib.contextmanager
def use_kernels(enabled: bool):
    """Within the block, run the kernels (True) or the torch versions (False) on CUDA tensors."""
    global _enabled
    before, _enabled = _enabled, enabled
    try:
        yield
    finally:
        _enabled = before


def _kernels_for(x: torch.Tensor) -> bool:
    return _enabled and triton is not None and x.is_cuda and not torch.compiler.is_compiling()


# ---- RMSNorm, optionally after the residual add --------------------------------------------------

def rms_norm_reference(x, weight, eps, residual=None):
    if residual is not None:
        x = x + residual
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    normed = weight * x32.to(x.dtype)
    return normed if residual is None else (normed, x)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None):
    """weight * normalise(x) in fp32, cast back; with `residual`, of x + residual, returned beside it."""
    width = x.shape[-1]
    if not (_kernels_for(x) and x.is_contiguous() and (residual is None or residual.is_contiguous())
            and weight.dtype == x.dtype):
        return rms_norm_reference(x, weight, eps, residual)
    rows = x.numel() // width
    normed = torch.empty_like(x)
    summed = torch.empty_like(x) if residual is not None else x
    _rms_norm_kernel[(rows,)](x, residual if residual is not None else x, summed, weight, normed, width, eps,
                              HAS_RESIDUAL=residual is not None, BLOCK=triton.next_power_of_2(width))
    return normed if residual is None else (normed, summed)


# ---- SwiGLU's gate ------------------------------------------------------------------------------

def silu_mul_reference(gate_up):
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up for gate_up = [gate | up] along the last axis."""
    if not (_kernels_for(gate_up) and gate_up.is_contiguous()):
        return silu_mul_reference(gate_up)
    width = gate_up.shape[-1] // 2
    out = gate_up.new_empty(*gate_up.shape[:-1], width)
    rows = gate_up.numel() // (2 * width)
    block = min(1024, triton.next_power_of_2(width))
    _silu_mul_kernel[(rows, triton.cdiv(width, block))](gate_up, out, width, BLOCK=block)
    return out


# ---- rotary embedding of queries and keys -------------------------------------------------------

def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: B x heads x T x D; cos/sin: B x T x D (rotate-half convention)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos[:, None] + rotated * sin[:, None]


def rotary_qkv_reference(qkv, cos, sin, heads):
    b, t, _ = qkv.shape
    q, k, v = qkv.view(b, t, 3, heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
    return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v


def rotary_qkv(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, heads: int):
    """B x T x 3*hidden projections -> q, k rotated (B x heads x T x D, rotate-half convention) and v
    (a view); cos/sin: B x T x D."""
    if not (_kernels_for(qkv) and qkv.is_contiguous() and cos.is_contiguous() and sin.is_contiguous()):
        return rotary_qkv_reference(qkv, cos, sin, heads)
    b, t, width = qkv.shape
    dim = width // (3 * heads)
    q = qkv.new_empty(b, heads, t, dim)
    k = torch.empty_like(q)
    _rotary_kernel[(b * t, heads)](qkv, cos, sin, q, k, t, heads, HALF=dim // 2)
    v = qkv.view(b, t, 3, heads, dim)[:, :, 2].transpose(1, 2)
    return q, k, v


# ---- the routed experts: choice, sort and sum ----------------------------------------------------

def route_reference(x, weight, k, normalize, scale):
    scores = F.linear(x.float(), weight.float()).softmax(dim=-1)
    weights, idx = torch.topk(scores, k, dim=-1, sorted=False)
    if normalize:
        weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
    return idx, weights * scale


def route(x: torch.Tensor, weight: torch.Tensor, k: int, normalize: bool, scale: float):
    """Each of the N x H tokens' top-k experts by softmax of fp32 router scores, and their weights
    (optionally renormalised to sum to 1, then scaled): N x k each, best first in the kernel."""
    n, width = x.shape
    experts = weight.shape[0]
    if not (_kernels_for(x) and x.is_contiguous() and weight.is_contiguous() and width % ROUTE_BLOCK == 0
            and experts <= 256 and k <= experts):
        return route_reference(x, weight, k, normalize, scale)
    idx = torch.empty(n, k, dtype=torch.int64, device=x.device)
    weights = torch.empty(n, k, dtype=torch.float32, device=x.device)
    _route_kernel[(triton.cdiv(n, 16),)](x, weight, idx, weights, n, width, experts, float(scale), K=k,
                                         EXPERTS=max(16, triton.next_power_of_2(experts)),
                                         NORMALIZE=normalize, IEEE=x.dtype == torch.float32, BLOCK_T=16,
                                         BLOCK_H=ROUTE_BLOCK)
    return idx, weights


def sort_by_expert_reference(expert_idx, experts):
    n, k = expert_idx.shape
    flat = expert_idx.reshape(-1)
    order = flat.argsort(stable=True)
    slot = torch.empty_like(order)
    slot[order] = torch.arange(order.numel(), device=order.device)
    # counts by scatter-add, not bincount: bincount asks the host for the maximum (a sync)
    counts = torch.zeros(experts, dtype=torch.int32, device=flat.device)
    ends = counts.scatter_add_(0, flat, torch.ones_like(flat, dtype=torch.int32)).cumsum(0).to(torch.int32)
    return order // k, slot, ends


def sort_by_expert(expert_idx: torch.Tensor, experts: int):
    """The N x k picks ordered by expert (stable): for each sorted row its token, for each pick its
    sorted row, and where each expert's rows end (int32, as the grouped GEMM takes them). Two
    kernels over blocks of picks: each block counts its picks per expert, then places them after
    every expert before theirs and every earlier block's picks of the same expert."""
    picks = expert_idx.numel()
    if not (_kernels_for(expert_idx) and picks <= MAX_SORTED and experts <= 256 and expert_idx.is_contiguous()):
        return sort_by_expert_reference(expert_idx, experts)
    blocks = triton.cdiv(picks, SORT_BLOCK)
    width = triton.next_power_of_2(experts)
    counts = torch.empty(blocks, width, dtype=torch.int32, device=expert_idx.device)
    token = torch.empty(picks, dtype=torch.int64, device=expert_idx.device)
    slot = torch.empty_like(token)
    ends = torch.empty(experts, dtype=torch.int32, device=expert_idx.device)
    _count_kernel[(blocks,)](expert_idx, counts, picks, EXPERTS=width, BLOCK=SORT_BLOCK)
    _place_kernel[(blocks,)](expert_idx, counts, token, slot, ends, picks, blocks, experts, K=expert_idx.shape[1],
                             EXPERTS=width, BLOCK=SORT_BLOCK, BLOCKS=triton.next_power_of_2(blocks))
    return token, slot, ends


def combine_experts_reference(out, slot, weights, shared):
    n, k = weights.shape
    return (out[slot].view(n, k, -1).float() * weights[..., None]).sum(dim=1).to(out.dtype) + shared


def combine_experts(out: torch.Tensor, slot: torch.Tensor, weights: torch.Tensor, shared: torch.Tensor):
    """Each token's k expert outputs (rows `slot` of out) summed with its routing weights in fp32,
    cast, plus the shared experts' output."""
    if not (_kernels_for(out) and out.is_contiguous() and shared.is_contiguous() and weights.is_contiguous()):
        return combine_experts_reference(out, slot, weights, shared)
    n, k = weights.shape
    width = out.shape[-1]
    result = torch.empty_like(shared)
    block = min(1024, triton.next_power_of_2(width))
    _combine_kernel[(n, triton.cdiv(width, block))](out, slot, weights, shared, result, width, K=k, BLOCK=block)
    return result


if triton is not None:
    @triton.jit
    def _rms_norm_kernel(x_ptr, res_ptr, sum_ptr, w_ptr, out_ptr, width, eps,
                         HAS_RESIDUAL: tl.constexpr, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64) * width
        cols = tl.arange(0, BLOCK)
        mask = cols < width
        x = tl.load(x_ptr + row + cols, mask=mask, other=0.0)
        if HAS_RESIDUAL:
            x = (x.to(tl.float32) + tl.load(res_ptr + row + cols, mask=mask, other=0.0).to(tl.float32)).to(x.dtype)
            tl.store(sum_ptr + row + cols, x, mask=mask)
        x32 = x.to(tl.float32)
        scale = tl.math.rsqrt(tl.sum(x32 * x32, axis=0) / width + eps)
        normed = (x32 * scale).to(x.dtype)
        w = tl.load(w_ptr + cols, mask=mask, other=0.0)
        tl.store(out_ptr + row + cols, (w.to(tl.float32) * normed.to(tl.float32)).to(x.dtype), mask=mask)

    @triton.jit
    def _silu_mul_kernel(gu_ptr, out_ptr, width, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        mask = cols < width
        gate = tl.load(gu_ptr + row * 2 * width + cols, mask=mask, other=0.0)
        up = tl.load(gu_ptr + row * 2 * width + width + cols, mask=mask, other=0.0)
        g = gate.to(tl.float32)
        silu = (g / (1.0 + tl.exp(-g))).to(gate.dtype)
        tl.store(out_ptr + row * width + cols, (silu.to(tl.float32) * up.to(tl.float32)).to(gate.dtype), mask=mask)

    @triton.jit
    def _rotate_half(src, dst, c1, c2, s1, s2, HALF: tl.constexpr):
        """dst = src * cos + rotate_half(src) * sin, each product and the sum rounded as torch rounds."""
        cols = tl.arange(0, HALF)
        x1 = tl.load(src + cols)
        x2 = tl.load(src + HALF + cols)
        a1, a2 = x1.to(tl.float32), x2.to(tl.float32)
        out1 = ((a1 * c1).to(x1.dtype).to(tl.float32) + (-a2 * s1).to(x1.dtype).to(tl.float32)).to(x1.dtype)
        out2 = ((a2 * c2).to(x1.dtype).to(tl.float32) + (a1 * s2).to(x1.dtype).to(tl.float32)).to(x1.dtype)
        tl.store(dst + cols, out1)
        tl.store(dst + HALF + cols, out2)

    @triton.jit
    def _rotary_kernel(qkv_ptr, cos_ptr, sin_ptr, q_ptr, k_ptr, tokens, heads, HALF: tl.constexpr):
        bt = tl.program_id(0).to(tl.int64)   # batch row * tokens + token
        h = tl.program_id(1)
        dim = 2 * HALF
        cols = tl.arange(0, HALF)
        c1 = tl.load(cos_ptr + bt * dim + cols).to(tl.float32)
        c2 = tl.load(cos_ptr + bt * dim + HALF + cols).to(tl.float32)
        s1 = tl.load(sin_ptr + bt * dim + cols).to(tl.float32)
        s2 = tl.load(sin_ptr + bt * dim + HALF + cols).to(tl.float32)
        src = qkv_ptr + bt * 3 * heads * dim + h * dim
        dst = ((bt // tokens * heads + h) * tokens + bt % tokens) * dim
        _rotate_half(src, q_ptr + dst, c1, c2, s1, s2, HALF)
        _rotate_half(src + heads * dim, k_ptr + dst, c1, c2, s1, s2, HALF)

    @triton.jit
    def _route_kernel(x_ptr, w_ptr, idx_ptr, weights_ptr, tokens, width, n_experts, scale, K: tl.constexpr,
                      EXPERTS: tl.constexpr, NORMALIZE: tl.constexpr, IEEE: tl.constexpr, BLOCK_T: tl.constexpr,
                      BLOCK_H: tl.constexpr):
        rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
        valid = rows < tokens
        experts = tl.arange(0, EXPERTS)
        logits = tl.zeros([BLOCK_T, EXPERTS], dtype=tl.float32)
        for start in range(0, width, BLOCK_H):
            cols = start + tl.arange(0, BLOCK_H)
            xs = tl.load(x_ptr + rows[:, None].to(tl.int64) * width + cols[None, :], mask=valid[:, None], other=0.0)
            ws = tl.load(w_ptr + experts[None, :] * width + cols[:, None], mask=experts[None, :] < n_experts, other=0.0)
            logits += dot(xs, ws, IEEE)  # bf16 products are exact in fp32, the sum is fp32
        logits = tl.where(experts[None, :] < n_experts, logits, float("-inf"))  # the block's padding
        peak = tl.max(logits, axis=1)
        p = tl.exp(logits - peak[:, None])
        scores = p / tl.sum(p, axis=1)[:, None]
        total = tl.zeros([BLOCK_T], dtype=tl.float32) + 1.0
        if NORMALIZE:  # a first pass for the chosen scores' sum
            left = scores
            total = tl.zeros([BLOCK_T], dtype=tl.float32)
            for j in tl.static_range(K):
                total += tl.max(left, axis=1)
                left = tl.where(experts[None, :] == tl.argmax(left, axis=1)[:, None], -1.0, left)
            total += 1e-20
        for j in tl.static_range(K):
            best = tl.max(scores, axis=1)
            which = tl.argmax(scores, axis=1)
            tl.store(idx_ptr + rows * K + j, which.to(tl.int64), mask=valid)
            tl.store(weights_ptr + rows * K + j, best / total * scale, mask=valid)
            scores = tl.where(experts[None, :] == which[:, None], -1.0, scores)

    @triton.jit
    def _expert_hits(idx_ptr, block, picks, EXPERTS: tl.constexpr, BLOCK: tl.constexpr):
        """BLOCK x EXPERTS: 1 where a pick of the block went to that expert; and the picks' numbers."""
        offs = block * BLOCK + tl.arange(0, BLOCK)
        e = tl.load(idx_ptr + offs, mask=offs < picks, other=-1)
        return (e[:, None] == tl.arange(0, EXPERTS)[None, :]).to(tl.int32), offs

    @triton.jit
    def _count_kernel(idx_ptr, counts_ptr, picks, EXPERTS: tl.constexpr, BLOCK: tl.constexpr):
        block = tl.program_id(0)
        hits, _ = _expert_hits(idx_ptr, block, picks, EXPERTS, BLOCK)
        tl.store(counts_ptr + block * EXPERTS + tl.arange(0, EXPERTS), tl.sum(hits, axis=0))

    @triton.jit
    def _place_kernel(idx_ptr, counts_ptr, token_ptr, slot_ptr, ends_ptr, picks, blocks, n_experts,
                      K: tl.constexpr, EXPERTS: tl.constexpr, BLOCK: tl.constexpr, BLOCKS: tl.constexpr):
        block = tl.program_id(0)
        experts = tl.arange(0, EXPERTS)
        rows = tl.arange(0, BLOCKS)
        table = tl.load(counts_ptr + rows[:, None] * EXPERTS + experts[None, :], mask=rows[:, None] < blocks, other=0)
        totals = tl.sum(table, axis=0)
        ends = tl.cumsum(totals, axis=0)
        if block == 0:
            tl.store(ends_ptr + experts, ends, mask=experts < n_experts)
        base = ends - totals + tl.sum(tl.where(rows[:, None] < block, table, 0), axis=0)
        hits, offs = _expert_hits(idx_ptr, block, picks, EXPERTS, BLOCK)
        earlier = tl.cumsum(hits, axis=0) - hits
        slot = tl.sum((base[None, :] + earlier) * hits, axis=1)
        mask = offs < picks
        tl.store(slot_ptr + offs, slot.to(tl.int64), mask=mask)
        tl.store(token_ptr + slot, (offs // K).to(tl.int64), mask=mask)

    @triton.jit
    def _combine_kernel(out_ptr, slot_ptr, w_ptr, shared_ptr, result_ptr, width, K: tl.constexpr,
                        BLOCK: tl.constexpr):
        token = tl.program_id(0).to(tl.int64)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        mask = cols < width
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for j in tl.static_range(K):
            row = tl.load(slot_ptr + token * K + j)
            weight = tl.load(w_ptr + token * K + j).to(tl.float32)
            acc += tl.load(out_ptr + row * width + cols, mask=mask, other=0.0).to(tl.float32) * weight
        shared = tl.load(shared_ptr + token * width + cols, mask=mask, other=0.0)
        total = acc.to(shared.dtype).to(tl.float32) + shared.to(tl.float32)
        tl.store(result_ptr + token * width + cols, total.to(shared.dtype), mask=mask)
