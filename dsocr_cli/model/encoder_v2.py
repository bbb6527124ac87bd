"""DeepEncoder V2 (DeepSeek-OCR-2): a Qwen2-0.5B-shaped transformer used as an encoder.

SAM's N tokens (row-major) are followed by N learned "causal flow" queries (one bank per view
size: 144 for a 768 px tile, 256 for the 1024 px global view). Visual tokens attend to each other
in both directions and never to the queries; query a attends to every visual token and to queries
0..a. RoPE (theta 1e6, fp32 frequencies) over positions 0..2N-1, a final RMSNorm, and only the N
query outputs go on. Names follow the checkpoint: `query_768`, `query_1024`, `model.model.layers`,
`model.model.norm` (the official module nests a Qwen2 model in a causal-LM wrapper).
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from .blank import Linear, embedding
from .config import EncoderV2Config
from .decoder import MLP, RMSNorm, rope_cos_sin
from .fused import apply_rope

QUERY_BANKS = {144: "query_768", 256: "query_1024"}  # tokens per view -> bank


@functools.lru_cache(maxsize=8)
def flow_mask(n: int, device: torch.device) -> torch.Tensor:
    """(2n, 2n) boolean, True where row i may attend to column j (the mask described above)."""
    mask = torch.zeros(2 * n, 2 * n, dtype=torch.bool, device=device)
    mask[:, :n] = True
    mask[n:, n:] = torch.ones(n, n, dtype=torch.bool, device=device).tril()
    return mask


class EncoderAttention(nn.Module):
    """Grouped-query attention with biased q/k/v (fused into one matrix) and an unbiased output."""

    def __init__(self, cfg: EncoderV2Config):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = cfg.heads, cfg.kv_heads, cfg.head_dim
        self.q_width, self.kv_width = cfg.heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
        self.wqkv = Linear(cfg.hidden_size, self.q_width + 2 * self.kv_width)
        self.o_proj = Linear(self.q_width, cfg.hidden_size, bias=False)

    def checkpoint_parts(self):
        q, kv = self.q_width, self.kv_width
        spans = {"q": slice(0, q), "k": slice(q, q + kv), "v": slice(q + kv, q + 2 * kv)}
        return {f"wqkv.{p}": [(f"{n}_proj.{p}", (span,)) for n, span in spans.items()] for p in ("weight", "bias")}

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = self.wqkv(x).split([self.q_width, self.kv_width, self.kv_width], dim=-1)
        q = q.view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = k.view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        groups = self.heads // self.kv_heads
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, self.q_width))


class EncoderLayer(nn.Module):
    def __init__(self, cfg: EncoderV2Config):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = EncoderAttention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x, cos, sin, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class EncoderStack(nn.Module):
    def __init__(self, cfg: EncoderV2Config):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class DeepEncoderV2(nn.Module):
    def __init__(self, cfg: EncoderV2Config):
        super().__init__()
        self.config = cfg
        self.query_768 = embedding(144, cfg.hidden_size)
        self.query_1024 = embedding(256, cfg.hidden_size)
        self.model = nn.ModuleDict({"model": EncoderStack(cfg)})  # the checkpoint's model.model nesting

    def forward(self, sam_features: torch.Tensor) -> torch.Tensor:
        """B x C x h x w SAM features -> B x hw x C query outputs (query order)."""
        b, _, h, w = sam_features.shape
        n = h * w
        if n not in QUERY_BANKS:
            raise ValueError(f"DeepEncoder V2 has query banks for 144 and 256 tokens, not {n} "
                             "(views must be 768 or 1024 px)")
        queries = getattr(self, QUERY_BANKS[n]).weight
        x = torch.cat([sam_features.flatten(2).transpose(1, 2), queries.to(sam_features.dtype).expand(b, -1, -1)], dim=1)
        positions = torch.arange(2 * n, device=x.device)[None]
        cos, sin = rope_cos_sin(positions, self.config.head_dim, self.config.rope_theta, x.dtype, round_frequencies=False)
        mask = flow_mask(n, x.device)
        stack = self.model["model"]
        for layer in stack.layers:
            x = layer(x, cos, sin, mask)
        return stack.norm(x[:, n:])
