"""Numerical checks of the model's fast paths against plain computations (fp32, tiny sizes)."""
import pytest
import torch
import torch.nn.functional as F

from dsocr_cli.checkpoint import load_model
from dsocr_cli.model.config import DecoderConfig
from dsocr_cli.model.decoder import MoE
from dsocr_cli.model.kv_cache import ContiguousKV
from dsocr_cli.model.sam import RelPosAttention, relative_positions
from dsocr_cli.random_weights import randomize_


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return load_model(tiny_checkpoint, torch.device("cpu"), torch.float32)


@pytest.mark.parametrize("h,w,table", [(5, 7, 7), (14, 14, 14), (6, 6, 9)])  # table != size: resized
def test_sam_attention_equals_an_explicit_relative_position_bias(h, w, table):
    """The widened q/k trick against the SAM formula: softmax(scale q.k + q.Rh[dr] + q.Rw[dc]) v."""
    torch.manual_seed(0)
    b, dim, heads = 3, 48, 3
    attn = randomize_(RelPosAttention(dim, heads, rel_size=table), seed=0)
    with torch.no_grad():
        attn.rel_pos_h.normal_()
        attn.rel_pos_w.normal_()
    x = torch.randn(b, h, w, dim)
    c = dim // heads
    q, k, v = attn.qkv(x).reshape(b, h * w, 3, heads, c).permute(2, 0, 3, 1, 4)
    grid_q = q.reshape(b, heads, h, w, c)
    rel_h = torch.einsum("bnhwc,hkc->bnhwk", grid_q, relative_positions(attn.rel_pos_h, h))
    rel_w = torch.einsum("bnhwc,wkc->bnhwk", grid_q, relative_positions(attn.rel_pos_w, w))
    bias = (rel_h[..., :, None] + rel_w[..., None, :]).reshape(b, heads, h * w, h * w)
    weights = ((q * c ** -0.5) @ k.transpose(-1, -2) + bias).softmax(dim=-1)
    expected = attn.proj((weights @ v).transpose(1, 2).reshape(b, h, w, dim))
    assert torch.allclose(attn(x), expected, atol=2e-5, rtol=1e-4)


def test_grouped_experts_equal_a_per_token_loop():
    cfg = DecoderConfig(hidden_size=32, moe_intermediate_size=16, n_routed_experts=8, num_experts_per_tok=3,
                        n_shared_experts=1)
    moe = randomize_(MoE(cfg), seed=3)
    x = torch.randn(2, 5, 32)
    out = moe(x)
    flat = x.reshape(-1, 32)
    scores = (flat @ moe.gate.weight.t()).softmax(-1)
    ref = []
    for t in range(flat.shape[0]):
        weights, idx = scores[t].topk(3)
        y = torch.zeros(32)
        for w, e in zip(weights, idx):
            gate, up = (moe.experts.w_gate_up[e] @ flat[t]).chunk(2)
            y += w * (moe.experts.w_down[e] @ (F.silu(gate) * up))
        ref.append(y + moe.shared_experts(flat[t]))
    assert torch.allclose(out.reshape(-1, 32), torch.stack(ref), atol=1e-5)


def test_decoding_with_the_cache_equals_one_full_pass(model):
    dec = model.config.decoder
    ids = torch.randint(0, 1000, (1, 12))
    positions = torch.arange(12)[None]
    full_kv = ContiguousKV(dec.num_hidden_layers, 1, dec.num_attention_heads, dec.head_dim, 12, torch.float32, "cpu")
    full = model.logits(model.decode(model.embed(ids), positions, full_kv))
    kv = ContiguousKV(dec.num_hidden_layers, 1, dec.num_attention_heads, dec.head_dim, 12, torch.float32, "cpu")
    steps = [model.logits(model.decode(model.embed(ids[:, :7]), positions[:, :7], kv))]
    kv.advance(7)
    for t in range(7, 12):
        steps.append(model.logits(model.decode(model.embed(ids[:, t:t + 1]), positions[:, t:t + 1], kv)))
        kv.advance(1)
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-4)


def test_image_embeddings_order_tiles_then_global_then_separator(model):
    d = model.config.decoder.hidden_size
    global_view = torch.full((2, 2, d), 1.0)
    tiles = torch.arange(6, dtype=torch.float32).view(6, 1, 1, 1).expand(6, 1, 1, d) + 10  # 3 across, 2 down
    out = model.image_embeddings(global_view, tiles, grid=(3, 2))
    newline, sep = model.model.image_newline, model.model.view_seperator
    assert out.shape[0] == 2 * (3 + 1) + 2 * (2 + 1) + 1
    assert out[:3, 0].tolist() == [10, 11, 12] and torch.equal(out[3], newline)
    assert out[4:7, 0].tolist() == [13, 14, 15] and torch.equal(out[7], newline)
    assert out[8, 0] == 1 and torch.equal(out[10], newline) and torch.equal(out[-1], sep)


def test_vision_features_have_one_token_per_64_pixels(model):
    for side, grid in [(512, 8), (640, 10), (1024, 16)]:
        assert model.encode_views(torch.zeros(1, 3, side, side)).shape == (1, grid, grid, 64)
