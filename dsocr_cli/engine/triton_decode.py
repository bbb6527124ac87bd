"""Paged decode attention in Triton: one query token per sequence, reading only its valid keys.

Programs run over (head, sequence, split): each split walks its share of the sequence's keys in
blocks of BLOCK tokens (page ids gathered per token through the block table) with an online
softmax in fp32. Scores and the weighted sum of values are tensor-core dots of a 16-row query tile
(row 0 is the query, the rest zeros), so Triton software-pipelines the key/value loads through
shared memory: several blocks are in flight per program, which is what a memory-bound kernel
needs. With one split the program writes the output; with several (small batches, flash-decoding)
each split leaves a partial (running max, sum of weights, weighted values) and a second kernel
merges them.
Heads of one token sit next to each other in the cache, so heads are the fastest grid axis.
"""
from __future__ import annotations

import math

import torch

try:
    import triton
    import triton.language as tl

    from ..model.triton_dot import dot
except ImportError:  # CPU-only installs: the engine uses the gather path instead
    triton = None

TARGET_PROGRAMS = 264  # two per streaming multiprocessor on an H100/H200
MAX_SPLITS = 16
# (tokens per iteration, warps, pipeline depth), fastest on an H200 (scripts/gpu_probe.py): 4.3 TB/s at
# 256 rows x 1,400 tokens with one split a sequence; 8 warps for the short walks of many splits
WHOLE_CONFIG, SPLIT_CONFIG = (128, 4, 3), (64, 8, 3)


def triton_available() -> bool:
    return triton is not None


def splits_for(rows: int, heads: int) -> int:
    """How many programs share one sequence's keys: enough to fill the GPU at small batches."""
    return max(1, min(MAX_SPLITS, TARGET_PROGRAMS // (rows * heads)))


if triton is not None:
    @triton.jit
    def _paged_decode_kernel(q_ptr, k_ptr, v_ptr, out_ptr, max_ptr, sum_ptr, acc_ptr, tables_ptr, lengths_ptr,
                             splits, stride_qb, stride_qh, stride_kp, stride_kt, stride_kh, stride_tb,
                             PAGE: tl.constexpr, DIM: tl.constexpr, BLOCK: tl.constexpr, SCALE: tl.constexpr,
                             PARTIAL: tl.constexpr, IEEE: tl.constexpr):
        h = tl.program_id(0)
        b = tl.program_id(1)
        split = tl.program_id(2)
        heads = tl.num_programs(0)
        length = tl.load(lengths_ptr + b)
        blocks = tl.cdiv(length, BLOCK)
        share = tl.cdiv(blocks, splits)
        first = split * share
        last = tl.minimum(first + share, blocks)
        dims = tl.arange(0, DIM)
        cols = tl.arange(0, BLOCK)
        q = tl.load(q_ptr + b * stride_qb + h * stride_qh + dims)
        q16 = tl.where(tl.arange(0, 16)[:, None] == 0, q[None, :], tl.zeros((16, DIM), q.dtype))
        m = tl.full((16,), float("-inf"), tl.float32)
        total = tl.zeros((16,), tl.float32)
        acc = tl.zeros((16, DIM), tl.float32)
        for blk in range(first, last):
            tokens = blk * BLOCK + cols
            valid = tokens < length
            page = tl.load(tables_ptr + b * stride_tb + tokens // PAGE, mask=valid, other=0).to(tl.int64)
            offsets = page[:, None] * stride_kp + (tokens % PAGE)[:, None] * stride_kt + h * stride_kh + dims[None, :]
            k = tl.load(k_ptr + offsets, mask=valid[:, None], other=0.0).to(q.dtype)  # fp8 pages widen here
            scores = dot(q16, tl.trans(k), IEEE) * SCALE
            scores = tl.where(valid[None, :], scores, float("-inf"))
            m_new = tl.maximum(m, tl.max(scores, axis=1))
            weights = tl.exp(scores - m_new[:, None])
            alpha = tl.exp(m - m_new)
            v = tl.load(v_ptr + offsets, mask=valid[:, None], other=0.0).to(q.dtype)
            acc = acc * alpha[:, None] + dot(weights.to(v.dtype), v, IEEE)
            total = total * alpha + tl.sum(weights, axis=1)
            m = m_new
        rows = tl.arange(0, 16)
        if PARTIAL:
            slot = (b * heads + h) * splits + split
            tl.store(max_ptr + slot + rows * 0, m, mask=rows == 0)
            tl.store(sum_ptr + slot + rows * 0, total, mask=rows == 0)
            tl.store(acc_ptr + slot * DIM + rows[:, None] * 0 + dims[None, :], acc, mask=rows[:, None] == 0)
        else:
            out = acc / total[:, None]
            tl.store(out_ptr + (b * heads + h) * DIM + rows[:, None] * 0 + dims[None, :],
                     out.to(out_ptr.dtype.element_ty), mask=rows[:, None] == 0)

    @triton.jit
    def _merge_splits_kernel(max_ptr, sum_ptr, acc_ptr, out_ptr, splits, DIM: tl.constexpr,
                             SPLITS: tl.constexpr):
        """One (sequence, head): the splits' partials rescaled to their overall maximum and summed
        (a split with no keys holds -inf and weighs 0)."""
        row = tl.program_id(0).to(tl.int64)
        s = tl.arange(0, SPLITS)
        valid = s < splits
        dims = tl.arange(0, DIM)
        m = tl.load(max_ptr + row * splits + s, mask=valid, other=float("-inf"))
        weights = tl.where(valid, tl.exp(m - tl.max(m, axis=0)), 0.0)
        total = tl.sum(tl.load(sum_ptr + row * splits + s, mask=valid, other=0.0) * weights, axis=0)
        acc = tl.load(acc_ptr + (row * splits + s)[:, None] * DIM + dims[None, :], mask=valid[:, None], other=0.0)
        out = tl.sum(acc * weights[:, None], axis=0) / total
        tl.store(out_ptr + row * DIM + dims, out.to(out_ptr.dtype.element_ty))

    @triton.jit
    def _store_kv_kernel(k_ptr, v_ptr, k_pages_ptr, v_pages_ptr, slots_ptr, stride_kn, stride_kh,
                         stride_vn, stride_vh, DIM: tl.constexpr, LIMIT: tl.constexpr):
        """One token's head into its slot, cast to the pages' type (with LIMIT, clamped to +-LIMIT first)."""
        n = tl.program_id(0).to(tl.int64)
        h = tl.program_id(1)
        heads = tl.num_programs(1)
        dims = tl.arange(0, DIM)
        dst = (tl.load(slots_ptr + n).to(tl.int64) * heads + h) * DIM + dims
        k = tl.load(k_ptr + n * stride_kn + h * stride_kh + dims)
        v = tl.load(v_ptr + n * stride_vn + h * stride_vh + dims)
        if LIMIT > 0:
            k = tl.minimum(tl.maximum(k.to(tl.float32), -LIMIT), LIMIT)
            v = tl.minimum(tl.maximum(v.to(tl.float32), -LIMIT), LIMIT)
        tl.store(k_pages_ptr + dst, k.to(k_pages_ptr.dtype.element_ty))
        tl.store(v_pages_ptr + dst, v.to(v_pages_ptr.dtype.element_ty))


def paged_decode_attention(q: torch.Tensor, k_pages: torch.Tensor, v_pages: torch.Tensor,
                           block_tables: torch.Tensor, lengths: torch.Tensor, splits: int | None = None,
                           config: tuple[int, int, int] | None = None) -> torch.Tensor:
    """q: B x heads x D; k/v_pages: pages x PAGE x heads x D; block_tables: B x max_pages (int32);
    lengths: B. Returns B x heads x D. `splits` and `config` (block, warps, stages) are for tuning."""
    b, heads, dim = q.shape
    splits = splits or splits_for(b, heads)
    q = q.contiguous()
    out = torch.empty_like(q)
    partial = splits > 1
    block, warps, stages = config or (SPLIT_CONFIG if partial else WHOLE_CONFIG)
    shape = (b, heads, splits) if partial else (1,)
    maxes = torch.empty(shape, dtype=torch.float32, device=q.device)
    sums = torch.empty_like(maxes)
    accs = torch.empty(*shape, dim, dtype=torch.float32, device=q.device)
    _paged_decode_kernel[(heads, b, splits)](
        q, k_pages, v_pages, out, maxes, sums, accs, block_tables, lengths, splits,
        q.stride(0), q.stride(1), k_pages.stride(0), k_pages.stride(1), k_pages.stride(2),
        block_tables.stride(0), PAGE=k_pages.shape[1], DIM=dim, BLOCK=block, SCALE=1.0 / math.sqrt(dim),
        PARTIAL=partial, IEEE=q.dtype == torch.float32, num_warps=warps, num_stages=stages)
    if partial:
        _merge_splits_kernel[(b * heads,)](maxes, sums, accs, out, splits, DIM=dim,
                                           SPLITS=triton.next_power_of_2(splits))
    return out


def store_kv(k_pages: torch.Tensor, v_pages: torch.Tensor, slots: torch.Tensor, k: torch.Tensor,
             v: torch.Tensor, limit: float = 0.0) -> None:
    """k/v (N x heads x D, any strides) into flat slots page * PAGE + offset of k/v_pages, one kernel;
    with `limit`, values are clamped to +-limit before the cast to the pages' type."""
    n, heads, dim = k.shape
    _store_kv_kernel[(n, heads)](k, v, k_pages, v_pages, slots, k.stride(0), k.stride(1), v.stride(0),
                                 v.stride(1), DIM=dim, LIMIT=limit)
