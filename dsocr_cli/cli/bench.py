"""`dsocr bench`: pages/s of the engine on synthetic pages, full-size model, one table."""
from __future__ import annotations

import os
import time
from functools import partial
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from ..errors import DsocrError
from ..preprocess import resolve_mode
from .common import DeviceOpt, DtypeOpt, KvDtypeOpt, ModelOpt, ModeName, model_kind_of, print_json, warn


def bench(
    random_weights: Annotated[bool, typer.Option("--random-weights", help="Full-size model with seeded random weights (no download).")] = False,
    model_kind: Annotated[str, typer.Option("--model-kind", help="With --random-weights: v1 (DeepSeek-OCR) or v2 (DeepSeek-OCR-2).")] = "v1",
    mode: Annotated[Optional[ModeName], typer.Option("--mode", help="Default: base for DeepSeek-OCR, gundam (its one mode) for DeepSeek-OCR-2.")] = None,
    pages: Annotated[int, typer.Option("--pages", min=1, help="Synthetic A4 pages to convert.")] = 512,
    output_tokens: Annotated[int, typer.Option("--output-tokens", min=1, help="Tokens generated per page (EOS ignored).")] = 1000,
    lengths: Annotated[Optional[str], typer.Option(
        "--lengths", help="Draw each page's output length instead: 'real' (lengths of real DeepSeek-OCR pages, "
                          "loops until the guard included) or a FILE of token counts, one per line.")] = None,
    pdf: Annotated[Optional[list[str]], typer.Option(
        "--pdf", help="Run convert's whole pipeline (rendering, workers, parsing, writing to a scratch folder) "
                      "on these PDFs or folders instead of synthetic pages; lengths as --lengths (default real).")] = None,
    batch: Annotated[str, typer.Option("--batch", help="Rows decoded together: auto (from free GPU memory) or N.")] = "auto",
    baseline: Annotated[bool, typer.Option("--baseline", help="Also time the plain unbatched path on one page.")] = False,
    compile: Annotated[bool, typer.Option("--compile", help="Decode steps through torch.compile, as convert --compile runs them.")] = False,
    kv_dtype: KvDtypeOpt = "auto",
    profile: Annotated[bool, typer.Option("--profile", help="Also list the kernels a full-batch decode step spends its time in.")] = False,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
    gpus: Annotated[Optional[str], typer.Option(
        "--gpus", help="all or GPU indices (0,1): pages/s with the first GPU alone, then with all of them "
                       "(one engine each, as convert --gpus), and the speed-up.")] = None,
    server: Annotated[Optional[str], typer.Option(
        "--server", help="Measure a running `dsocr serve` at this URL instead ($DSOCR_API_KEY for its key): "
                         "the same pages, sent by --clients concurrent clients.")] = None,
    clients: Annotated[int, typer.Option("--clients", min=1, help="With --server: clients sending pages at once.")] = 256,
) -> None:
    """Throughput on synthetic pages (or real PDFs, --pdf): pages/s, tokens/s, first-token latency, vision and decode cost, memory."""
    if batch != "auto" and not batch.isdigit():
        raise DsocrError("--batch takes auto or a number")
    max_batch = None if batch == "auto" else int(batch)
    if server is not None:
        if gpus is not None or baseline or profile or compile or random_weights or kv_dtype != "auto":
            raise DsocrError("--server measures the server as it runs: --gpus, --baseline, --profile, --compile, "
                             "--kv-dtype and --random-weights are the server's to choose (dsocr serve)")
        from ..serve.bench import run_server_bench
        served = resolve_mode((mode or ModeName.base).value, "v1")  # the name is sent; the server reads it for its model
        report = run_server_bench(server, os.environ.get("DSOCR_API_KEY"), served, pages, output_tokens, clients)
        _show(report, f"dsocr bench --server: {report['mode']} mode, {pages} pages x {output_tokens} tokens, "
                      f"{clients} clients", as_json)
        return
    from .. import checkpoint
    from ..bench import random_weight_model, run_bench, run_pdf_bench, run_scaling  # torch: here, not for --help or --server
    from ..engine.multi import engine_devices
    from ..page_lengths import load_lengths, real_lengths
    from ..runner import open_model, preprocess_workers

    if model_kind not in ("v1", "v2"):
        raise DsocrError("--model-kind takes v1 or v2")
    kind = model_kind if random_weights else model_kind_of(model)
    chosen = resolve_mode((mode or (ModeName.gundam if kind == "v2" else ModeName.base)).value, kind)
    load = (partial(random_weight_model, dtype=dtype, kind=kind) if random_weights
            else partial(open_model, checkpoint.resolve(model), dtype=dtype))
    start = time.perf_counter()
    drawn = load_lengths(lengths) if lengths else None
    if gpus is not None:
        if device != "auto":
            raise DsocrError("--device does not go with --gpus: it picks the devices")
        if drawn or pdf:
            raise DsocrError("--gpus measures fixed-length synthetic pages: leave out --lengths and --pdf")
        report = run_scaling(load, engine_devices(gpus), chosen, pages, output_tokens, max_batch, compile, kv_dtype)
    else:
        net, tokenizer = load(device)
        load_s = time.perf_counter() - start
        if net.lm_head.weight.device.type != "cuda":
            warn("benchmarking on the CPU: expect seconds per token")
        workers = preprocess_workers(net.lm_head.weight.device)
        if pdf:
            report = run_pdf_bench(net, tokenizer, pdf, chosen, drawn or real_lengths(), max_batch, workers, compile,
                                   kv_dtype)
        else:
            report = run_bench(net, tokenizer, chosen, pages, output_tokens, max_batch, baseline, workers,
                               profile, compile, drawn, kv_dtype)
        report["load_s"] = load_s
        report["dtype"] = str(net.lm_head.weight.dtype).replace("torch.", "")
    report["kv_dtype"] = kv_dtype
    report["model"] = f"random weights (full size {kind})" if random_weights else checkpoint.model_name(model)
    what = (f"{report['pages']} PDF pages through convert" if pdf
            else f"{pages} pages x {report['output_tokens_per_page']:.0f} tokens")
    _show(report, f"dsocr bench: {report['mode']} mode, {what}", as_json)


def _show(report: dict, title: str, as_json: bool) -> None:
    if as_json:
        print_json(report)
        return
    table = Table(title=title)
    table.add_column("measure")
    table.add_column("value", justify="right")
    kernels = report.pop("profile", None)
    for key, value in report.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v:.3g}" for k, v in value.items())
        elif isinstance(value, float):
            value = f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
        table.add_row(key.replace("_", " "), str(value))
    Console().print(table)
    if kernels:
        top = Table(title="full-batch decode step: device time by kernel")
        for column in ("kernel", "ms/step", "calls/step"):
            top.add_column(column)
        for row in kernels:
            top.add_row(row["kernel"], f"{row['ms_per_step']:.3f}", f"{row['calls_per_step']:.0f}")
        Console().print(top)
