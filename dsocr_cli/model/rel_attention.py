"""SAM's attention with the decomposed relative-position bias, fused in one Triton kernel (CUDA).

softmax(q.k_j * scale + rel_h[i, row(j)] + rel_w[i, col(j)]) . v for every query i of a token
grid: a flash-attention loop (online softmax in fp32) that never builds the N x N bias, and does
not widen q and k (the widened form, sam.py's CPU path, does three times the attention arithmetic
and several copies to build its buffers). The loop walks the keys a grid row at a time (a few
rows at once for narrow window grids), so the bias needs no gather per key: the column term is the
same every iteration (one tile, read before the loop) and the row term is one value per query and
row. On H200s, SAM's global attention over 8 views of 1024 px took 11.8 ms when the kernel
gathered both terms per key (8.5 times torch's flash attention without bias), 1.38 ms this way (1.6
times).
Inputs are strided views: q, k and v of the qkv projection, and the bias terms of one batched
product of q with both (reversed) tables, `bias_terms`, read diagonally as each query's terms per
key row and column (einsums gathering the tables per query made two copies of q a block). The
output is B x N x heads x D, which the projection reads with no transpose.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .fused import _kernels_for

try:
    import triton
    import triton.language as tl

    from .triton_dot import dot
except ImportError:  # CPU-only installs use the widened SDPA form
    triton = None


def fused_available(x: torch.Tensor, head_dim: int) -> bool:
    return _kernels_for(x) and head_dim >= 16 and head_dim & (head_dim - 1) == 0


def bias_terms(q: torch.Tensor, table_h: torch.Tensor, table_w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """q: B x h x w x heads x D (a view of the projection); table_h: (2h - 1) x D and table_w:
    (2w - 1) x D, the embeddings of the offsets -(h-1) .. h-1 and -(w-1) .. w-1. Returns rel_h
    (B x heads x h x w x h) and rel_w (B x heads x h x w x w), q_i . table[row_i - row_j + h - 1]
    per key row j (and likewise per column), as views of one product P = q . [flip(table_h) |
    flip(table_w)]: reversed, each query's terms for key rows 0 .. h-1 lie side by side in its row
    of P, starting h - 1 - row_i along; so stepping a query row down moves one place less."""
    b, h, w, heads, dim = q.shape
    tables = torch.cat([table_h.flip(0), table_w.flip(0)])
    # zero columns up to a multiple of 8: P's rows start 16-byte aligned, which cuBLAS's fast kernels
    # need (at 2h - 1 + 2w - 1 = 254 columns it ran a kernel for 2-element alignment); the views never
    # read them
    tables = F.pad(tables, (0, 0, 0, -tables.shape[0] % 8))
    width, tokens = tables.shape[0], b * h * w
    rows = q.permute(3, 0, 1, 2, 4).reshape(heads, tokens, dim)  # a view: heads apart by D, tokens by the row
    product = torch.bmm(rows, tables.t().expand(heads, dim, width))  # heads x tokens x width
    image, head = h * w * width, tokens * width
    rel_h = product.as_strided((b, heads, h, w, h), (image, head, w * width - 1, width, 1), h - 1)
    rel_w = product.as_strided((b, heads, h, w, w), (image, head, w * width, width - 1, 1), 2 * h - 1 + w - 1)
    return rel_h, rel_w


if triton is not None:
    @triton.jit
    def _rel_attention_kernel(q_ptr, k_ptr, v_ptr, rh_ptr, rw_ptr, o_ptr, n,
                              sq_b, sq_n, sq_h, sk_b, sk_n, sk_h, sv_b, sv_n, sv_h,
                              srh_b, srh_h, srh_y, srh_x, srw_b, srw_h, srw_y, srw_x, so_b, so_n, so_h,
                              GH: tl.constexpr, GW: tl.constexpr, GWP: tl.constexpr, ROWS: tl.constexpr,
                              D: tl.constexpr, BLOCK_M: tl.constexpr, SCALE: tl.constexpr, IEEE: tl.constexpr):
        BLOCK_N: tl.constexpr = ROWS * GWP  # ROWS grid rows a step, each padded to GWP columns
        block = tl.program_id(0)
        head = tl.program_id(1)
        b = tl.program_id(2)
        queries = block * BLOCK_M + tl.arange(0, BLOCK_M)
        rows_ok = queries < n
        dims = tl.arange(0, D)
        q = tl.load(q_ptr + b * sq_b + head * sq_h + queries[:, None] * sq_n + dims[None, :],
                    mask=rows_ok[:, None], other=0.0)
        query_row, query_col = queries // GW, queries % GW
        rel_h = rh_ptr + b * srh_b + head * srh_h + (query_row * srh_y + query_col * srh_x)[:, None]  # BLOCK_M x 1
        rel_w = rw_ptr + b * srw_b + head * srw_h + (query_row * srw_y + query_col * srw_x)[:, None]
        slot = tl.arange(0, BLOCK_N)
        col, sub = slot % GWP, slot // GWP  # each slot's key column, and its row among the step's ROWS
        col_ok = col < GW
        bias_w = tl.load(rel_w + col[None, :],
                         mask=rows_ok[:, None] & col_ok[None, :], other=0.0).to(tl.float32)
        if ROWS > 1:  # the row term spread over the step's slots by a one-hot product (exact: one term each)
            picks = tl.arange(0, 16)
            spread = (picks[:, None] == sub[None, :]).to(q.dtype)
        m = tl.full((BLOCK_M,), float("-inf"), tl.float32)
        total = tl.zeros((BLOCK_M,), tl.float32)
        acc = tl.zeros((BLOCK_M, D), tl.float32)
        for first_row in range(0, GH, ROWS):
            key_row = first_row + sub
            valid = col_ok & (key_row < GH)
            keys = key_row * GW + col
            k = tl.load(k_ptr + b * sk_b + head * sk_h + keys[:, None] * sk_n + dims[None, :],
                        mask=valid[:, None], other=0.0)
            scores = dot(q, tl.trans(k), IEEE) * SCALE + bias_w
            if ROWS > 1:
                row_terms = tl.load(rel_h + first_row + picks[None, :],
                                    mask=rows_ok[:, None] & (picks < ROWS)[None, :] & (first_row + picks < GH)[None, :],
                                    other=0.0)
                scores += dot(row_terms, spread, IEEE)
            else:
                scores += tl.load(rel_h + first_row, mask=rows_ok[:, None], other=0.0).to(tl.float32)
            scores = tl.where(valid[None, :], scores, float("-inf"))
            m_new = tl.maximum(m, tl.max(scores, axis=1))
            weights = tl.exp(scores - m_new[:, None])
            alpha = tl.exp(m - m_new)
            v = tl.load(v_ptr + b * sv_b + head * sv_h + keys[:, None] * sv_n + dims[None, :],
                        mask=valid[:, None], other=0.0)
            acc = acc * alpha[:, None] + dot(weights.to(v.dtype), v, IEEE)
            total = total * alpha + tl.sum(weights, axis=1)
            m = m_new
        out = acc / total[:, None]
        tl.store(o_ptr + b * so_b + head * so_h + queries[:, None] * so_n + dims[None, :],
                 out.to(o_ptr.dtype.element_ty), mask=rows_ok[:, None])


def rel_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rel_h: torch.Tensor, rel_w: torch.Tensor,
                  config: tuple[int, int, int] | None = None) -> torch.Tensor:
    """q, k, v: B x N x heads x D for an h x w grid (N = h*w); rel_h: B x heads x h x w x h and
    rel_w: B x heads x h x w x w, each query's terms per key row and column, unscaled (any strides:
    bias_terms' views). Last dims contiguous. Returns B x N x heads x D.
    `config` (queries per program, warps, pipeline depth) is for tuning."""
    b, n, heads, dim = q.shape
    grid_h, grid_w = rel_h.shape[2:4]
    rel_h, rel_w = (t if t.stride(-1) == 1 else t.contiguous() for t in (rel_h, rel_w))
    out = torch.empty(b, n, heads, dim, dtype=q.dtype, device=q.device)
    padded_w = max(16, triton.next_power_of_2(grid_w))
    rows = max(1, 64 // padded_w)  # at least 64 keys a step; the one-hot spread covers up to 16 rows
    block_m, warps, stages = config or (64, 4, 3)  # fastest on every SAM shape on an H200 (1024 and 640 views, windows)
    grid = (triton.cdiv(n, block_m), heads, b)
    _rel_attention_kernel[grid](
        q, k, v, rel_h, rel_w, out, n,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), *rel_h.stride()[:4], *rel_w.stride()[:4],
        out.stride(0), out.stride(1), out.stride(2), GH=grid_h, GW=grid_w, GWP=padded_w, ROWS=rows, D=dim, BLOCK_M=block_m, SCALE=dim ** -0.5,
        IEEE=q.dtype == torch.float32, num_warps=warps, num_stages=stages)
    return out
