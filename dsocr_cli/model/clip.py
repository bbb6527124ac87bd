"""CLIP-L transformer that reads SAM's feature map as its patch tokens (global attention).

Names follow the checkpoint (`model.vision_model.*`). The CLIP patch-embedding convolution is in
the checkpoint but unused: DeepEncoder feeds it SAM features instead of pixels.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blank import Conv2d, Linear, embedding
from .config import ClipConfig
from .vision_fused import LayerNorm, quick_gelu


def resize_position_table(table: torch.Tensor, grid: int) -> torch.Tensor:
    """(1 + g*g, C) table -> (1 + grid*grid, C): the g x g part resized bicubic in fp32, CLS row kept."""
    g = int((table.shape[0] - 1) ** 0.5)
    if g == grid:
        return table
    patches = table[1:].view(1, g, g, -1).permute(0, 3, 1, 2).float()
    patches = F.interpolate(patches, size=(grid, grid), mode="bicubic", antialias=True, align_corners=False)
    patches = patches.to(table.dtype).permute(0, 2, 3, 1).reshape(grid * grid, -1)
    return torch.cat([table[:1], patches])


class ClipEmbeddings(nn.Module):
    def __init__(self, cfg: ClipConfig):
        super().__init__()
        self.class_embedding = nn.Parameter(torch.zeros(cfg.width))
        self.patch_embedding = Conv2d(3, cfg.width, kernel_size=cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.position_embedding = embedding(cfg.pos_grid ** 2 + 1, cfg.width)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """B x C x h x w SAM features -> B x (1 + hw) x C tokens with CLS and positions."""
        b, _, h, w = features.shape
        tokens = features.flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(b, 1, -1)
        tokens = torch.cat([cls, tokens], dim=1)
        return tokens + resize_position_table(self.position_embedding.weight, h)


class ClipAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv_proj = Linear(dim, dim * 3)
        self.out_proj = Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, dim = x.shape
        q, k, v = self.qkv_proj(x).view(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, dim))


class ClipMLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = Linear(dim, hidden)
        self.fc2 = Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(quick_gelu(self.fc1(x)))


class ClipLayer(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_dim: int):
        super().__init__()
        self.layer_norm1 = LayerNorm(dim, eps=1e-5)
        self.self_attn = ClipAttention(dim, heads)
        self.layer_norm2 = LayerNorm(dim, eps=1e-5)
        self.mlp = ClipMLP(dim, mlp_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed, x = self.layer_norm2(self.self_attn(self.layer_norm1(x)), residual=x)
        return x + self.mlp(normed)


class ClipTransformer(nn.Module):
    def __init__(self, cfg: ClipConfig):
        super().__init__()
        mlp_dim = int(cfg.width * cfg.mlp_ratio)
        self.layers = nn.ModuleList(ClipLayer(cfg.width, cfg.heads, mlp_dim) for _ in range(cfg.layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class ClipEncoder(nn.Module):
    def __init__(self, cfg: ClipConfig):
        super().__init__()
        self.embeddings = ClipEmbeddings(cfg)
        self.pre_layrnorm = LayerNorm(cfg.width, eps=1e-5)  # sic: the checkpoint's spelling
        self.transformer = ClipTransformer(cfg)

    def forward(self, sam_features: torch.Tensor) -> torch.Tensor:
        """B x C x h x w -> B x hw x C (the CLS output is dropped)."""
        x = self.pre_layrnorm(self.embeddings(sam_features))
        return self.transformer(x)[:, 1:]
