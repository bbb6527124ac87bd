"""GPU-only checks (run on the device machine; skipped where there is no CUDA): the Triton decode
and SAM kernels (attention, windows, bias terms) against their reference forms, the engine with CUDA graphs against the
plain path in fp32, and the warm-up pass."""
import random
from dataclasses import replace

import pytest
import torch

from dsocr_cli.checkpoint import load_model
from dsocr_cli.engine.engine import Engine
from dsocr_cli.engine.paged_kv import PAGE, DecodeKV, PagePool
from dsocr_cli.engine.plain import PlainRunner
from dsocr_cli.requests import settings_for
from dsocr_cli.tokenizer import Tokenizer
from test_engine import pages, requests

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


FP8 = torch.float8_e4m3fn


@pytest.mark.parametrize("dtype,kv_dtype", [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16),
                                            (torch.bfloat16, FP8), (torch.float32, FP8)])
@pytest.mark.parametrize("rows", [1, 3, 37])  # 16, 8 and 1 splits per sequence
def test_triton_decode_attention_equals_gather_path(dtype, kv_dtype, rows):
    torch.manual_seed(0)
    heads, dim = 10, 128
    pool = PagePool(1, heads, dim, 400, kv_dtype, torch.device("cuda"))
    pool.k.copy_(torch.randn(pool.k.shape, device="cuda").to(kv_dtype))
    pool.v.copy_(torch.randn(pool.v.shape, device="cuda").to(kv_dtype))
    lengths = [random.Random(i).randint(1, 1500) for i in range(rows)]
    pages = torch.randperm(399)[:400].add(1).tolist()
    table = torch.zeros(rows, 32, dtype=torch.int32)
    for r, n in enumerate(lengths):
        table[r, :-(-n // PAGE)] = torch.tensor(random.Random(r).sample(pages, -(-n // PAGE)))
    table = table.cuda()
    positions = torch.tensor(lengths, device="cuda") - 1
    q = torch.randn(rows, heads, 1, dim, device="cuda", dtype=dtype)
    k = torch.randn(rows, heads, 1, dim, device="cuda", dtype=dtype)
    v = torch.randn(rows, heads, 1, dim, device="cuda", dtype=dtype)
    fast = DecodeKV(pool, table, positions, use_triton=True).attend(0, q, k, v)
    slow = DecodeKV(pool, table, positions, use_triton=False).attend(0, q, k, v)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert (fast.float() - slow.float()).abs().max() < tol


@pytest.mark.parametrize("kv_dtype", [torch.bfloat16, FP8])
def test_the_kv_store_kernel_writes_what_torch_writes(kv_dtype):
    torch.manual_seed(0)
    heads, dim = 10, 128
    kernel, reference = (PagePool(2, heads, dim, 40, kv_dtype, torch.device("cuda")) for _ in range(2))
    k = torch.randn(50, heads, dim, device="cuda", dtype=torch.bfloat16) * 300  # past fp8's 448 too
    v = torch.randn(50, heads, dim, device="cuda", dtype=torch.bfloat16)
    slots = torch.randperm(39 * PAGE, device="cuda")[:50] + PAGE
    kernel.write(1, slots, k, v)
    reference.k[1].view(-1, heads, dim)[slots] = reference._stored(k)  # the torch path
    reference.v[1].view(-1, heads, dim)[slots] = reference._stored(v)
    for got, want in ((kernel.k, reference.k), (kernel.v, reference.v)):
        assert torch.equal(got.view(torch.uint8), want.view(torch.uint8)) and torch.isfinite(got.float()).all()


@pytest.mark.parametrize("compile", [False, True])
def test_engine_with_graphs_matches_plain_path_in_fp32(tiny_checkpoint, compile):
    model = load_model(tiny_checkpoint, torch.device("cuda"), torch.float32)
    with torch.no_grad():
        model.lm_head.weight[1] = model.lm_head.weight[81417] * 1.001
    tok = Tokenizer.bundled()
    settings = settings_for(tok, max_new_tokens=48, ngram_size=3, ngram_window=20, loop_span=24)
    specs = pages(9)
    plain = {r.key: r for r in PlainRunner(model, tok, settings).run(requests(specs))}
    engine = Engine(model, tok, settings, max_batch=6, kv_bytes=256 * 1024 ** 2, compile=compile)
    batched = {r.key: r for r in engine.run(requests(specs))}
    assert engine.graphs  # captured lazily, as the run reached each size
    for key, ref in plain.items():
        assert batched[key].token_ids == ref.token_ids, key
    # a run with another guard (convert's retry pass) re-captures its graphs, then the first guard again
    stronger = replace(settings, ngram_size=2)
    retried = {r.key: r.token_ids for r in PlainRunner(model, tok, stronger).run(requests(specs))}
    assert {r.key: r.token_ids for r in engine.run(requests(specs), stronger)} == retried
    assert {r.key: r.token_ids for r in engine.run(requests(specs))} == {k: r.token_ids for k, r in plain.items()}
    assert engine.vision.captured  # vision shapes met again are replayed from graphs (the runs above included)
    # retries (every third page, under the stronger guard) beside first attempts in one run
    mixed = {r.key: r.token_ids for r in PlainRunner(model, tok, settings).run(requests(specs, 3))}
    assert {r.key: r.token_ids for r in engine.run(requests(specs, 3))} == mixed


def test_guard_kernels_equal_the_plain_guard_row_by_row_and_token_by_token():
    from dsocr_cli.engine.guard import advance, ban_repeated_ngrams
    from test_engine import check_guard_against_plain

    check_guard_against_plain(random.Random(2), ban_repeated_ngrams, advance, device="cuda")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("b,h,w,heads,dim", [(3, 14, 14, 12, 64), (2, 40, 40, 12, 64), (2, 5, 7, 2, 16), (1, 3, 64, 2, 64), (1, 20, 3, 2, 32), (1, 2, 80, 1, 64)])
def test_fused_sam_attention_equals_the_widened_sdpa(dtype, b, h, w, heads, dim):
    """The Triton kernel (bias read a key row at a step) against the CPU path's widened form."""
    from dsocr_cli.model.rel_attention import rel_attention
    from dsocr_cli.model.sam import _widened_attention
    torch.manual_seed(h)
    n = h * w
    q, k, v = (torch.randn(b, n, heads, dim, device="cuda", dtype=dtype) for _ in range(3))
    rel_h, rel_w = torch.randn(b, heads, n, h, device="cuda", dtype=dtype), torch.randn(b, heads, n, w, device="cuda", dtype=dtype)
    ref = _widened_attention(q.double(), k.double(), v.double(), rel_h.double(), rel_w.double(), h, w)
    got = rel_attention(q, k, v, rel_h.view(b, heads, h, w, h), rel_w.view(b, heads, h, w, w)).double()
    assert ((got - ref).norm() / ref.norm()).item() < (1e-5 if dtype == torch.float32 else 1e-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("b,h,w,c,window", [(2, 64, 64, 768, 14), (3, 40, 40, 768, 14), (1, 5, 7, 48, 3), (1, 14, 14, 64, 14)])
def test_windows_are_cut_and_stitched_as_torch_does(dtype, b, h, w, c, window):
    """The norm written into the window layout, and the add read from it, against the torch versions."""
    from dsocr_cli.model import windows as W
    torch.manual_seed(w)
    x = torch.randn(b, h, w, c, device="cuda", dtype=dtype)
    weight, bias = torch.randn(c, device="cuda", dtype=dtype), torch.randn(c, device="cuda", dtype=dtype)
    cut, ref = W.norm_into_windows(x, weight, bias, 1e-6, window), W.norm_into_windows_reference(x, weight, bias, 1e-6, window)
    assert cut.shape == ref.shape and ((cut.float() - ref.float()).abs().max() <= (1e-5 if dtype == torch.float32 else 0.04))
    one = torch.ones(c, device="cuda", dtype=dtype)
    padding = W.norm_into_windows_reference(torch.ones_like(x), one, one, 1e-6, window) == 0  # real tokens: 1
    assert (cut[padding] == 0).all()  # padding tokens are exactly zero, as F.pad makes them
    back = torch.randn_like(ref)
    assert torch.equal(W.add_from_windows(x, back, window), W.add_from_windows_reference(x, back, window))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("b,h,w,heads,dim", [(2, 14, 14, 12, 64), (2, 64, 64, 12, 64), (3, 40, 40, 12, 64), (1, 5, 7, 2, 16)])
def test_bias_terms_read_from_one_product_equal_the_einsums(dtype, b, h, w, heads, dim):
    from dsocr_cli.model.rel_attention import bias_terms
    from dsocr_cli.model.sam import offset_table, relative_positions
    torch.manual_seed(h)
    q = torch.randn(b, h, w, 3, heads, dim, device="cuda", dtype=dtype).unbind(3)[0]  # strided, as the projection's
    table_h, table_w = (torch.randn(127, dim, device="cuda", dtype=dtype) for _ in range(2))
    rel_h, rel_w = bias_terms(q, offset_table(table_h, h), offset_table(table_w, w))
    ref_h = torch.einsum("bhwnc,hkc->bnhwk", q.double(), relative_positions(table_h, h).double())
    ref_w = torch.einsum("bhwnc,wkc->bnhwk", q.double(), relative_positions(table_w, w).double())
    for got, ref in ((rel_h, ref_h), (rel_w, ref_w)):
        assert ((got.double() - ref).norm() / ref.norm()).item() < (1e-5 if dtype == torch.float32 else 1e-2)


def test_the_vision_encoder_reads_the_same_with_kernels_and_without(tiny_checkpoint):
    """SAM's windows, bias terms, attention, norms and patch GEMM, and CLIP's norms and activation,
    against the CPU path's torch forms, fp32."""
    from dsocr_cli.model import fused
    model = load_model(tiny_checkpoint, torch.device("cuda"), torch.float32)
    pixels = torch.rand(3, 3, 1024, 1024, device="cuda") * 2 - 1
    with torch.inference_mode():
        got = model.encode_views(pixels)
        with fused.use_kernels(False):
            ref = model.encode_views(pixels)
    assert ((got - ref).norm() / ref.norm()).item() < 1e-5


def test_the_warm_up_pass_runs_beside_a_load_and_gives_its_memory_back(tiny_checkpoint):
    """The throwaway vision pass (warm_up.py) completes without error while a model loads on the
    same device, and the memory it used is free again afterwards."""
    from dsocr_cli.warm_up import finish_warm_up, start_warm_up
    device = torch.device("cuda")
    reserved = torch.cuda.memory_reserved(device)
    warm = start_warm_up(tiny_checkpoint, device, torch.bfloat16)
    model = load_model(tiny_checkpoint, device, torch.bfloat16)
    finish_warm_up(warm)
    assert warm is not None and warm.error is None and not warm.is_alive()
    del model
    torch.cuda.empty_cache()
    assert torch.cuda.memory_reserved(device) <= reserved
