"""SAM's attention with the decomposed relative-position bias, fused in one Triton kernel (CUDA).

softmax(q.k_j * scale + rel_h[i, row(j)] + rel_w[i, col(j)]) . v for every query i of a w-wide
token grid: a flash-attention loop (online softmax in fp32) that gathers the two small per-query
bias tables inside the kernel, so the N x N bias is never built and q and k are not widened (the
widened form, sam.py's CPU path, does three times the attention arithmetic and several copies to
build its buffers). Inputs are strided views of the qkv projection; the output is B x N x heads x
D, which the projection reads with no transpose.
"""
from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl

    from .triton_dot import dot
except ImportError:  # CPU-only installs use the widened SDPA form
    triton = None


def fused_available(x: torch.Tensor, head_dim: int) -> bool:
    return triton is not None and x.is_cuda and head_dim >= 16 and head_dim & (head_dim - 1) == 0


if triton is not None:
    @triton.jit
    def _rel_attention_kernel(q_ptr, k_ptr, v_ptr, rh_ptr, rw_ptr, o_ptr, n,
                              sq_b, sq_n, sq_h, sk_b, sk_n, sk_h, sv_b, sv_n, sv_h,
                              srh_b, srh_h, srh_n, srw_b, srw_h, srw_n, so_b, so_n, so_h,
                              GW: tl.constexpr, D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                              SCALE: tl.constexpr, IEEE: tl.constexpr):
        block = tl.program_id(0)
        head = tl.program_id(1)
        b = tl.program_id(2)
        queries = block * BLOCK_M + tl.arange(0, BLOCK_M)
        rows_ok = queries < n
        dims = tl.arange(0, D)
        q = tl.load(q_ptr + b * sq_b + head * sq_h + queries[:, None] * sq_n + dims[None, :],
                    mask=rows_ok[:, None], other=0.0)
        rel_h = rh_ptr + b * srh_b + head * srh_h + queries[:, None] * srh_n
        rel_w = rw_ptr + b * srw_b + head * srw_h + queries[:, None] * srw_n
        m = tl.full((BLOCK_M,), float("-inf"), tl.float32)
        total = tl.zeros((BLOCK_M,), tl.float32)
        acc = tl.zeros((BLOCK_M, D), tl.float32)
        for start in range(0, n, BLOCK_N):
            keys = start + tl.arange(0, BLOCK_N)
            cols_ok = keys < n
            k = tl.load(k_ptr + b * sk_b + head * sk_h + keys[:, None] * sk_n + dims[None, :],
                        mask=cols_ok[:, None], other=0.0)
            scores = dot(q, tl.trans(k), IEEE) * SCALE
            both = rows_ok[:, None] & cols_ok[None, :]
            bias = (tl.load(rel_h + (keys // GW)[None, :], mask=both, other=0.0).to(tl.float32)
                    + tl.load(rel_w + (keys % GW)[None, :], mask=both, other=0.0).to(tl.float32))
            scores = tl.where(cols_ok[None, :], scores + bias, float("-inf"))
            m_new = tl.maximum(m, tl.max(scores, axis=1))
            weights = tl.exp(scores - m_new[:, None])
            alpha = tl.exp(m - m_new)
            v = tl.load(v_ptr + b * sv_b + head * sv_h + keys[:, None] * sv_n + dims[None, :],
                        mask=cols_ok[:, None], other=0.0)
            acc = acc * alpha[:, None] + dot(weights.to(v.dtype), v, IEEE)
            total = total * alpha + tl.sum(weights, axis=1)
            m = m_new
        out = acc / total[:, None]
        tl.store(o_ptr + b * so_b + head * so_h + queries[:, None] * so_n + dims[None, :],
                 out.to(o_ptr.dtype.element_ty), mask=rows_ok[:, None])


def rel_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rel_h: torch.Tensor, rel_w: torch.Tensor,
                  grid_w: int) -> torch.Tensor:
    """q, k, v: B x N x heads x D (last dim contiguous); rel_h: B x heads x N x grid_h and rel_w:
    B x heads x N x grid_w (last dim contiguous), unscaled. Returns B x N x heads x D."""
    b, n, heads, dim = q.shape
    out = torch.empty(b, n, heads, dim, dtype=q.dtype, device=q.device)
    block_m = 128 if n > 256 else 64
    grid = (triton.cdiv(n, block_m), heads, b)
    _rel_attention_kernel[grid](
        q, k, v, rel_h, rel_w, out, n,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), rel_h.stride(0), rel_h.stride(1), rel_h.stride(2),
        rel_w.stride(0), rel_w.stride(1), rel_w.stride(2), out.stride(0), out.stride(1), out.stride(2),
        GW=grid_w, D=dim, BLOCK_M=block_m, BLOCK_N=64, SCALE=dim ** -0.5, IEEE=q.dtype == torch.float32,
        num_warps=8 if block_m == 128 else 4, num_stages=2)
    return out
