"""Paged decode attention in Triton: one query token per sequence, reading only its valid keys.

One program per (sequence, head) walks the sequence's pages through its block table with an
online softmax in fp32 (flash-decoding without the split: a batch of pages has hundreds of
sequences x 10 heads, enough programs to fill the GPU).
"""
from __future__ import annotations

import math

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the engine uses the gather path instead
    triton = None


def triton_available() -> bool:
    return triton is not None


if triton is not None:
    @triton.jit
    def _paged_decode_kernel(q_ptr, k_ptr, v_ptr, out_ptr, tables_ptr, lengths_ptr, scale,
                             stride_qb, stride_qh, stride_kp, stride_kt, stride_kh,
                             stride_tb, stride_ob, stride_oh,
                             PAGE: tl.constexpr, DIM: tl.constexpr):
        b = tl.program_id(0)
        h = tl.program_id(1)
        length = tl.load(lengths_ptr + b)
        dims = tl.arange(0, DIM)
        rows = tl.arange(0, PAGE)
        q = tl.load(q_ptr + b * stride_qb + h * stride_qh + dims).to(tl.float32) * scale
        m = tl.full((), float("-inf"), tl.float32)
        total = tl.zeros((), tl.float32)
        acc = tl.zeros((DIM,), tl.float32)
        for start in range(0, length, PAGE):
            page = tl.load(tables_ptr + b * stride_tb + start // PAGE).to(tl.int64)
            valid = start + rows < length
            offsets = page * stride_kp + rows[:, None] * stride_kt + h * stride_kh + dims[None, :]
            k = tl.load(k_ptr + offsets, mask=valid[:, None], other=0.0).to(tl.float32)
            scores = tl.where(valid, tl.sum(k * q[None, :], axis=1), float("-inf"))
            m_new = tl.maximum(m, tl.max(scores, axis=0))
            p = tl.exp(scores - m_new)
            alpha = tl.exp(m - m_new)
            v = tl.load(v_ptr + offsets, mask=valid[:, None], other=0.0).to(tl.float32)
            acc = acc * alpha + tl.sum(p[:, None] * v, axis=0)
            total = total * alpha + tl.sum(p, axis=0)
            m = m_new
        out = acc / total
        tl.store(out_ptr + b * stride_ob + h * stride_oh + dims, out.to(out_ptr.dtype.element_ty))


def paged_decode_attention(q: torch.Tensor, k_pages: torch.Tensor, v_pages: torch.Tensor,
                           block_tables: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """q: B x heads x D; k/v_pages: pages x PAGE x heads x D; block_tables: B x max_pages (int32);
    lengths: B. Returns B x heads x D."""
    b, heads, dim = q.shape
    q = q.contiguous()
    out = torch.empty_like(q)
    _paged_decode_kernel[(b, heads)](
        q, k_pages, v_pages, out, block_tables, lengths, 1.0 / math.sqrt(dim),
        q.stride(0), q.stride(1), k_pages.stride(0), k_pages.stride(1), k_pages.stride(2),
        block_tables.stride(0), out.stride(0), out.stride(1),
        PAGE=k_pages.shape[1], DIM=dim)
    return out
