"""`dsocr bench`: throughput of the engine (and of the plain path) on synthetic document pages.

Pages are synthetic.py's A4 pages, drawn by the engine's workers. Every page generates exactly
`output_tokens` tokens (EOS ignored), or a length drawn from a distribution of real page outputs
(`lengths`), so runs are comparable whatever the weights.
"""
from __future__ import annotations

import statistics
import time
from functools import partial

import torch

from . import prompts
from .checkpoint import DEFAULT_MODEL, V2_MODEL, ModelConfig, official_config
from .engine.engine import Engine, EngineStats
from .errors import DsocrError
from .engine.multi import MultiRunner
from .engine.spec import EngineSpec
from .model.ocr import DeepseekOCR
from .preprocess import Mode
from .page_lengths import LengthDistribution
from .prompts import load_prompt
from .random_weights import random_model
from .engine.plain import PlainRunner
from .requests import PENDING, OcrRequest, settings_for
from .runner import pick_device, pick_dtype, preprocess_workers, settle
from .synthetic import synthetic_page
from .tokenizer import Tokenizer

def _requests(n: int, mode: Mode, prompt: str, offset: int = 0):
    """Requests whose pages are drawn by the engine's workers (as PDF pages would be rendered)."""
    return (OcrRequest(partial(synthetic_page, offset + i), prompt, mode, key=offset + i) for i in range(n))


def warm_engine(model: DeepseekOCR, tokenizer: Tokenizer, mode: Mode, longest: int, batch: int | None,
                workers: int, compile: bool, single_tokens: int, kv_dtype: str = "auto") -> tuple[Engine, float, float, float]:
    """An engine whose pages run to their forced lengths, warmed up on two pages; its set-up seconds,
    and the seconds one page of `single_tokens` takes alone, in all and to its first token (the
    page drawn and prepared by a worker, its vision and its prefill)."""
    settings = settings_for(tokenizer, max_new_tokens=max(longest, single_tokens), ignore_eos=True)
    prompt = load_prompt(prompts.DOCUMENT)
    start = time.perf_counter()
    engine = Engine(model, tokenizer, settings, max_batch=batch, workers=workers, compile=compile, kv_dtype=kv_dtype)
    setup = time.perf_counter() - start
    alone = {10_000 + i: single_tokens for i in range(3)}
    # kernels and decode graphs; the second single page captures its vision pass (a shape met again)
    for i in range(2):
        list(engine.run(_requests(1, mode, prompt, offset=10_000 + i), output_lengths=alone))
    start = time.perf_counter()
    list(engine.run(_requests(1, mode, prompt, offset=10_002), output_lengths=alone))  # one page alone
    return engine, setup, time.perf_counter() - start, engine.stats.first_token_at[-1]


def run_bench(model: DeepseekOCR, tokenizer: Tokenizer, mode: Mode, pages: int, output_tokens: int,
              batch: int | None, baseline: bool, workers: int, profile: bool = False, compile: bool = False,
              lengths: LengthDistribution | None = None, kv_dtype: str = "auto") -> dict:
    device = model.lm_head.weight.device
    prompt = load_prompt(prompts.DOCUMENT)
    forced = {i: lengths.draw(i)[0] if lengths else output_tokens for i in range(pages)}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    engine, setup, single, single_first = warm_engine(model, tokenizer, mode, max(forced.values()), batch, workers,
                                                      compile, output_tokens, kv_dtype)
    engine.stats = EngineStats()
    start = time.perf_counter()
    results = list(engine.run(_requests(pages, mode, prompt), output_lengths=forced))
    settle(device)
    wall = time.perf_counter() - start
    tokens = sum(len(r.token_ids) for r in results)
    stats = engine.stats
    peak_batch = max((rows for rows, _ in stats.steps), default=0)
    steady = [(r, s) for r, s in stats.steps if r >= 0.9 * peak_batch] or [(0, 1.0)]
    report = {
        "mode": mode.name, "pages": pages, "output_tokens_per_page": tokens / pages,
        "lengths": "fixed" if lengths is None else f"drawn (mean {tokens / pages:.0f}, longest {max(forced.values())})",
        "pages_per_s": pages / wall, "output_tokens_per_s": tokens / wall, "wall_s": wall,
        "time_to_first_token_s": first_token_times(stats),
        "vision_ms_per_page": 1000 * stats.vision_seconds / pages,
        "prefill_s_total": stats.prefill_seconds,
        "batch": engine.max_batch, "peak_batch": peak_batch,
        "decode_step_ms_at_peak": 1000 * statistics.median(s for _, s in steady),
        "steady_decode_tokens_per_s": sum(r for r, _ in steady) / sum(s for _, s in steady),
        "single_page_tokens_per_s": output_tokens / single,
        "single_page_first_token_s": single_first,
        "single_page_decode_tokens_per_s": (output_tokens - 1) / (single - single_first),
        "vision_images": stats.vision_images, "decode_steps": len(stats.steps),
        "kv_pages": engine.pool.num_pages, "preemptions": engine.preemptions,
        "engine_setup_s": setup, "compiled": engine.compiled,
        "errors": sum(1 for r in results if r.error),
        "peak_gpu_memory_gib": torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
    }
    if profile:
        report["profile"] = profile_decode(engine, mode, prompt)
    engine.close()
    del engine
    if baseline:
        plain = PlainRunner(model, tokenizer, settings_for(tokenizer, max_new_tokens=output_tokens, ignore_eos=True))
        start = time.perf_counter()
        list(plain.run(_requests(1, mode, prompt, offset=20_000)))
        settle(device)
        plain_s = time.perf_counter() - start
        report["baseline_pages_per_s"] = 1 / plain_s
        report["baseline_tokens_per_s"] = output_tokens / plain_s
        report["speedup_vs_baseline"] = report["pages_per_s"] * plain_s
    return report


class _ForcedLengths:
    """The engine as convert's runner, each page stopped at a length drawn for it and reported with the
    drawn finish (eos, or repetition for a looping page, which convert then retries: a retry draws anew)."""
    live_requests = True

    def __init__(self, engine: Engine, lengths: LengthDistribution):
        self.engine, self.lengths = engine, lengths
        self.tokenizer, self.engines, self.devices, self.pages_done = engine.tokenizer, 1, [], []
        self.attempts: dict = {}  # key -> 1 for a retry, as its request said
        self.passes = self.tokens = self.retried = 0

    @property
    def settings(self):
        return self.engine.settings

    def get(self, key, default=None) -> int:  # the engine's output_lengths lookup
        return self.lengths.draw(key, self.attempts[key])[0]

    def run(self, requests, settings=None, on_token=None):
        def noted(requests):
            for request in requests:
                if request is not PENDING:
                    self.attempts[request.key] = int(request.retry)
                yield request

        self.passes += 1
        for result in self.engine.run(noted(requests), settings, on_token, output_lengths=self):
            attempt = self.attempts[result.key]
            if result.error is None:
                result.finish_reason = self.lengths.draw(result.key, attempt)[1]
            self.tokens += len(result.token_ids)
            self.retried += attempt
            yield result


def run_pdf_bench(model: DeepseekOCR, tokenizer: Tokenizer, paths: list[str], mode: Mode,
                  lengths: LengthDistribution, batch: int | None, workers: int, compile: bool = False,
                  kv_dtype: str = "auto") -> dict:
    """`dsocr convert`'s pipeline (PDF rendering in the workers, the engine, parsing, Markdown and
    layout writing, retries of looping pages) on real documents, pages stopped at drawn lengths."""
    import tempfile

    from .convert import ConvertOptions, convert, plan_jobs
    from .documents import expand_inputs

    device = model.lm_head.weight.device
    options = ConvertOptions(mode=mode, prompt=load_prompt(prompts.DOCUMENT), layout_json=True)
    with tempfile.TemporaryDirectory() as out:
        jobs, failed = plan_jobs(expand_inputs(paths, None), out + "/", options)
        if not jobs:
            raise DsocrError(f"--pdf: nothing to convert ({failed[0].error if failed else 'no documents found'})")
        engine, setup, _, _ = warm_engine(model, tokenizer, mode, lengths.longest, batch, workers, compile, 16, kv_dtype)
        runner = _ForcedLengths(engine, lengths)
        engine.stats = EngineStats()
        start = time.perf_counter()
        reports = list(convert(jobs, runner, options))
        settle(device)
        wall = time.perf_counter() - start
    engine.close()
    pages = sum(len(job.numbers) for job in jobs)
    stats = engine.stats
    return {"mode": mode.name, "documents": len(jobs), "unreadable_documents": len(failed), "pages": pages,
            "pages_per_s": pages / wall, "wall_s": wall,
            "output_tokens_per_page": runner.tokens / max(1, pages), "output_tokens_per_s": runner.tokens / wall,
            "time_to_first_token_s": first_token_times(stats), "pages_retried": runner.retried,
            "incomplete_pages": sum(len(r.incomplete) for r in reports),
            "failed_pages": sum(len(r.failed) for r in reports),
            "vision_ms_per_page": 1000 * stats.vision_seconds / max(1, pages),
            "batch": engine.max_batch, "engine_setup_s": setup, "passes": runner.passes,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__}


def first_token_times(stats: EngineStats) -> dict:
    """Seconds from the start of the run to each page's first token: the first page's, the median and the max."""
    times = stats.first_token_at or [0.0]
    return {"first": min(times), "median": statistics.median(times), "max": max(times)}


def random_weight_model(device: str, dtype: str = "auto", kind: str = "v1") -> tuple[DeepseekOCR, Tokenizer]:
    """The full-size model (v1 or v2) with seeded random weights (the same on every device), and the tokenizer."""
    dev = pick_device(device)
    config = ModelConfig.from_dict(official_config(V2_MODEL if kind == "v2" else DEFAULT_MODEL))
    return random_model(config, 0, dev, pick_dtype(dtype, dev)), Tokenizer.bundled()


def run_scaling(load, devices: list[str], mode: Mode, pages: int, output_tokens: int, batch: int | None,
                compile: bool = False, kv_dtype: str = "auto") -> dict:
    """pages/s of one engine, then of one engine per device on the shared queue (--gpus), and the ratio.

    Both runs go through the same worker processes and queue, each engine warmed up first, so the
    ratio is what adding GPUs buys."""
    prompt = load_prompt(prompts.DOCUMENT)
    rates, errors = {}, 0
    for group in ([devices[0]], devices) if len(devices) > 1 else ([devices[0]],):
        spec = EngineSpec(load, dict(max_new_tokens=output_tokens, ignore_eos=True), batch,
                          preprocess_workers(group[0], len(group)), partial(_requests, 1, mode, prompt, 10_000),
                          compile, kv_dtype)
        runner = MultiRunner(group, spec)
        try:
            start = time.perf_counter()
            results = list(runner.run(_requests(pages, mode, prompt)))
            rates[len(group)] = pages / (time.perf_counter() - start)
            errors += sum(1 for r in results if r.error)
        finally:
            runner.close()
    return {"mode": mode.name, "pages": pages, "output_tokens_per_page": output_tokens, "devices": devices,
            "pages_per_s_1_gpu": rates[1], "pages_per_s_all_gpus": rates[len(devices)],
            "speedup": rates[len(devices)] / rates[1], "errors": errors, "torch": torch.__version__,
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}


def profile_decode(engine: Engine, mode: Mode, prompt: str, steps: int = 20) -> list[dict]:
    """Device time per decode step by kernel, over `steps` steps taken once the batch is full: the
    total over all kernels, then the 15 costliest."""
    from torch.profiler import ProfilerActivity, profile

    full = engine.max_batch
    window = (full * 100, full * (100 + steps))  # counted in generated tokens: one per row and step
    prof = profile(activities=[ProfilerActivity.CUDA])
    count = 0

    def on_token(key, token):
        nonlocal count
        count += 1
        if count == window[0]:
            prof.start()
        elif count == window[1]:
            prof.stop()

    list(engine.run(_requests(full, mode, prompt, offset=30_000), on_token=on_token))
    rows = []
    for event in prof.key_averages():
        device_us = getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0)
        if device_us:
            rows.append({"kernel": event.key[:90], "ms_per_step": device_us / 1000 / steps, "calls_per_step": event.count / steps})
    rows.sort(key=lambda r: -r["ms_per_step"])
    every = {"kernel": "(all kernels)", "ms_per_step": sum(r["ms_per_step"] for r in rows),
             "calls_per_step": sum(r["calls_per_step"] for r in rows)}
    return [every] + rows[:15]
