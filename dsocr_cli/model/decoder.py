"""DeepSeek-V2 style mixture-of-experts decoder, without MLA: multi-head attention with RoPE.

Layer 0 is a dense SwiGLU MLP; the others route each token to the top-k of the routed experts
(softmax scores used as they are, no renormalisation by default) and add a shared expert.
Where we fuse weights for speed (q/k/v, gate/up, stacked experts), `checkpoint_parts` says how
the checkpoint's separate matrices fill the fused parameter, so loading stays exact.
"""
from __future__ import annotations

import torch
from torch import nn

from .blank import Linear
from .config import DecoderConfig
from .eager import eager_under_compile
from .fused import combine_experts, rms_norm, rotary_qkv, route, silu_mul, sort_by_expert


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None):
        """The normed x; with `residual`, of x + residual, returned with the sum (one kernel on a GPU)."""
        return rms_norm(x, self.weight, self.eps, residual)


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype,
                 round_frequencies: bool = True):
    """cos/sin tables (..., head_dim) for integer positions (half-split layout).

    The official v1 model keeps its inverse frequencies in a buffer that `.to(bfloat16)` rounds, so
    a bf16 model rotates by bf16-rounded frequencies; with `round_frequencies` we round them to
    `dtype` the same way (v2 keeps them fp32). Angles, cos and sin are computed in fp32 and cast.
    """
    exponent = torch.arange(0, head_dim, 2, dtype=torch.int64, device=positions.device).float() / head_dim
    inv_freq = 1.0 / (theta ** exponent)
    if round_frequencies:
        inv_freq = inv_freq.to(dtype).float()
    freqs = positions.float()[..., None] * inv_freq
    angles = torch.cat([freqs, freqs], dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


class Attention(nn.Module):
    def __init__(self, cfg: DecoderConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.heads = cfg.num_attention_heads
        self.hidden = cfg.hidden_size
        self.wqkv = Linear(cfg.hidden_size, 3 * cfg.hidden_size, bias=False)
        self.o_proj = Linear(cfg.hidden_size, cfg.hidden_size, bias=False)

    def checkpoint_parts(self):
        h = self.hidden
        return {"wqkv.weight": [(f"{n}_proj.weight", (slice(i * h, (i + 1) * h),)) for i, n in enumerate("qkv")]}

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, kv) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = rotary_qkv(self.wqkv(x), cos, sin, self.heads)
        out = kv.attend(self.layer_idx, q, k, v)  # the cache decides how keys are stored and read
        return self.o_proj(out.transpose(1, 2).reshape(b, t, self.hidden))


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)), gate and up fused into one matrix."""

    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.intermediate = intermediate
        self.w_gate_up = Linear(hidden, 2 * intermediate, bias=False)
        self.down_proj = Linear(intermediate, hidden, bias=False)

    def checkpoint_parts(self):
        i = self.intermediate
        return {"w_gate_up.weight": [("gate_proj.weight", (slice(0, i),)), ("up_proj.weight", (slice(i, 2 * i),))]}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(silu_mul(self.w_gate_up(x)))


class Router(nn.Module):
    def __init__(self, hidden: int, experts: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(experts, hidden))


@eager_under_compile  # inside a compiled decode step too: the grouped GEMM kernels measured in README
def grouped_matmul(rows: torch.Tensor, weights: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
    """rows (sorted by group, group g ending at ends[g]) @ weights[g], with no host sync.

    torch._grouped_mm on the CPU and for bf16 on Hopper (its fast kernel); elsewhere (fp32 on CUDA,
    the exactness mode, or older GPUs, where torch's own fallback reads the offsets on the host)
    each row is multiplied by its own group's matrix, in chunks.
    """
    if rows.device.type == "cpu" or (rows.dtype == torch.bfloat16 and torch.cuda.get_device_capability(rows.device) >= (9, 0)):
        return torch._grouped_mm(rows, weights, offs=ends)
    group = torch.searchsorted(ends, torch.arange(rows.shape[0], device=rows.device, dtype=ends.dtype), right=True)
    chunk = max(1, 2 ** 26 // weights[0].numel())
    return torch.cat([torch.bmm(rows[i:i + chunk, None], weights[group[i:i + chunk]])[:, 0]
                      for i in range(0, rows.shape[0], chunk)])


class Experts(nn.Module):
    """The routed experts as stacked weights, run as two grouped GEMMs over expert-sorted tokens."""

    def __init__(self, experts: int, hidden: int, intermediate: int):
        super().__init__()
        self.n = experts
        self.intermediate = intermediate
        self.w_gate_up = nn.Parameter(torch.empty(experts, 2 * intermediate, hidden))
        self.w_down = nn.Parameter(torch.empty(experts, hidden, intermediate))

    def checkpoint_parts(self):
        i = self.intermediate
        parts = {"w_gate_up": [], "w_down": []}
        for e in range(self.n):
            parts["w_gate_up"] += [(f"{e}.gate_proj.weight", (e, slice(0, i))),
                                   (f"{e}.up_proj.weight", (e, slice(i, 2 * i)))]
            parts["w_down"].append((f"{e}.down_proj.weight", (e,)))
        return parts

    def forward(self, x: torch.Tensor, expert_idx: torch.Tensor, weights: torch.Tensor,
                shared: torch.Tensor) -> torch.Tensor:
        """x: N x H; expert_idx, weights: N x k. Returns the weighted sum (in fp32) cast to x's
        dtype, plus `shared` (the shared experts' output)."""
        token, slot, ends = sort_by_expert(expert_idx, self.n)
        hidden = silu_mul(grouped_matmul(x[token], self.w_gate_up.transpose(1, 2), ends))
        out = grouped_matmul(hidden, self.w_down.transpose(1, 2), ends)
        return combine_experts(out, slot, weights, shared)


class MoE(nn.Module):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.top_k = cfg.num_experts_per_tok
        self.normalize = cfg.norm_topk_prob
        self.scale = cfg.routed_scaling_factor
        self.gate = Router(cfg.hidden_size, cfg.n_routed_experts)
        self.experts = Experts(cfg.n_routed_experts, cfg.hidden_size, cfg.moe_intermediate_size)
        self.shared_experts = MLP(cfg.hidden_size, cfg.moe_intermediate_size * cfg.n_shared_experts)

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k experts and their weights per token, on the device (no host sync)."""
        return route(x, self.gate.weight, self.top_k, self.normalize, self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        idx, weights = self.route(flat)
        return self.experts(flat, idx, weights, self.shared_experts(flat)).view(x.shape)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: DecoderConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg, layer_idx)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MoE(cfg) if cfg.is_moe_layer(layer_idx) else MLP(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x, cos, sin, kv):
        normed, x = self.post_attention_layernorm(x, residual=self.self_attn(self.input_layernorm(x), cos, sin, kv))
        return x + self.mlp(normed)
