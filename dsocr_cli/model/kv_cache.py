"""Key/value storage for the plain (unbatched) generation path.

The decoder's attention hands each layer's new keys/values to a cache object and gets the
attention output back, so the storage layout (contiguous here, paged in the engine) and the
attention kernel that reads it stay together.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


class ContiguousKV:
    """K/V for sequences that start together at position 0 and grow in step; reads only the filled part."""

    def __init__(self, layers: int, batch: int, heads: int, head_dim: int, capacity: int,
                 dtype: torch.dtype, device: torch.device):
        shape = (layers, batch, heads, capacity, head_dim)
        self.k = torch.empty(shape, dtype=dtype, device=device)
        self.v = torch.empty(shape, dtype=dtype, device=device)
        self.capacity = capacity
        self.length = 0

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        start, t = self.length, q.shape[2]
        end = start + t
        if end > self.capacity:
            raise RuntimeError(f"KV cache full ({self.capacity} positions)")
        self.k[layer, :, :, start:end] = k
        self.v[layer, :, :, start:end] = v
        keys, values = self.k[layer, :, :, :end], self.v[layer, :, :, :end]
        if t == 1:
            return F.scaled_dot_product_attention(q, keys, values)
        if start == 0:
            return F.scaled_dot_product_attention(q, keys, values, is_causal=True)
        visible = torch.arange(end, device=q.device)[None, :] <= torch.arange(start, end, device=q.device)[:, None]
        return F.scaled_dot_product_attention(q, keys, values, attn_mask=visible)

    def advance(self, t: int) -> None:
        """Called once per decoder pass, after every layer has attended."""
        self.length += t
