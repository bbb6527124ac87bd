"""The fused kernels of the decoder (model/fused.py) and of the vision towers (model/vision_fused.py,
SAM's patch embedding) against their torch versions. GPU only: on the CPU
the torch versions are what runs. fp32 agrees to rounding; bf16 rounds where torch rounds, so the
residual sum and the sort are exact, and the rest at most one bf16 step apart (exp and rsqrt are
the GPU's fast ones, sums run in another order, and Triton may fold a product's rounding to bf16
into the sum that follows, as in the rotary embedding)."""
import pytest
import torch

from dsocr_cli.checkpoint import load_model
from dsocr_cli.engine.plain import PlainRunner
from dsocr_cli.model import fused, vision_fused
from dsocr_cli.model.decoder import rope_cos_sin
from dsocr_cli.requests import settings_for
from dsocr_cli.tokenizer import Tokenizer
from test_engine import pages, requests

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DTYPES = [torch.float32, torch.bfloat16]


def assert_close(fast: torch.Tensor, slow: torch.Tensor, exact: bool = False, share: float = 0.01,
                 terms: float | None = None):
    """Equal (exact), within fp32 rounding, or in bf16 at most one step apart on at most `share` of
    the elements; one step of the value or, where a sum cancels, of `terms` (the largest term summed;
    default a quarter of the largest value)."""
    assert fast.shape == slow.shape and fast.dtype == slow.dtype
    if exact or fast.dtype == torch.float32:
        tolerance = 0 if exact else 1e-5
        assert (fast - slow).abs().max().item() <= tolerance * max(1.0, slow.abs().max().item())
        return
    terms = slow.float().abs().max().item() / 4 if terms is None else terms
    step = (slow.float().abs() * 2 ** -7).clamp(min=terms * 2 ** -7)
    apart = (fast.float() - slow.float()).abs()
    assert (apart <= step * 1.01).all()
    assert (apart > 0).float().mean().item() <= share


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 64, 64, 768), (3, 257, 1024), (5, 48)])
def test_layer_norm_with_and_without_the_residual(dtype, shape):
    torch.manual_seed(1)
    x, r = torch.randn(shape, device="cuda", dtype=dtype), torch.randn(shape, device="cuda", dtype=dtype) * 3
    w, b = (torch.rand(shape[-1], device="cuda") + 0.5).to(dtype), torch.randn(shape[-1], device="cuda").to(dtype)
    assert_close(vision_fused.layer_norm(x, w, b, 1e-6), vision_fused.layer_norm_reference(x, w, b, 1e-6), terms=1.0)
    got, ref = vision_fused.layer_norm(x, w, b, 1e-5, r), vision_fused.layer_norm_reference(x, w, b, 1e-5, r)
    assert_close(got[1], ref[1], exact=True)
    assert_close(got[0], ref[0], terms=1.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 257, 4096), (3, 1001)])
def test_quick_gelu(dtype, shape):
    torch.manual_seed(2)
    x = torch.randn(shape, device="cuda", dtype=dtype) * 4
    assert_close(vision_fused.quick_gelu(x), vision_fused.quick_gelu_reference(x), terms=1.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("side", [1024, 640, 100])
def test_the_patch_embedding_as_one_gemm_equals_the_convolution(dtype, side):
    from dsocr_cli.model.sam import PatchEmbed
    torch.manual_seed(side)
    embed = PatchEmbed(16, 96).to("cuda", dtype)
    with torch.no_grad():
        embed.proj.weight.copy_(torch.randn_like(embed.proj.weight) / 28)
        embed.proj.bias.copy_(torch.randn_like(embed.proj.bias))
    x = torch.rand(2, 3, side, side, device="cuda", dtype=dtype) * 2 - 1
    cudnn_tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # the fp32 convolution exact, as load_model sets it for fp32
    try:
        with torch.inference_mode():
            got = embed(x)
            with fused.use_kernels(False):
                ref = embed(x)
    finally:
        torch.backends.cudnn.allow_tf32 = cudnn_tf32
    assert got.shape == ref.shape == (2, side // 16, side // 16, 96) and got.is_contiguous()
    assert ((got.double() - ref.double()).norm() / ref.double().norm()).item() < (1e-6 if dtype == torch.float32 else 5e-3)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1, 1280), (3, 17, 1280), (2, 5, 1000)])
def test_rms_norm_with_and_without_the_residual(dtype, shape):
    torch.manual_seed(0)
    x, r = torch.randn(shape, device="cuda", dtype=dtype), torch.randn(shape, device="cuda", dtype=dtype)
    w = (torch.rand(shape[-1], device="cuda") + 0.5).to(dtype)
    assert_close(fused.rms_norm(x, w, 1e-6), fused.rms_norm_reference(x, w, 1e-6))
    (normed, summed), (normed_ref, summed_ref) = fused.rms_norm(x, w, 1e-6, r), fused.rms_norm_reference(x, w, 1e-6, r)
    assert_close(summed, summed_ref, exact=True)
    assert_close(normed, normed_ref)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1792), (37, 3584), (2, 3, 13696)])
def test_silu_mul(dtype, shape):
    torch.manual_seed(1)
    gate_up = (3 * torch.randn(shape, device="cuda")).to(dtype)
    assert_close(fused.silu_mul(gate_up), fused.silu_mul_reference(gate_up))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,tokens", [(1, 1), (37, 1), (1, 300)])
def test_rotary_embedding_of_queries_and_keys(dtype, rows, tokens):
    torch.manual_seed(2)
    qkv = torch.randn(rows, tokens, 3 * 1280, device="cuda", dtype=dtype)
    positions = torch.randint(0, 8000, (rows, tokens), device="cuda")
    cos, sin = rope_cos_sin(positions, 128, 10000.0, dtype)
    fast, slow = fused.rotary_qkv(qkv, cos, sin, 10), fused.rotary_qkv_reference(qkv, cos, sin, 10)
    q, k, v = fast
    assert torch.equal(v, slow[2])
    for a, b in zip((q, k), slow[:2]):  # Triton may fold a product's rounding into the sum
        assert_close(a, b, share=1.0, terms=qkv.float().abs().max().item())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tokens", [1, 37, 1024, 1365])  # 1,365 x 6 picks: the most the kernels sort
def test_expert_sort_and_weighted_sum(dtype, tokens):
    torch.manual_seed(3)
    picks = torch.stack([torch.randperm(64)[:6] for _ in range(tokens)]).cuda()
    picks[0] = torch.arange(6)  # several tokens on one expert, in order
    fast, slow = fused.sort_by_expert(picks, 64), fused.sort_by_expert_reference(picks, 64)
    for a, b in zip(fast, slow):
        assert torch.equal(a, b)
    token, slot, _ = fast
    out = torch.randn(tokens * 6, 1280, device="cuda", dtype=dtype)
    weights = torch.rand(tokens, 6, device="cuda")
    shared = torch.randn(tokens, 1280, device="cuda", dtype=dtype)
    assert_close(fused.combine_experts(out, slot, weights, shared),
                 fused.combine_experts_reference(out, slot, weights, shared))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("tokens,experts", [(1, 64), (37, 64), (1024, 64), (5, 8)])
def test_router_picks_the_same_experts_with_the_same_weights(dtype, normalize, tokens, experts):
    torch.manual_seed(4)
    x = torch.randn(tokens, 1280, device="cuda", dtype=dtype)
    w = (0.05 * torch.randn(experts, 1280, device="cuda")).to(dtype)
    k = min(6, experts // 2)
    idx, weights = fused.route(x, w, k, normalize, 2.5)
    ref_idx, ref_weights = fused.route_reference(x, w, k, normalize, 2.5)
    best_first = ref_weights.argsort(dim=1, descending=True)  # the kernel lists them best first
    assert torch.equal(idx, ref_idx.gather(1, best_first))
    torch.testing.assert_close(weights, ref_weights.gather(1, best_first), rtol=1e-5, atol=1e-6)


def test_the_decoder_reads_the_same_with_kernels_and_without(tiny_checkpoint):
    """The whole tiny model, fp32, greedy: the plain path gives the same tokens either way."""
    model = load_model(tiny_checkpoint, torch.device("cuda"), torch.float32)
    tok = Tokenizer.bundled()
    settings = settings_for(tok, max_new_tokens=40)
    with fused.use_kernels(False):
        reference = {r.key: r.token_ids for r in PlainRunner(model, tok, settings).run(requests(pages(4)))}
    assert {r.key: r.token_ids for r in PlainRunner(model, tok, settings).run(requests(pages(4)))} == reference
