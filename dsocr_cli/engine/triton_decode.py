"""Paged decode attention in Triton: one query token per sequence, reading only its valid keys.

Programs run over (sequence, head, split): each split walks its share of the sequence's pages
through the block table with an online softmax in fp32 and leaves a partial result (running max,
sum of weights, weighted values); the partials are then merged (flash-decoding). A full batch has
hundreds of sequences x 10 heads, enough programs without splitting; a single page would give the
GPU 10 programs, so small batches split each sequence's pages across many programs.
"""
from __future__ import annotations

import math

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the engine uses the gather path instead
    triton = None

TARGET_PROGRAMS = 264  # two per streaming multiprocessor on an H100/H200
MAX_SPLITS = 16


def triton_available() -> bool:
    return triton is not None


def splits_for(rows: int, heads: int) -> int:
    """How many programs share one sequence's pages: enough to fill the GPU at small batches."""
    return max(1, min(MAX_SPLITS, TARGET_PROGRAMS // (rows * heads)))


if triton is not None:
    @triton.jit
    def _paged_decode_kernel(q_ptr, k_ptr, v_ptr, max_ptr, sum_ptr, acc_ptr, tables_ptr, lengths_ptr,
                             splits, stride_qb, stride_qh, stride_kp, stride_kt, stride_kh, stride_tb,
                             PAGE: tl.constexpr, DIM: tl.constexpr, SCALE: tl.constexpr):
        b = tl.program_id(0)
        h = tl.program_id(1)
        split = tl.program_id(2)
        heads = tl.num_programs(1)
        length = tl.load(lengths_ptr + b)
        pages = tl.cdiv(length, PAGE)
        share = tl.cdiv(pages, splits)
        first = split * share
        last = tl.minimum(first + share, pages)
        dims = tl.arange(0, DIM)
        rows = tl.arange(0, PAGE)
        q = tl.load(q_ptr + b * stride_qb + h * stride_qh + dims).to(tl.float32) * SCALE
        m = tl.full((), float("-inf"), tl.float32)
        total = tl.zeros((), tl.float32)
        acc = tl.zeros((DIM,), tl.float32)
        for p in range(first, last):
            page = tl.load(tables_ptr + b * stride_tb + p).to(tl.int64)
            valid = p * PAGE + rows < length
            offsets = page * stride_kp + rows[:, None] * stride_kt + h * stride_kh + dims[None, :]
            k = tl.load(k_ptr + offsets, mask=valid[:, None], other=0.0).to(tl.float32)
            scores = tl.where(valid, tl.sum(k * q[None, :], axis=1), float("-inf"))
            m_new = tl.maximum(m, tl.max(scores, axis=0))
            p_weights = tl.exp(scores - m_new)
            alpha = tl.exp(m - m_new)
            v = tl.load(v_ptr + offsets, mask=valid[:, None], other=0.0).to(tl.float32)
            acc = acc * alpha + tl.sum(p_weights[:, None] * v, axis=0)
            total = total * alpha + tl.sum(p_weights, axis=0)
            m = m_new
        slot = (b * heads + h) * splits + split
        tl.store(max_ptr + slot, m)
        tl.store(sum_ptr + slot, total)
        tl.store(acc_ptr + slot * DIM + dims, acc)


def paged_decode_attention(q: torch.Tensor, k_pages: torch.Tensor, v_pages: torch.Tensor,
                           block_tables: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """q: B x heads x D; k/v_pages: pages x PAGE x heads x D; block_tables: B x max_pages (int32);
    lengths: B. Returns B x heads x D."""
    b, heads, dim = q.shape
    splits = splits_for(b, heads)
    q = q.contiguous()
    maxes = torch.empty(b, heads, splits, dtype=torch.float32, device=q.device)
    sums = torch.empty_like(maxes)
    accs = torch.empty(b, heads, splits, dim, dtype=torch.float32, device=q.device)
    _paged_decode_kernel[(b, heads, splits)](
        q, k_pages, v_pages, maxes, sums, accs, block_tables, lengths, splits,
        q.stride(0), q.stride(1), k_pages.stride(0), k_pages.stride(1), k_pages.stride(2),
        block_tables.stride(0), PAGE=k_pages.shape[1], DIM=dim, SCALE=1.0 / math.sqrt(dim))
    # Merge the splits: rescale each to the overall maximum (splits with no pages hold -inf and weigh 0).
    weights = torch.exp(maxes - maxes.amax(dim=-1, keepdim=True))
    out = (accs * weights[..., None]).sum(dim=2) / (sums * weights).sum(dim=-1)[..., None]
    return out.to(q.dtype)
