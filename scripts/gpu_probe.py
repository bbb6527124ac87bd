"""One device call's worth of measurements for the engine (issue 17): the memory ceiling, decode
attention variants against the gather path and the previous kernel, the vision encoder eager and
graphed (alone and with the preprocessing workers busy), and SAM's attention with and without
the widened relative-position bias. Prints a short table; writes everything to OUT/probe.json.

    python3 scripts/gpu_probe.py OUT [previous_triton_decode.py] [--only PHASE,PHASE]
"""
from __future__ import annotations

import importlib.util
import json
import random
import statistics
import sys
import time
from functools import partial

import torch
import torch.nn.functional as F
import triton.testing

from dsocr_cli.bench import _requests, random_weight_model, run_bench
from dsocr_cli.engine.feeder import _views, worker_pool
from dsocr_cli.engine.paged_kv import PAGE, DecodeKV, PagePool
from dsocr_cli.engine.triton_decode import paged_decode_attention
from dsocr_cli.engine.vision import VisionEncoder
from dsocr_cli.preprocess import MODES, normalize
from dsocr_cli.prompts import load_prompt
from dsocr_cli.tokenizer import Tokenizer

RESULTS: dict = {}


def bench_ms(fn, rep=100) -> float:
    return triton.testing.do_bench(fn, warmup=25, rep=rep, return_mode="median")


def copy_ceiling() -> float:
    x = torch.randn(2 * 1024 ** 3 // 4, device="cuda")
    y = torch.empty_like(x)
    ms = bench_ms(lambda: y.copy_(x))
    return 2 * x.numel() * 4 / ms / 1e6  # GB/s, read + write


def decode_case(rows: int, mean: int, dtype=torch.bfloat16):
    heads, dim = 10, 128
    rng = random.Random(rows)
    lengths = [max(1, int(rng.uniform(0.6, 1.4) * mean)) for _ in range(rows)]
    need = sum(-(-n // PAGE) for n in lengths)
    pool = PagePool(1, heads, dim, need + 1, dtype, torch.device("cuda"))
    pool.k.normal_()
    pool.v.normal_()
    width = max(-(-n // PAGE) for n in lengths)
    table = torch.zeros(rows, width, dtype=torch.int32)
    free = torch.randperm(need).add(1).tolist()
    for r, n in enumerate(lengths):
        for c in range(-(-n // PAGE)):
            table[r, c] = free.pop()
    q = torch.randn(rows, heads, dim, device="cuda", dtype=dtype)
    lens = torch.tensor(lengths, device="cuda")
    nbytes = sum(lengths) * heads * dim * 2 * pool.k.element_size()
    return pool, table.cuda(), q, lens, nbytes


def probe_decode(old) -> None:
    out = RESULTS["decode"] = []
    variants = [(64, 4, 2), (64, 4, 3), (64, 4, 4), (64, 8, 3), (128, 4, 3), (128, 8, 3), (128, 8, 2), (32, 4, 4)]
    for rows, mean in [(256, 1400), (512, 780), (64, 1400), (1, 1400)]:
        pool, table, q, lens, nbytes = decode_case(rows, mean)
        positions = lens - 1
        ref = DecodeKV(pool, table, positions, use_triton=False)._gathered_attention(0, q[:, :, None])[:, :, 0]
        row = {"rows": rows, "mean_ctx": mean, "GB": nbytes / 1e9}
        if old is not None:
            ms = bench_ms(lambda: old.paged_decode_attention(q, pool.k[0], pool.v[0], table, lens))
            row["old"] = {"ms": ms, "GBps": nbytes / ms / 1e6}
        for block, warps, stages in variants:
            fn = partial(paged_decode_attention, q, pool.k[0], pool.v[0], table, lens, config=(block, warps, stages))
            try:
                err = (fn().float() - ref.float()).abs().max().item()
                ms = bench_ms(fn)
                row[f"b{block}w{warps}s{stages}"] = {"ms": ms, "GBps": nbytes / ms / 1e6, "err": err}
            except Exception as exc:  # a configuration that does not fit (shared memory) is reported
                row[f"b{block}w{warps}s{stages}"] = {"error": str(exc)[:200]}
        if rows >= 64:
            for splits in (2, 4):
                fn = partial(paged_decode_attention, q, pool.k[0], pool.v[0], table, lens, splits=splits)
                row[f"splits{splits}"] = {"ms": (ms := bench_ms(fn)), "GBps": nbytes / ms / 1e6,
                                          "err": (fn().float() - ref.float()).abs().max().item()}
        out.append(row)
        del pool
        torch.cuda.empty_cache()
    # fp32 exactness of the default configuration
    pool, table, q, lens, _ = decode_case(37, 700, torch.float32)
    ref = DecodeKV(pool, table, lens - 1, use_triton=False)._gathered_attention(0, q[:, :, None])[:, :, 0]
    RESULTS["decode_fp32_err"] = (paged_decode_attention(q, pool.k[0], pool.v[0], table, lens) - ref).abs().max().item()


def views(side: int, n: int) -> list[torch.Tensor]:
    return [torch.randint(0, 256, (3, side, side), dtype=torch.uint8) for _ in range(n)]


def timed(fn, reps=5) -> float:
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def old_encode(model, batch_views):
    """The previous path: CPU torch.stack, one pageable copy, eager encoder."""
    batch = torch.stack(batch_views).to("cuda", non_blocking=True)
    return model.encode_views(normalize(batch))


@torch.inference_mode()
def probe_vision(model, busy: bool) -> dict:
    eager, graphed = VisionEncoder(model, graphs=False), VisionEncoder(model, graphs=True)
    row = {}
    for side, n in [(1024, 8), (640, 16), (1024, 1), (640, 6), (640, 96)]:
        v = views(side, n)
        row[f"{side}x{n}"] = {
            "old_ms_per_view": timed(lambda: [old_encode(model, v[i:i + 16]) for i in range(0, n, 16)]) / n,
            "eager_ms_per_view": timed(lambda: eager.encode(v)) / n,
            "graph_ms_per_view": timed(lambda: graphed.encode(v)) / n}
    return row


@torch.inference_mode()
def probe_vision_pages(model) -> None:
    """ms per page of a group's vision alone (graphs, fused attention), as the engine runs it."""
    from dsocr_cli.bench import synthetic_page
    from dsocr_cli.preprocess import prepare_image
    encoder = VisionEncoder(model, graphs=True)
    out = RESULTS["vision_ms_per_page_alone"] = {}
    for mode, group in [("base", 56), ("gundam", 16)]:
        images = [prepare_image(synthetic_page(i), MODES[mode]) for i in range(group)]
        out[mode] = timed(lambda: encoder.embeddings(images)) / group


@torch.inference_mode()
def probe_vision_profile(model) -> None:
    from torch.profiler import ProfilerActivity, profile
    v = views(640, 16)
    batch = torch.stack(v).cuda()
    model.encode_views(normalize(batch))
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        model.encode_views(normalize(batch))
        torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages():
        dev = getattr(e, "device_time_total", 0) or 0
        if dev:
            rows.append({"op": e.key[:80], "device_ms": dev / 1000, "calls": e.count})
    rows.sort(key=lambda r: -r["device_ms"])
    RESULTS["vision_profile_640x16"] = rows[:30]
    RESULTS["vision_kernel_ms_total_640x16"] = sum(r["device_ms"] for r in rows if not r["op"].startswith("aten::"))


@torch.inference_mode()
def probe_sam_attention(model) -> None:
    """The widened-q/k SDPA of a global SAM block against SDPA without the bias (the floor a fused
    bias would reach), at the shapes a 1024 view and a 640 tile batch give."""
    block = next(b for b in model.model.sam_model.blocks if not b.window)
    out = {}
    for side, n in [(1024, 8), (640, 16)]:
        g = side // 16
        x = torch.randn(n, g, g, 768, device="cuda", dtype=torch.bfloat16)
        q = torch.randn(n, 12, g * g, 64, device="cuda", dtype=torch.bfloat16)
        out[f"{side}x{n}"] = {"widened_block_attn_ms": bench_ms(lambda: block.attn(x), rep=50),
                              "plain_sdpa_ms": bench_ms(lambda: F.scaled_dot_product_attention(q, q, q), rep=50)}
    RESULTS["sam_global_attention"] = out


def busy_workers(n_workers=8):
    pool = worker_pool(n_workers)
    jobs = [pool.apply_async(_views, (r,)) for r in _requests(1200, MODES["gundam"], load_prompt("document"))]
    return pool, jobs


def main() -> None:
    args = sys.argv[1:]
    only = set(args.pop(args.index("--only") + 1).split(",")) if "--only" in args else None
    args = [a for a in args if a != "--only"]
    out_dir = args[0]
    old = None
    if len(args) > 1:
        spec = importlib.util.spec_from_file_location("old_decode", args[1])
        old = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(old)

    def phase(name, fn, *args):
        if only is not None and name not in only:
            return
        start = time.perf_counter()
        try:
            fn(*args)
        except Exception as exc:  # one failing phase must not cost the others
            RESULTS[f"{name}_error"] = repr(exc)[:500]
        print(f"[{name}] {time.perf_counter() - start:.1f} s", flush=True)
        with open(f"{out_dir}/probe.json", "w") as f:
            json.dump(RESULTS, f, indent=1)

    torch.backends.cuda.enable_cudnn_sdp(False)  # as the engine runs
    RESULTS["device"] = torch.cuda.get_device_name()
    phase("copy", lambda: RESULTS.update(copy_GBps=copy_ceiling()))
    phase("decode", probe_decode, old)
    model, _ = random_weight_model("cuda")
    tokenizer = Tokenizer.bundled()
    phase("sam_attention", probe_sam_attention, model)
    phase("vision_pages", probe_vision_pages, model)
    phase("vision_profile", probe_vision_profile, model)
    phase("vision_idle", lambda: RESULTS.update(vision_idle=probe_vision(model, busy=False)))

    def busy():
        pool, jobs = busy_workers()
        try:
            RESULTS["vision_busy"] = probe_vision(model, busy=True)
            RESULTS["busy_jobs_done"] = sum(j.ready() for j in jobs)
        finally:
            pool.terminate()
    phase("vision_busy", busy)

    def runs():
        for mode, pages, tokens, batch, profile in [("gundam", 128, 100, None, False), ("base", 512, 300, 256, True)]:
            report = run_bench(model, tokenizer, MODES[mode], pages, tokens, batch, False, 8, profile=profile)
            RESULTS[f"run_{mode}"] = report
            print(mode, {k: report[k] for k in ("pages_per_s", "vision_ms_per_page", "decode_step_ms_at_peak",
                                                "steady_decode_tokens_per_s", "single_page_tokens_per_s")}, flush=True)
    phase("runs", runs)
    print(json.dumps({k: v for k, v in RESULTS.items() if k not in ("vision_profile_640x16", "run_base", "run_gundam")}))
    for r in RESULTS.get("vision_profile_640x16", [])[:20]:
        print(f"{r['device_ms']:8.3f} ms {r['calls']:5d}  {r['op']}")
    for r in RESULTS.get("run_base", {}).get("profile", []):
        print(f"{r['ms_per_step']:8.3f} ms/step {r['calls_per_step']:5.0f}  {r['kernel']}")


if __name__ == "__main__":
    main()
