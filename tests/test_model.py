"""Numerical checks of the model's fast paths against plain computations (fp32, tiny sizes)."""
import pytest
import torch
import torch.nn.functional as F

from dsocr_cli.checkpoint import load_model
from dsocr_cli.model.config import DecoderConfig
from dsocr_cli.model.decoder import MoE
from dsocr_cli.model.kv_cache import ContiguousKV
from dsocr_cli.random_weights import randomize_


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return load_model(tiny_checkpoint, torch.device("cpu"), torch.float32)


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
