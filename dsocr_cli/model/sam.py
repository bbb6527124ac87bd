"""SAM ViT-B image encoder with windowed attention, the neck and two stride-2 convolutions.

Turns a 3 x S x S image into a C x S/64 x S/64 feature map (C = 1024 released): the 16x
token compressor of DeepEncoder. Parameter names follow the checkpoint (`model.sam_model.*`).
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from .blank import Conv2d, Linear
from .config import SamConfig
from .fused import _kernels_for
from .rel_attention import bias_terms, fused_available, rel_attention
from .vision_fused import LayerNorm
from .windows import add_from_windows, norm_into_windows


def resize_grid(table: torch.Tensor, size: int) -> torch.Tensor:
    """Bicubic (antialiased) resize of a (1, g, g, C) position table to (1, size, size, C), in fp32."""
    if table.shape[1] == size:
        return table
    grid = table.permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    return grid.to(table.dtype).permute(0, 2, 3, 1)


def offset_table(table: torch.Tensor, size: int) -> torch.Tensor:
    """(2 size - 1, C) embeddings of the offsets -(size-1) .. size-1, from a (2L-1, C) table resized
    if size != L."""
    length = 2 * size - 1
    if table.shape[0] == length:
        return table
    resized = F.interpolate(table.float().t()[None], size=length, mode="linear")
    return resized[0].t().to(table.dtype)


def relative_positions(table: torch.Tensor, size: int) -> torch.Tensor:
    """(size, size, C) embeddings of the offsets i - j."""
    offsets = torch.arange(size, device=table.device)
    return offset_table(table, size)[offsets[:, None] - offsets[None, :] + size - 1]


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a B x C x H x W map."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class RelPosAttention(nn.Module):
    """Multi-head attention over a 2-D token grid with decomposed relative position bias."""

    def __init__(self, dim: int, heads: int, rel_size: int):
        super().__init__()
        self.heads = heads
        self.qkv = Linear(dim, dim * 3)
        self.proj = Linear(dim, dim)
        head_dim = dim // heads
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * rel_size - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * rel_size - 1, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, dim = x.shape
        n, head_dim = h * w, dim // self.heads
        q, k, v = self.qkv(x).view(b, h, w, 3, self.heads, head_dim).unbind(3)  # B x h x w x heads x D views
        # Decomposed relative position bias: bias[i, j] = q_i . Rh[row_i - row_j] + q_i . Rw[col_i - col_j],
        # from the unscaled query, as B x heads x N x h (rows) and B x heads x N x w (columns).
        fused = fused_available(x, head_dim)
        if fused:
            rel_h, rel_w = bias_terms(q, offset_table(self.rel_pos_h, h), offset_table(self.rel_pos_w, w))
        else:
            rel_h = torch.einsum("bhwnc,hkc->bnhwk", q, relative_positions(self.rel_pos_h, h))
            rel_w = torch.einsum("bhwnc,wkc->bnhwk", q, relative_positions(self.rel_pos_w, w))
        q, k, v = (t.reshape(b, n, self.heads, head_dim) for t in (q, k, v))
        if fused:
            out = rel_attention(q, k, v, rel_h, rel_w)
        else:
            out = _widened_attention(q, k, v, rel_h.reshape(b, self.heads, n, h), rel_w.reshape(b, self.heads, n, w), h, w)
        return self.proj(out.reshape(b, h, w, dim))


def _widened_attention(q, k, v, rel_h, rel_w, h: int, w: int) -> torch.Tensor:
    """The bias through a stock fused (flash) SDPA: q is widened with the two per-query terms and k
    with one-hot row/column indicators, so q'.k'_j = q.k_j + bias[i, j] / scale. q', k' and v' (v
    padded with zeros to the same width, which fused kernels want, a multiple of 8) are built in
    one buffer. B x N x heads x D in and out."""
    b, n, heads, head_dim = q.shape
    width = head_dim + h + w
    width += -width % 8
    scale = head_dim ** -0.5
    wide = q.new_empty(3, b, heads, n, width)
    wide[..., :head_dim] = torch.stack([q, k, v]).transpose(2, 3)
    wide[0, ..., head_dim:head_dim + h] = rel_h / scale
    wide[0, ..., head_dim + h:head_dim + h + w] = rel_w / scale
    wide[0, ..., head_dim + h + w:] = 0
    wide[1, ..., head_dim:] = _indicators(h, w, width - head_dim, q.dtype, q.device)
    wide[2, ..., head_dim:] = 0
    out = F.scaled_dot_product_attention(wide[0], wide[1], wide[2], scale=scale)[..., :head_dim]
    return out.transpose(1, 2)


@functools.lru_cache(maxsize=16)  # a few grid sizes per mode; read-only, built once rather than per block
def _indicators(h: int, w: int, width: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(h*w, width): token j's row as a one-hot in the first h columns, its column in the next w, zeros after."""
    rows = torch.eye(h, dtype=dtype, device=device).repeat_interleave(w, dim=0)
    cols = torch.eye(w, dtype=dtype, device=device).repeat(h, 1)
    return F.pad(torch.cat([rows, cols], dim=1), (0, width - h - w))


class SamMLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.lin1 = Linear(dim, hidden)
        self.lin2 = Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(F.gelu(self.lin1(x)))


class SamBlock(nn.Module):
    """Pre-norm transformer block; window > 0 attends inside zero-padded window x window tiles."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, window: int, grid: int):
        super().__init__()
        self.window = window
        self.norm1 = LayerNorm(dim, eps=1e-6)
        self.attn = RelPosAttention(dim, heads, rel_size=window or grid)
        self.norm2 = LayerNorm(dim, eps=1e-6)
        self.mlp = SamMLP(dim, mlp_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.window:
            norm = self.norm1
            windows = norm_into_windows(x, norm.weight, norm.bias, norm.eps, self.window)
            x = add_from_windows(x, self.attn(windows), self.window)
            normed = self.norm2(x)
        else:
            normed, x = self.norm2(self.attn(self.norm1(x)), residual=x)
        return x + self.mlp(normed)


class PatchEmbed(nn.Module):
    """Non-overlapping patch x patch convolution -> B x H/patch x W/patch x C, contiguous (as a
    permuted view, every add after it kept the conv's layout, so each block's norms, adds and
    window cuts ran as strided copies: a quarter of SAM's time)."""

    def __init__(self, patch: int, dim: int):
        super().__init__()
        self.patch = patch
        self.proj = Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _kernels_for(x):
            return self.proj(x).permute(0, 2, 3, 1).contiguous()
        # On CUDA the same sums as one GEMM over the cut-out patches: for this stride-16 convolution
        # cuDNN ran an implicit-GEMM kernel at a twentieth of the GPU's speed (H200: 0.26 ms of a
        # 1024 view's 3.6, against 0.01 as a GEMM)
        b, c, height, width = x.shape
        p, h, w = self.patch, height // self.patch, width // self.patch
        patches = x[:, :, :h * p, :w * p].reshape(b, c, h, p, w, p).permute(0, 2, 4, 1, 3, 5).reshape(b * h * w, c * p * p)
        return F.linear(patches, self.proj.weight.flatten(1), self.proj.bias).view(b, h, w, -1)


class SamEncoder(nn.Module):
    def __init__(self, cfg: SamConfig):
        super().__init__()
        if len(cfg.downsample_channels) != 2:
            raise ValueError("SAM downsample_channels must list two widths (net_2, net_3)")
        dim, grid = cfg.width, cfg.pos_grid
        self.patch_embed = PatchEmbed(cfg.patch_size, dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, dim))
        global_blocks = set(cfg.global_attn_indexes)
        self.blocks = nn.ModuleList(
            SamBlock(dim, cfg.heads, int(dim * cfg.mlp_ratio), 0 if i in global_blocks else cfg.window_size, grid)
            for i in range(cfg.layers))
        neck = cfg.neck_channels
        self.neck = nn.Sequential(
            Conv2d(dim, neck, kernel_size=1, bias=False), LayerNorm2d(neck),
            Conv2d(neck, neck, kernel_size=3, padding=1, bias=False), LayerNorm2d(neck))
        mid, out = cfg.downsample_channels
        self.net_2 = Conv2d(neck, mid, kernel_size=3, stride=2, padding=1, bias=False)
        self.net_3 = Conv2d(mid, out, kernel_size=3, stride=2, padding=1, bias=False)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """B x 3 x S x S pixels in [-1, 1] -> B x C x S/64 x S/64 features."""
        x = self.patch_embed(pixels)
        x = x + resize_grid(self.pos_embed, x.shape[1])
        for block in self.blocks:
            x = block(x)
        x = self.neck(x.permute(0, 3, 1, 2))
        return self.net_3(self.net_2(x))
