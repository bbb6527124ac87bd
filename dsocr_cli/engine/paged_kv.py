"""Paged key/value storage shared by every running page, and the two ways attention reads it.

The cache is a pool of fixed-size pages ([pages, PAGE, heads, head_dim] per layer for K and V);
each sequence owns a list of pages (its block table), so memory is taken as sequences grow and
given back as they finish. Page 0 is scratch: padded batch rows write there. The pages hold the
model's dtype, or fp8 (e4m3, `--kv-dtype fp8`): half the bytes, which is what a large batch's decode
attention spends its time reading; values are cast on write (saturating at +-448, 3 mantissa bits)
and widened again as attention reads them.

- PrefillKV: several prompts packed into one pass, each starting at position 0; attention is
  causal inside each prompt and never reads the cache; K/V are written to the prompt's pages.
- DecodeKV: one new token per sequence; attention reads only each sequence's valid length
  (a Triton kernel on CUDA, a gather + masked SDPA elsewhere).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import DsocrError
from ..model.eager import eager_under_compile
from .triton_decode import paged_decode_attention, store_kv, triton_available

PAGE = 64  # tokens per page
KV_DTYPES = {"auto": None, "fp8": torch.float8_e4m3fn}  # --kv-dtype: None keeps the model's
FP8_MAX = 448.0  # the largest finite e4m3 value: larger ones saturate instead of turning NaN


def kv_dtype_for(name: str, dtype: torch.dtype) -> torch.dtype:
    """The cache's element type for --kv-dtype `name` under a model of `dtype`."""
    if name not in KV_DTYPES:
        raise DsocrError(f"--kv-dtype {name}: use {' or '.join(KV_DTYPES)}")
    return KV_DTYPES[name] or dtype


def pages_for(tokens: int) -> int:
    return -(-tokens // PAGE)


class PagePool:
    def __init__(self, layers: int, heads: int, head_dim: int, num_pages: int, dtype: torch.dtype,
                 device: torch.device):
        shape = (layers, num_pages, PAGE, heads, head_dim)
        # zeros, not empty: never-written slots must not hold NaN bit patterns (0 x NaN = NaN)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.num_pages = num_pages
        self.fp8 = dtype == torch.float8_e4m3fn
        self._free = list(range(num_pages - 1, 0, -1))  # page 0 stays scratch

    @staticmethod
    def bytes_per_page(layers: int, heads: int, head_dim: int, dtype: torch.dtype) -> int:
        return 2 * layers * PAGE * heads * head_dim * torch.empty((), dtype=dtype).element_size()

    @property
    def free_pages(self) -> int:
        return len(self._free)

    def allocate(self, n: int) -> list[int] | None:
        if n > len(self._free):
            return None
        return [self._free.pop() for _ in range(n)]

    def release(self, pages: list[int]) -> None:
        self._free.extend(reversed(pages))

    def write(self, layer: int, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store K/V rows (N x heads x D) at flat slot indices page * PAGE + offset."""
        if k.is_cuda and triton_available() and k.stride(-1) == 1 and v.stride(-1) == 1:
            store_kv(self.k[layer], self.v[layer], slots, k, v, FP8_MAX if self.fp8 else 0.0)
            return
        heads, dim = k.shape[-2:]
        self.k[layer].view(-1, heads, dim)[slots] = self._stored(k)
        self.v[layer].view(-1, heads, dim)[slots] = self._stored(v)

    def _stored(self, x: torch.Tensor) -> torch.Tensor:
        if self.fp8:
            x = x.clamp(-FP8_MAX, FP8_MAX)
        return x.to(self.k.dtype)


class PrefillKV:
    """Packed prompts: lengths[i] tokens each, laid out one after another; slots give each token's
    place in the cache."""

    def __init__(self, pool: PagePool, lengths: list[int], slots: torch.Tensor):
        self.pool, self.lengths, self.slots = pool, lengths, slots

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # q, k, v: 1 x heads x sum(lengths) x D
        self.pool.write(layer, self.slots, k[0].transpose(0, 1), v[0].transpose(0, 1))
        outs = [F.scaled_dot_product_attention(qi, ki, vi, is_causal=True)
                for qi, ki, vi in zip(q.split(self.lengths, 2), k.split(self.lengths, 2), v.split(self.lengths, 2))]
        return torch.cat(outs, dim=2)


class DecodeKV:
    """One new token per row at `positions`; rows read their pages through block_tables."""

    def __init__(self, pool: PagePool, block_tables: torch.Tensor, positions: torch.Tensor, use_triton: bool):
        self.pool, self.block_tables = pool, block_tables
        page = block_tables.gather(1, (positions // PAGE)[:, None])[:, 0].long()
        self.slots = page * PAGE + positions % PAGE
        self.lengths = positions + 1
        self.use_triton = use_triton

    # Kept out of torch.compile: traced, the in-place write into the pool becomes a copy of a whole
    # layer of the cache. Inside a captured CUDA graph the break costs nothing.
    @eager_under_compile
    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # q, k, v: B x heads x 1 x D
        self.pool.write(layer, self.slots, k[:, :, 0], v[:, :, 0])
        if self.use_triton:
            out = paged_decode_attention(q[:, :, 0], self.pool.k[layer], self.pool.v[layer],
                                         self.block_tables, self.lengths)
            return out[:, :, None]
        return self._gathered_attention(layer, q)

    def _gathered_attention(self, layer: int, q: torch.Tensor) -> torch.Tensor:
        """Reference path: gather each row's pages up to the longest row, mask the rest."""
        n_pages = pages_for(int(self.lengths.max()))
        table = self.block_tables[:, :n_pages].long()
        b, heads, _, dim = q.shape
        keys = self.pool.k[layer][table].to(q.dtype).reshape(b, n_pages * PAGE, heads, dim).transpose(1, 2)
        values = self.pool.v[layer][table].to(q.dtype).reshape(b, n_pages * PAGE, heads, dim).transpose(1, 2)
        visible = (torch.arange(n_pages * PAGE, device=q.device)[None, :] < self.lengths[:, None])[:, None, :, None]
        values = values.masked_fill(~visible, 0)  # stale slots of reused pages stay out of the sum
        return F.scaled_dot_product_attention(q, keys, values, attn_mask=visible.transpose(2, 3))


def decode_backend_for(device: torch.device) -> bool:
    """True when the Triton kernel can run here."""
    return device.type == "cuda" and triton_available()
